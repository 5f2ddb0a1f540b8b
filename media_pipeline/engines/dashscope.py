"""DashScope's duplex WebSocket task protocol, shared by Paraformer (ASR) and CosyVoice (TTS).

One connection runs one task. The client sends JSON text frames ``run-task`` (model and
parameters), then data (binary audio frames for ASR, ``continue-task`` text for TTS), then
``finish-task``; the server answers ``task-started``, ``result-generated`` events (and binary
audio frames for TTS), and finally ``task-finished`` or ``task-failed`` (``header.error_code``,
``header.error_message``). Auth is ``Authorization: bearer <key>`` on the handshake.

Blocking (``websockets.sync``): engines run in the engine executor's threads, and a sync TTS
generator can stop mid-stream (barge-in) and close its socket in ``finally``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from lingecho.resilience.errors import mark, retryable_status
from lingecho.resilience.redaction import redact, register_secret

# websockets logs every handshake header (the key included) at DEBUG on the logger it is given.
# This logger is pinned at INFO so a DEBUG root logger never turns that on.
_wire_log = logging.getLogger("media_pipeline.engines.dashscope.wire")
_wire_log.setLevel(logging.INFO)

# Provider error codes worth a retry: throttling and the service's own trouble.
_RETRYABLE_CODES = ("throttl", "ratelimit", "rate_limit", "internal", "timeout", "serviceunavailable", "busy")


def settings_value(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


class DashScopeTask:
    """One task on one connection; ``error_cls`` is ASRError or TTSError so callers see their own kind."""

    def __init__(self, *, url: str, api_key: str, timeout: float, error_cls: type[Exception]) -> None:
        self.url = url
        self.timeout = timeout
        self.error_cls = error_cls
        self.task_id = uuid.uuid4().hex
        self.deadline = time.monotonic() + timeout
        self._api_key = api_key
        register_secret(api_key)
        self.ws: ClientConnection | None = None

    # --- connection -------------------------------------------------------------------------

    def open(self) -> None:
        headers = {"Authorization": f"bearer {self._api_key}", "X-DashScope-DataInspection": "enable"}
        try:
            # connect() is a context manager in websockets >= 16; entering it performs the handshake.
            self.ws = connect(
                self.url, additional_headers=headers, open_timeout=self.timeout, close_timeout=0.2,
                max_size=None, logger=_wire_log, compression=None,
            ).__enter__()
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = redact(exc.response.body.decode("utf-8", "replace")[:200]) if exc.response.body else ""
            raise mark(self.error_cls(f"DashScope refused the connection: HTTP {status} {body}".strip()),
                       retryable=retryable_status(status), status=status) from None
        except TimeoutError:
            raise mark(self.error_cls(f"DashScope did not answer within {self.timeout:g}s"),
                       retryable=True, timeout=True) from None
        except (OSError, InvalidHandshake) as exc:
            raise mark(self.error_cls(f"cannot reach DashScope: {type(exc).__name__}"), retryable=True) from None

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001 - closing a dead socket is not news
                pass
            self.ws = None

    # --- commands ---------------------------------------------------------------------------

    def _header(self, action: str) -> dict[str, str]:
        return {"action": action, "task_id": self.task_id, "streaming": "duplex"}

    def send_json(self, message: dict[str, Any]) -> None:
        self._send(json.dumps(message, ensure_ascii=False))

    def _send(self, data: str | bytes) -> None:
        assert self.ws is not None
        try:
            self.ws.send(data)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    def run_task(self, payload: dict[str, Any]) -> None:
        self.send_json({"header": self._header("run-task"), "payload": payload})

    def continue_task(self, input_: dict[str, Any]) -> None:
        self.send_json({"header": self._header("continue-task"), "payload": {"input": input_}})

    def finish_task(self) -> None:
        self.send_json({"header": self._header("finish-task"), "payload": {"input": {}}})

    def send_audio(self, data: bytes) -> None:
        self._send(data)

    # --- events -----------------------------------------------------------------------------

    def receive(self) -> bytes | dict[str, Any]:
        """Next frame before the task's deadline: bytes (audio) or a decoded event."""
        assert self.ws is not None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise mark(self.error_cls(f"DashScope task took longer than {self.timeout:g}s"),
                       retryable=True, timeout=True)
        try:
            frame = self.ws.recv(timeout=remaining)
        except TimeoutError:
            raise mark(self.error_cls(f"DashScope task took longer than {self.timeout:g}s"),
                       retryable=True, timeout=True) from None
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        if isinstance(frame, bytes):
            return frame
        try:
            event = json.loads(frame)
            event["header"]["event"]
        except (ValueError, KeyError, TypeError):
            raise mark(self.error_cls("malformed DashScope event"), retryable=False) from None
        if event["header"]["event"] == "task-failed":
            raise self._failed(event["header"])
        return event

    def wait_started(self) -> None:
        while True:
            event = self.receive()
            if isinstance(event, dict) and event["header"]["event"] == "task-started":
                return

    def _failed(self, header: dict[str, Any]) -> Exception:
        code = str(header.get("error_code") or "UnknownError")
        message = redact(str(header.get("error_message") or ""))
        retryable = any(k in code.lower().replace("-", "") for k in _RETRYABLE_CODES)
        return mark(self.error_cls(f"DashScope task failed: {code}: {message}"), retryable=retryable)

    def _closed(self, exc: ConnectionClosed) -> Exception:
        return mark(self.error_cls(f"DashScope closed the connection mid-task ({exc.rcvd.code if exc.rcvd else 1006})"),
                    retryable=True)

    def __enter__(self) -> DashScopeTask:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
