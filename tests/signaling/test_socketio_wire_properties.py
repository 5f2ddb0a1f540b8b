"""Properties of the two frame decoders a client reaches before anything else.

- ``SocketIOWire.feed`` raises nothing but ``WireError`` on any frame or sequence of frames (text,
  bytes, Socket.IO-shaped garbage, deep nesting), returns only the packet types it documents, and
  still decodes a valid packet afterwards.
- Whatever the server's own encoder writes within the bounds comes back unchanged: the JSON
  shape guard refuses nothing valid.
- ``parse_client_frame`` (LingEcho) raises nothing but ``ProtocolError``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from signaling.protocol import (
    MAX_JSON_DEPTH,
    ClientMessage,
    ProtocolError,
    json_shape_problem,
    parse_client_frame,
)
from signaling.socketio_wire import Ack, Close, Connect, Disconnect, Event, Ping, Pong, SocketIOWire, WireError

PACKET_TYPES = (Pong, Ping, Close, Connect, Disconnect, Event, Ack)
PREFIXES = ["", "0", "1", "2", "3", "4", "5", "6", "b", "40", "41", "42", "43", "44", "45", "46", "47", "4212",
            "451-", "452-", "4599-", "461-", "40/", "42/chat,", "42/a?b=c,", "41/x,", "4٣", "4²-"]
JSONISH = st.text(alphabet=st.sampled_from('[]{}",:0123456789-+.eE/\\abntu_ \x00é🙂'), max_size=200)


def nested(prefix: str, opener: str, depth: int, closer: str) -> str:
    return prefix + opener * depth + closer * (depth // 2)


hostile_text = st.one_of(
    st.text(max_size=300),
    st.builds(str.__add__, st.sampled_from(PREFIXES), JSONISH),
    st.builds(nested, st.sampled_from(PREFIXES), st.sampled_from(["[", '{"a":', '["x",', "[{", '"\\']),
              st.integers(0, 5000), st.sampled_from(["", "]", "}", "1"])),
    st.builds(lambda n, body: f"45{n}-" + json.dumps(["x", body]),
              st.integers(0, 12), st.just({"_placeholder": True, "num": 0})),
)
hostile_frames = st.one_of(hostile_text, st.binary(max_size=300))


def _check(result: Any) -> None:
    assert result is None or isinstance(result, PACKET_TYPES), result
    if isinstance(result, Event):
        assert isinstance(result.name, str) and isinstance(result.args, list)
        assert result.ack_id is None or 0 <= result.ack_id < 2**53
    if isinstance(result, Connect):
        assert isinstance(result.auth, dict)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(hostile_frames, max_size=8))
@example(frames=["42" + "[" * 100_000])
@example(frames=["4" + "[" * 100_000])
@example(frames=['451-["a",{"_placeholder":true,"num":0}]', b"\x00", b"\x01"])
@example(frames=['451-["a",' + "[" * 30 + '{"_placeholder":true,"num":0}' + "]" * 30 + "]", b"\x00"])
@example(frames=['452-["a",{"_placeholder":true,"num":-1}]', b"\x00", b"\x01"])
@example(frames=['451-["a",{"_placeholder":true,"num":"0"}]', b"\x00"])
@example(frames=["42" + "1" * 5000])
@example(frames=['42["x",' + "1" * 5000 + "]"])
def test_feed_raises_only_wire_errors_and_recovers(frames):
    wire = SocketIOWire()
    for frame in frames:
        try:
            _check(wire.feed(frame))
        except WireError:
            pass
    try:
        wire.feed("3")  # a text frame also clears a binary event still waiting for attachments
    except WireError:
        pass
    assert wire.feed('42["ok",{"n":1}]') == Event("ok", [{"n": 1}], None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=40,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@hsettings(max_examples=300, deadline=None)
@given(name=st.text(min_size=1, max_size=20), data=json_values, ack_id=st.none() | st.integers(0, 2**53 - 1),
       with_bytes=st.booleans(), wrap=st.integers(0, MAX_JSON_DEPTH - 12))
def test_what_the_server_encodes_within_the_bounds_decodes_unchanged(name, data, ack_id, with_bytes, wrap):
    for _ in range(wrap):
        data = [data]
    payload: Any = {"data": data, "blob": b"\x00\xff" * 10} if with_bytes else data
    assert depth(payload) + 1 <= MAX_JSON_DEPTH
    frames = SocketIOWire().event(name, payload) if ack_id is None else SocketIOWire().ack(ack_id, payload)
    wire = SocketIOWire()
    results = [wire.feed(frame) for frame in frames]
    assert results[:-1] == [None] * (len(frames) - 1)
    if ack_id is None:
        assert results[-1] == Event(name, [payload], None)
    else:
        assert results[-1] == Ack(ack_id, [payload])


@hsettings(max_examples=300, deadline=None)
@given(value=json_values, ensure_ascii=st.booleans())
def test_the_json_shape_guard_passes_any_small_valid_json(value, ensure_ascii):
    assert json_shape_problem(json.dumps(value, ensure_ascii=ensure_ascii)) is None


@hsettings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=300), JSONISH,
                      st.builds(nested, st.just(""), st.sampled_from(["[", '{"a":', '{"type":"ping","data":']),
                                st.integers(0, 5000), st.sampled_from(["", "]", "}"]))))
@example(text="[" * 100_000)
@example(text='{"type":"error","session_id":"S","data":{"code":"ERR_TIMEOUT","message":"m","details":'
              + '{"a":' * 40 + "1" + "}" * 41 + "}")
def test_parse_client_frame_raises_only_protocol_errors(text):
    try:
        message = parse_client_frame(text)
    except ProtocolError as exc:
        assert exc.code == "ERR_INVALID_MESSAGE"
        return
    assert isinstance(message, ClientMessage)
