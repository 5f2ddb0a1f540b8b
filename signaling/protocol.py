"""The LingEcho protocol at ``/ws/voice/`` as data: envelope, message schemas, error and close codes,
the server state machine and the limits.

Everything a consumer, a test or ``docs/protocol.md`` needs to agree on lives here, so the
consumer only parses, looks things up and dispatches. The schemas are a deliberately small
field-spec language (no jsonschema dependency): a message is strict — unknown envelope or data
keys are refused with details — because a third-party client should learn about a typo at once,
not when a field is silently ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Re-exported (``X as X``): the consumers and tests import the codes and the clock from here.
from media_pipeline.contract import ErrorCode as ErrorCode
from media_pipeline.contract import now_ms as now_ms

SERVER_VERSION = "1.0.0"
SUPPORTED_CODECS = ("pcma", "opus")

# --- limits (besides the WS_* settings) ---------------------------------------------------------
MAX_TEXT_CHARS = 4000  # one typed turn
MAX_TTS_CHARS = 2000
MAX_SDP_CHARS = 32_000
MAX_CANDIDATES = 64
MAX_CANDIDATE_CHARS = 1024
MAX_ID_CHARS = 64
MAX_SESSION_ID_CHARS = 128  # the envelope's session_id (ours are ~30): longer is not ours, said cheaply
MAX_SDP_MLINES = 8  # a call is one audio m-line (a browser may add data/video); dozens only cost the worker
MAX_CLIENT_INT = 2**53 - 1  # timestamps and times: what a JavaScript number holds exactly
MAX_JSON_DEPTH = 32  # our deepest message is 4 levels; json.loads recurses in C and blows up near 1000
MAX_JSON_ITEMS = 2048  # strings, separators or containers in one frame: bounds what json.loads allocates
OFFER_TIMEOUT_SECONDS = 15.0  # offer sent to a worker and no answer: ERR_WEBRTC_FAILED, back to Initialized


# --- error codes (shared with the media worker: media_pipeline.contract) -------------------------
ERROR_CODES = tuple(code.value for code in ErrorCode)


# --- close codes ------------------------------------------------------------------------------
class CloseCode:
    """WebSocket close codes. 4401 is sent before accept, so on the wire it is an HTTP 403.

    Servers may only send 1000 or 3000-4999 (autobahn enforces it), so the standard 1008/1009
    appear as 4008/4009: the last three digits keep the RFC 6455 meaning.
    """

    NORMAL = 1000  # disconnect from either side, or the conversation ended (max_turns / time_limit / buyer_ended)
    GOING_AWAY = 4001  # the server is shutting down (after disconnect server_shutdown), or refused a call while it does
    TRY_AGAIN = 4503  # refused for now (the database is unavailable): retry after details.retry_after
    POLICY = 4008  # repeated rate-limit violations
    TOO_BIG = 4009  # a frame over WS_MAX_MESSAGE_BYTES
    BAD_REQUEST = 4400  # no ?scenario= / ?session=, or an unknown scenario
    UNAUTHENTICATED = 4401  # no valid cookie or token (refused before accept)
    SESSION_NOT_FOUND = 4404  # ?session= unknown or someone else's
    IDLE_TIMEOUT = 4408  # no client message for WS_IDLE_TIMEOUT_SECONDS
    NOT_RESUMABLE = 4409  # ?session= has ended or its resume window has passed
    SUPERSEDED = 4410  # the same session was resumed on a newer connection
    LIVE_SESSION_LIMIT = 4429  # too many live sessions for this user


# Reasons carried by ``disconnect``. The seed lists the first three; the rest are ours.
DISCONNECT_REASONS = (
    "user_requested", "timeout", "error", "max_turns", "time_limit", "buyer_ended", "server_shutdown",
)
CLIENT_DISCONNECT_REASONS = ("user_requested", "timeout", "error")


class ProtocolError(Exception):
    """A coded failure the consumer turns into an ``error`` message (and, with close_code, a close)."""

    def __init__(
        self, code: str, message: str, details: dict[str, Any] | None = None, *, close_code: int | None = None
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}
        self.close_code = close_code


def invalid(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_MESSAGE, message, details)


# --- JSON shape guard -------------------------------------------------------------------------
_BRACKETS = re.compile(r"[\[\]{}]")


def json_shape_problem(text: str, *, max_depth: int = MAX_JSON_DEPTH, max_items: int = MAX_JSON_ITEMS) -> str | None:
    """Why ``text`` nests too deep or holds too many values to be parsed, or None.

    ``json.loads`` recurses (in C) once per nested array or object: 100,000 ``[`` raise
    RecursionError, and a structure just under the interpreter's limit parses into an object that
    every later recursive walk trips over. Half a million ``0,`` (or 240 integers of 4,299 digits)
    take 20-30 ms to parse, all of it on the event loop. All are refused before parsing, with
    string methods only (no Python loop over characters, so ~2 ms per MB): string contents are cut
    out (escaped backslashes and quotes first, so the quotes left are the real delimiters) and what
    remains is counted. Brackets are walked one by one only when there are more than ``max_depth``
    of them, and then at most ``2 * max_items``. Invalid JSON may pass (the parser refuses it);
    valid compact JSON within the bounds always does.
    """
    if "\\" in text:
        text = text.replace("\\\\", "").replace('\\"', "")
    quotes = text.count('"')
    if quotes > 2 * max_items:
        return f"more than {max_items} strings"
    bare = "".join(text.split('"')[0::2]) if quotes else text
    if len(bare) > 32 * max_items:  # numbers, literals, whitespace: a 4,000-digit int takes 0.1 ms to parse
        return f"more than {32 * max_items} characters outside strings"
    opens = bare.count("[") + bare.count("{")
    closes = bare.count("]") + bare.count("}")
    if max(opens, closes, bare.count(","), bare.count(":")) > max_items:
        return f"more than {max_items} values"
    if opens <= max_depth:
        return None
    depth = 0
    for bracket in _BRACKETS.finditer(bare):
        depth += 1 if bracket.group() in "[{" else -1
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
    return None


# --- field specs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """One key of a message's ``data``. kind: str, int, number, bool, str_list, object, object_list."""

    kind: str
    required: bool = True
    nullable: bool = False
    choices: tuple[Any, ...] | None = None
    min: float | None = None  # string length, list length or numeric bound
    max: float | None = None
    non_blank: bool = False  # a string must contain something other than whitespace
    doc: str = ""


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str_list":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "object_list":
        return isinstance(value, list) and all(isinstance(v, dict) for v in value)
    raise ValueError(kind)


def _check_field(name: str, spec: Field, value: Any) -> str | None:
    """The problem with one value, or None."""
    if value is None:
        return None if spec.nullable else "must not be null"
    if not _type_ok(spec.kind, value):
        return f"must be {spec.kind}"
    if spec.choices is not None and value not in spec.choices:
        return f"must be one of {list(spec.choices)}"
    size: float | None = None
    if spec.kind in ("str", "str_list", "object_list"):
        size = len(value)
    elif spec.kind in ("int", "number"):
        size = value
    if size is not None:
        if spec.min is not None and size < spec.min:
            return f"must be at least {spec.min:g}" + (" long" if spec.kind in ("str", "str_list") else "")
        if spec.max is not None and size > spec.max:
            return f"must be at most {spec.max:g}" + (" long" if spec.kind in ("str", "str_list") else "")
    if spec.kind == "str_list" and any(len(v) > MAX_CANDIDATE_CHARS for v in value):
        return f"items must be at most {MAX_CANDIDATE_CHARS} long"
    if spec.non_blank and not value.strip():
        return "must not be blank"
    return None


def validate_data(schema: dict[str, Field], data: dict[str, Any]) -> dict[str, str]:
    """Field name → problem for everything wrong with ``data`` (empty dict when valid)."""
    problems: dict[str, str] = {}
    for key in data:
        if key not in schema:
            problems[str(key)[:64]] = "unknown field"
    for name, spec in schema.items():
        if name not in data:
            if spec.required:
                problems[name] = "required"
            continue
        problem = _check_field(name, spec, data[name])
        if problem:
            problems[name] = problem
    return problems


# --- message types ----------------------------------------------------------------------------
C2S, S2C, BOTH = "client_to_server", "server_to_client", "both"

_LANG = Field("str", required=False, max=16, doc="BCP 47 tag, e.g. en or zh-CN; default: the scenario's")
_ID = Field("str", min=1, max=MAX_ID_CHARS, non_blank=True)


@dataclass(frozen=True)
class MessageType:
    name: str
    direction: str
    schema: dict[str, Field]
    doc: str


def _m(name: str, direction: str, doc: str, /, **schema: Field) -> MessageType:
    return MessageType(name, direction, schema, doc)


MESSAGE_TYPES: dict[str, MessageType] = {
    m.name: m
    for m in (
        _m(
            "init",
            S2C,
            "Sent once, right after accept.",
            server_version=Field("str"),
            supported_codecs=Field("str_list"),
            max_audio_duration=Field("int", min=0),
            ice_servers=Field("object_list"),
            max_turns=Field("int", min=0),
            buyer_persona=Field("object"),
            resumed=Field("bool"),
        ),
        _m(
            "offer",
            C2S,
            "WebRTC offer; candidates may be in the SDP, in this list, or trickled later.",
            sdp=Field("str", min=1, max=MAX_SDP_CHARS, non_blank=True),
            candidates=Field("str_list", required=False, max=MAX_CANDIDATES),
        ),
        _m(
            "answer",
            S2C,
            "WebRTC answer from the media worker (candidates are in the SDP).",
            sdp=Field("str", min=1),
            candidates=Field("str_list", required=False),
        ),
        _m(
            "ice_candidate",
            BOTH,
            "One trickled ICE candidate; an empty candidate string means end of candidates.",
            candidate=Field("str", max=MAX_CANDIDATE_CHARS),
            sdp_mid=Field("str", required=False, nullable=True, max=32),
            sdp_mline_index=Field("int", required=False, nullable=True, min=0, max=64),
            username_fragment=Field("str", required=False, nullable=True, max=256),
        ),
        _m(
            "connected",
            BOTH,
            "The peer connection is up (server: authoritative; client: informational).",
            connection_state=Field(
                "str", choices=("new", "connecting", "connected", "disconnected", "failed", "closed")
            ),
            audio_codec=Field("str", required=False, choices=SUPPORTED_CODECS),
            sample_rate=Field("int", required=False, choices=(8000, 16000, 48000)),
        ),
        _m(
            "ready",
            BOTH,
            "Media is flowing in the given direction.",
            direction=Field("str", choices=("send", "receive", "both")),
        ),
        _m(
            "text_message",
            C2S,
            "A typed trainee turn.",
            message_id=_ID,
            text=Field("str", min=1, max=MAX_TEXT_CHARS, non_blank=True),
            language=_LANG,
        ),
        _m(
            "text_response",
            S2C,
            "A buyer turn as text; message_id echoes the trainee's (null for the opening line and voice turns).",
            message_id=Field("str", nullable=True),
            response_id=Field("str"),
            text=Field("str"),
            language=Field("str"),
            confidence=Field("number", min=0, max=1),
        ),
        _m(
            "asr_start",
            C2S,
            "Start recognising the trainee's audio.",
            language=_LANG,
            format=Field("str", choices=SUPPORTED_CODECS),
            sample_rate=Field("int", choices=(8000, 16000, 48000)),
            mode=Field("str", required=False, choices=("auto", "manual")),
        ),
        _m(
            "asr_interim",
            S2C,
            "A partial transcript.",
            result_id=Field("str"),
            text=Field("str"),
            is_final=Field("bool", choices=(False,)),
            confidence=Field("number", min=0, max=1),
        ),
        _m(
            "asr_result",
            S2C,
            "A final transcript; times are ms since asr_start.",
            result_id=Field("str"),
            text=Field("str"),
            is_final=Field("bool", choices=(True,)),
            confidence=Field("number", min=0, max=1),
            language=Field("str"),
            start_time=Field("int", min=0),
            end_time=Field("int", min=0),
        ),
        _m("asr_stop", C2S, "Stop recognising; in manual mode the buyer replies now."),
        _m(
            "tts_request",
            C2S,
            "Speak this text over the peer connection.",
            request_id=_ID,
            text=Field("str", min=1, max=MAX_TTS_CHARS, non_blank=True),
            voice=Field("str", required=False, max=64),
            speed=Field("number", required=False, min=0.5, max=2.0),
            pitch=Field("number", required=False, min=0.5, max=2.0),
        ),
        _m(
            "tts_start",
            S2C,
            "Speech started.",
            request_id=Field("str", nullable=True),
            audio_format=Field("str", choices=SUPPORTED_CODECS),
            sample_rate=Field("int"),
        ),
        _m(
            "tts_complete",
            S2C,
            "Speech finished (interrupted: cut short by barge-in).",
            request_id=Field("str", nullable=True),
            duration_ms=Field("int", min=0),
            interrupted=Field("bool", required=False),
        ),
        _m(
            "ping",
            BOTH,
            "Heartbeat; answer with pong.",
            client_time=Field("int", required=False, min=0, max=MAX_CLIENT_INT),
        ),
        _m(
            "pong",
            BOTH,
            "Heartbeat answer.",
            server_time=Field("int", required=False, min=0, max=MAX_CLIENT_INT),
            client_time=Field("int", required=False, min=0, max=MAX_CLIENT_INT),
        ),
        _m(
            "disconnect",
            BOTH,
            "End the session (client reasons: user_requested, timeout, error).",
            reason=Field("str", choices=DISCONNECT_REASONS),
        ),
        _m(
            "error",
            BOTH,
            "Something went wrong; data.code is also in the envelope's error field.",
            code=Field("str", choices=ERROR_CODES),
            message=Field("str", max=1000),
            details=Field("object", required=False),
        ),
    )
}

# A client's disconnect may only carry the seed's three reasons.
CLIENT_SCHEMA_OVERRIDES: dict[str, dict[str, Field]] = {
    "disconnect": {"reason": Field("str", choices=CLIENT_DISCONNECT_REASONS)},
}

CLIENT_TYPES = tuple(n for n, m in MESSAGE_TYPES.items() if m.direction in (C2S, BOTH))
SERVER_TYPES = tuple(n for n, m in MESSAGE_TYPES.items() if m.direction in (S2C, BOTH))


def client_schema(message_type: str) -> dict[str, Field]:
    return CLIENT_SCHEMA_OVERRIDES.get(message_type, MESSAGE_TYPES[message_type].schema)


def _check_offer(data: dict[str, Any]) -> dict[str, str]:
    """What the field specs cannot say about an SDP: every m-line and every candidate line costs
    the media worker a transceiver or an ICE check, so both are counted (str.count: no line split)."""
    sdp = "\n" + data["sdp"]
    problems: dict[str, str] = {}
    if sdp.count("\nm=") > MAX_SDP_MLINES:
        problems["sdp"] = f"must have at most {MAX_SDP_MLINES} m-lines"
    elif sdp.count("\na=candidate:") + len(data.get("candidates", [])) > MAX_CANDIDATES:
        problems["sdp"] = f"must carry at most {MAX_CANDIDATES} candidates (SDP and list together)"
    return problems


# Checks beyond the field specs, run once the fields are valid: message type → problems.
CLIENT_CHECKS: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {"offer": _check_offer}


# --- server state machine ---------------------------------------------------------------------
class State(StrEnum):
    WAITING = "waiting"
    INITIALIZED = "initialized"
    OFFER_RECEIVED = "offer_received"
    ANSWER_SENT = "answer_sent"
    WEBRTC_CONNECTED = "webrtc_connected"
    READY = "ready"
    ACTIVE = "active"


_AFTER_INIT = frozenset(State) - {State.WAITING}
_MEDIA_UP = frozenset({State.WEBRTC_CONNECTED, State.READY, State.ACTIVE})

# Which client message types each state accepts. Anything else is ERR_INVALID_MESSAGE with the state.
ACCEPTS: dict[str, frozenset[State]] = {
    "ping": _AFTER_INIT,
    "pong": _AFTER_INIT,
    "disconnect": _AFTER_INIT,
    "error": _AFTER_INIT,
    "text_message": _AFTER_INIT,
    "offer": frozenset({State.INITIALIZED}),
    "ice_candidate": frozenset({State.OFFER_RECEIVED, State.ANSWER_SENT}) | _MEDIA_UP,
    "connected": frozenset({State.ANSWER_SENT}) | _MEDIA_UP,
    "ready": _MEDIA_UP,
    "asr_start": frozenset({State.READY, State.ACTIVE}),
    "asr_stop": frozenset({State.ACTIVE}),
    "tts_request": frozenset({State.READY, State.ACTIVE}),
}

# (state, event) → next state. Events are "recv:<type>" (from the client) and "sent:<type>"
# (to the client, usually forwarded from the media worker). Pairs not listed leave the state as is.
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.WAITING, "sent:init"): State.INITIALIZED,
    (State.INITIALIZED, "recv:offer"): State.OFFER_RECEIVED,
    (State.OFFER_RECEIVED, "sent:answer"): State.ANSWER_SENT,
    (State.ANSWER_SENT, "sent:connected"): State.WEBRTC_CONNECTED,
    (State.WEBRTC_CONNECTED, "recv:ready"): State.READY,
    (State.WEBRTC_CONNECTED, "sent:ready"): State.READY,
    (State.READY, "recv:asr_start"): State.ACTIVE,
    (State.READY, "recv:tts_request"): State.ACTIVE,
    (State.READY, "sent:tts_start"): State.ACTIVE,
    (State.READY, "sent:asr_interim"): State.ACTIVE,
    (State.READY, "sent:asr_result"): State.ACTIVE,
}
# The media side failed (worker lost, offer timed out, worker reported ERR_WEBRTC_FAILED): the
# client starts over with a fresh offer.
MEDIA_RESET_STATE = State.INITIALIZED


def next_state(state: State, event: str) -> State:
    return TRANSITIONS.get((state, event), state)


# --- envelope ---------------------------------------------------------------------------------
ENVELOPE_KEYS = {"type": True, "session_id": True, "data": True, "timestamp": False, "error": False}


def envelope(message_type: str, session_id: str, data: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    return {"type": message_type, "session_id": session_id, "timestamp": now_ms(), "data": data, "error": error}


def error_envelope(session_id: str, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return envelope("error", session_id, {"code": code, "message": message, "details": details or {}}, error=code)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class ClientMessage:
    type: str
    session_id: str
    data: dict[str, Any]
    timestamp: int | None


def parse_client_frame(text: str) -> ClientMessage:
    """Decode and validate one client text frame (envelope + data schema); raises ProtocolError.

    Session and state checks are the consumer's (they need the connection).
    """
    shape = json_shape_problem(text)
    if shape is not None:
        raise invalid(f"The frame is not acceptable JSON: {shape}.", reason="too_complex",
                      max_depth=MAX_JSON_DEPTH, max_items=MAX_JSON_ITEMS)
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise invalid("The frame is not valid JSON.", reason="bad_json", error=str(exc)[:200]) from None
    if not isinstance(raw, dict):
        raise invalid("A message must be a JSON object.", reason="not_an_object")
    problems = {str(k)[:64]: "unknown envelope field" for k in raw if k not in ENVELOPE_KEYS}
    problems.update({k: "required" for k, needed in ENVELOPE_KEYS.items() if needed and k not in raw})
    message_type = raw.get("type")
    if "type" in raw and not isinstance(message_type, str):
        problems["type"] = "must be str"
    if "session_id" in raw and not isinstance(raw["session_id"], str):
        problems["session_id"] = "must be str"
    elif len(raw.get("session_id", "")) > MAX_SESSION_ID_CHARS:
        problems["session_id"] = f"must be at most {MAX_SESSION_ID_CHARS} long"
    if "data" in raw and not isinstance(raw["data"], dict):
        problems["data"] = "must be object"
    timestamp = raw.get("timestamp")
    if timestamp is not None and _check_field("timestamp", Field("int", min=0, max=MAX_CLIENT_INT), timestamp):
        problems["timestamp"] = "must be a non-negative int (unix ms)"
    if raw.get("error") is not None and not isinstance(raw["error"], str):
        problems["error"] = "must be null or str"
    if problems:
        raise invalid("The envelope is malformed.", reason="bad_envelope", fields=problems)
    if message_type not in MESSAGE_TYPES:
        raise invalid("Unknown message type.", reason="unknown_type", type=message_type[:64], known=list(CLIENT_TYPES))
    if message_type not in CLIENT_TYPES:
        raise invalid("This message type is sent by the server only.", reason="server_only_type", type=message_type)
    problems = validate_data(client_schema(message_type), raw["data"])
    if not problems and message_type in CLIENT_CHECKS:
        problems = CLIENT_CHECKS[message_type](raw["data"])
    if problems:
        raise invalid(f"Invalid {message_type} data.", reason="schema", type=message_type, fields=problems)
    return ClientMessage(message_type, raw["session_id"], raw["data"], timestamp)


def validate_server_message(message: dict[str, Any]) -> dict[str, str]:
    """Problems with an outgoing message (used by tests and to vet media-worker events)."""
    problems = {k: "required" for k in ENVELOPE_KEYS if k not in message}
    if problems:
        return problems
    kind = MESSAGE_TYPES.get(message["type"])
    if kind is None or kind.direction == C2S:
        return {"type": "not a server message type"}
    if not isinstance(message["timestamp"], int):
        return {"timestamp": "must be int"}
    if (message["type"] == "error") != (message["error"] is not None):
        return {"error": "set exactly on error messages"}
    return validate_data(kind.schema, message["data"])
