"""Socket.IO v5 over Engine.IO v4 framing for the WebSocket transport, without a server library.

Channels owns the connection (routing, Origin check, cookie/JWT auth, the channel layer); this
module only turns WebSocket frames into Socket.IO packets and back. Encoding and decoding are
delegated to the packet codecs of python-engineio and python-socketio, the maintained Python
implementation of the protocol, so the wire strings (``0{...}`` open, ``40`` connect,
``42["event",{...}]``, ``451-[...]`` plus binary frames) are exactly what stock clients expect.

Only the default namespace ``/`` is served. State kept here is per connection and tiny: the
partially received binary event (its placeholders wait for their attachment frames).

Decoding is hostile-input safe: :meth:`SocketIOWire.feed` raises nothing but :class:`WireError`,
and every frame is bounded before a codec sees it (size, JSON nesting and item count via
``signaling.protocol.json_shape_problem``, attachments, namespace, ack id), so no frame can hold
the event loop for more than a millisecond or two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engineio import packet as eio
from socketio import packet as sio

from signaling.protocol import json_shape_problem

ENGINEIO_VERSION = "4"
MAX_ATTACHMENTS = 4  # an audio-chunk carries one; more is a confused or hostile client
MAX_FRAME_BYTES = 1024 * 1024  # daphne's own frame limit; the consumer passes WS_MAX_MESSAGE_BYTES
MAX_CONTROL_CHARS = 64  # a ping, pong or close frame carries at most a short probe string
MAX_NAMESPACE_CHARS = 128
MAX_ACK_ID = 2**53 - 1  # what a JavaScript client can count to


class WireError(ValueError):
    """A frame that is not valid Engine.IO/Socket.IO; the connection may go on (ERR_INVALID_MESSAGE)."""


# --- what a received frame means ------------------------------------------------------------------

@dataclass(frozen=True)
class Pong:
    """The client answered our PING."""


@dataclass(frozen=True)
class Ping:
    """A client-initiated ping (not used by v4 clients over WebSocket, answered anyway)."""

    data: Any = None


@dataclass(frozen=True)
class Close:
    """Engine.IO CLOSE: the client is going away."""


@dataclass(frozen=True)
class Connect:
    namespace: str
    auth: dict[str, Any]


@dataclass(frozen=True)
class Disconnect:
    namespace: str


@dataclass(frozen=True)
class Event:
    name: str
    args: list[Any]
    ack_id: int | None
    namespace: str = "/"


@dataclass(frozen=True)
class Ack:
    """The client acknowledged an event we emitted with an id (we never ask; ignored)."""

    ack_id: int | None
    args: list[Any]


Received = Pong | Ping | Close | Connect | Disconnect | Event | Ack

Frame = str | bytes


@dataclass
class SocketIOWire:
    """Decoder state for one connection plus the encoders for everything the server sends."""

    max_frame_bytes: int = MAX_FRAME_BYTES
    _pending: sio.Packet | None = field(default=None, repr=False)

    # --- decoding ------------------------------------------------------------------------------
    def feed(self, frame: Frame) -> Received | None:
        """Decode one WebSocket frame; ``None`` while a binary event still waits for attachments.

        Raises :class:`WireError` and nothing else, whatever the frame: the codecs of
        python-engineio/python-socketio raise ValueError, IndexError, TypeError, RecursionError…
        on malformed input, and any of those escaping would kill the consumer (close 1011)."""
        if isinstance(frame, (bytes, bytearray)):
            return self._attachment(bytes(frame))
        if not isinstance(frame, str):
            raise WireError("a frame is text or bytes")
        if self._pending is not None:
            self._pending = None
            raise WireError("expected a binary attachment frame, got text")
        if len(frame) > self.max_frame_bytes:
            raise WireError(f"frame over {self.max_frame_bytes} bytes")
        if frame[:1] == str(eio.MESSAGE):
            # Parsed here rather than by eio.Packet, which would first try the whole tail as JSON.
            return self._message(frame[1:])
        return self._control(frame)

    @staticmethod
    def _control(frame: str) -> Received:
        if len(frame) > MAX_CONTROL_CHARS:
            raise WireError(f"an Engine.IO control packet is at most {MAX_CONTROL_CHARS} characters")
        try:
            packet = eio.Packet(encoded_packet=frame)
        except Exception as exc:  # noqa: BLE001 - whatever the codec raises, the frame is malformed
            raise WireError(f"not an Engine.IO packet: {str(exc)[:200]}") from None
        kind = packet.packet_type
        if packet.binary:
            raise WireError("base64 binary packets belong to the polling transport")
        if kind == eio.PONG:
            return Pong()
        if kind == eio.PING:
            return Ping(packet.data)
        if kind == eio.CLOSE:
            return Close()
        raise WireError(f"unexpected Engine.IO packet type {kind}")

    def _message(self, text: str) -> Received | None:
        if not text:
            raise WireError("empty Socket.IO packet")
        problem = json_shape_problem(text)
        if problem is not None:
            raise WireError(f"the packet's JSON has {problem}")
        try:
            packet = sio.Packet(encoded_packet=text)
        except Exception as exc:  # noqa: BLE001 - ValueError, TypeError, RecursionError...: all malformed
            raise WireError(f"not a Socket.IO packet: {str(exc)[:200]}") from None
        if packet.packet_type not in range(7):
            raise WireError(f"unknown Socket.IO packet type {str(packet.packet_type)[:20]!r}")
        if packet.namespace is not None and len(packet.namespace) > MAX_NAMESPACE_CHARS:
            raise WireError(f"namespace over {MAX_NAMESPACE_CHARS} characters")
        if packet.id is not None and not 0 <= packet.id <= MAX_ACK_ID:
            raise WireError(f"ack id over {MAX_ACK_ID}")
        if packet.attachment_count:
            if packet.attachment_count > MAX_ATTACHMENTS:
                raise WireError(f"too many binary attachments ({packet.attachment_count})")
            if packet.packet_type not in (sio.BINARY_EVENT, sio.BINARY_ACK):
                raise WireError("only binary events and acks carry attachments")
            self._pending = packet
            return None
        return self._complete(packet)

    def _attachment(self, data: bytes) -> Received | None:
        packet, self._pending = self._pending, None
        if packet is None:
            raise WireError("binary frame without a binary event announcing it")
        if len(data) > self.max_frame_bytes:
            raise WireError(f"binary attachment over {self.max_frame_bytes} bytes")
        try:
            done = packet.add_attachment(data)
        except Exception as exc:  # noqa: BLE001 - a placeholder that points nowhere, and the like
            raise WireError(f"bad binary attachment: {str(exc)[:200]}") from None
        if not done:
            self._pending = packet
            return None
        return self._complete(packet)

    @staticmethod
    def _complete(packet: sio.Packet) -> Received:
        namespace = packet.namespace or "/"
        kind = packet.packet_type
        if kind == sio.CONNECT:
            auth = packet.data if isinstance(packet.data, dict) else {}
            return Connect(namespace, auth)
        if kind == sio.DISCONNECT:
            return Disconnect(namespace)
        if kind in (sio.EVENT, sio.BINARY_EVENT):
            data = packet.data
            if not isinstance(data, list) or not data or not isinstance(data[0], str):
                raise WireError("an event must be a JSON array starting with the event name")
            return Event(data[0], list(data[1:]), packet.id, namespace)
        if kind in (sio.ACK, sio.BINARY_ACK):
            return Ack(packet.id, packet.data if isinstance(packet.data, list) else [])
        raise WireError(f"a client may not send Socket.IO packet type {kind}")

    # --- encoding ------------------------------------------------------------------------------
    @staticmethod
    def open(*, sid: str, ping_interval_ms: int, ping_timeout_ms: int, max_payload: int) -> str:
        """The Engine.IO handshake, first frame after accept. No upgrades: we already are WebSocket."""
        return eio.Packet(
            eio.OPEN,
            {
                "sid": sid,
                "upgrades": [],
                "pingInterval": ping_interval_ms,
                "pingTimeout": ping_timeout_ms,
                "maxPayload": max_payload,
            },
        ).encode()

    @staticmethod
    def ping() -> str:
        return eio.Packet(eio.PING).encode()

    @staticmethod
    def pong(data: Any = None) -> str:
        return eio.Packet(eio.PONG, data).encode()

    @staticmethod
    def close() -> str:
        return eio.Packet(eio.CLOSE).encode()

    @staticmethod
    def _wrap(packet: sio.Packet) -> list[Frame]:
        encoded = packet.encode()
        if isinstance(encoded, list):  # binary: text packet with placeholders, then raw frames
            head, *attachments = encoded
            return [eio.Packet(eio.MESSAGE, head).encode(), *[bytes(a) for a in attachments]]
        return [eio.Packet(eio.MESSAGE, encoded).encode()]

    def connect_ack(self, *, sid: str, namespace: str = "/") -> list[Frame]:
        return self._wrap(sio.Packet(sio.CONNECT, {"sid": sid}, namespace=namespace))

    def connect_error(self, message: str, *, namespace: str = "/", data: Any = None) -> list[Frame]:
        payload: dict[str, Any] = {"message": message}
        if data is not None:
            payload["data"] = data
        return self._wrap(sio.Packet(sio.CONNECT_ERROR, payload, namespace=namespace))

    def event(self, name: str, *args: Any, namespace: str = "/") -> list[Frame]:
        return self._wrap(sio.Packet(sio.EVENT, [name, *args], namespace=namespace))

    def ack(self, ack_id: int, *args: Any, namespace: str = "/") -> list[Frame]:
        return self._wrap(sio.Packet(sio.ACK, list(args), namespace=namespace, id=ack_id))

    def disconnect(self, *, namespace: str = "/") -> list[Frame]:
        return self._wrap(sio.Packet(sio.DISCONNECT, namespace=namespace))


__all__ = [
    "ENGINEIO_VERSION",
    "MAX_ACK_ID",
    "MAX_ATTACHMENTS",
    "Ack",
    "Close",
    "Connect",
    "Disconnect",
    "Event",
    "Ping",
    "Pong",
    "Received",
    "SocketIOWire",
    "WireError",
]
