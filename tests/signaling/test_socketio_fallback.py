"""The audio-chunk fallback at /socket.io/: wire framing, SessionManager, WebM stream decode (fast),
and whole sessions through a live daphne with the real python-socketio client (slow)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import wave
from typing import Any

import httpx
import numpy as np
import pytest
import socketio
import websockets
import websockets.exceptions
from websockets.asyncio.client import connect as ws_connect

from media_pipeline.chunked.webm_stream import AudioDecodeError, PCM16Stream, WebMOpusStream, open_stream
from signaling.chunk_sessions import ChunkLimits, ChunkRefused, SessionManager
from signaling.socketio_wire import Ack, Connect, Event, Pong, SocketIOWire, WireError
from tests.audio_fixtures import silence, speak, speak_pcm16
from tests.signaling.socketio_live import Client, LiveServer, media_recorder_pieces, webm_opus
from tests.trailing_off import CONTENT_WORD_PAUSE, trailing_off_take

SENTENCE = "Hello Margaret, how much time does your finance team spend on invoices every month?"


# ================================================================================================
# wire
# ================================================================================================

def test_it_opens_with_the_engineio_handshake():
    frame = SocketIOWire.open(sid="abc", ping_interval_ms=20000, ping_timeout_ms=40000, max_payload=65536)
    assert frame[0] == "0"
    assert json.loads(frame[1:]) == {
        "sid": "abc", "upgrades": [], "pingInterval": 20000, "pingTimeout": 40000, "maxPayload": 65536
    }


def test_it_decodes_connect_with_auth_and_events_with_ack_ids():
    wire = SocketIOWire()
    assert wire.feed('40{"token":"t0k"}') == Connect("/", {"token": "t0k"})
    assert wire.feed('4212["audio-chunk",{"offset":3}]') == Event("audio-chunk", [{"offset": 3}], 12)
    assert wire.feed("3") == Pong()
    assert wire.feed("43[1]") == Ack(None, [1]) or isinstance(wire.feed("43[1]"), Ack)


def test_it_reassembles_a_binary_event_from_its_attachment_frame():
    wire = SocketIOWire()
    assert wire.feed('451-["audio-chunk",{"offset":0,"audioData":{"_placeholder":true,"num":0}}]') is None
    event = wire.feed(b"\x1a\x45\xdf\xa3")
    assert event == Event("audio-chunk", [{"offset": 0, "audioData": b"\x1a\x45\xdf\xa3"}], None)


def test_it_encodes_events_acks_and_connect_errors_as_stock_clients_expect():
    wire = SocketIOWire()
    assert wire.event("audio-received", {"offset": 1}) == ['42["audio-received",{"offset":1}]']
    assert wire.ack(7, {"ok": True}) == ['437[{"ok":true}]']
    assert wire.connect_ack(sid="s1") == ['40{"sid":"s1"}']
    assert wire.connect_error("Authentication required") == ['44{"message":"Authentication required"}']
    assert wire.event("blob", b"\x00\x01") == ['451-["blob",{"_placeholder":true,"num":0}]', b"\x00\x01"]
    assert wire.disconnect() == ["41"]
    assert wire.ping() == "2"


@pytest.mark.parametrize("frame", ["", "x", "4", "4{}", "42not json", "49", '42{"a":1}', "42[1,2]"])
def test_it_rejects_malformed_frames_without_dying(frame):
    wire = SocketIOWire()
    with pytest.raises(WireError):
        wire.feed(frame)
    assert wire.feed("3") == Pong()


def test_it_rejects_a_binary_frame_nobody_announced():
    with pytest.raises(WireError):
        SocketIOWire().feed(b"\x00\x01")


# ================================================================================================
# SessionManager
# ================================================================================================

class RecordingSink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.flushes: list[int] = []
        self.idles = 0
        self.closed: str | None = None

    async def audio(self, data: bytes) -> None:
        self.flushes.append(len(data))
        self.data += data

    async def idle(self) -> None:
        self.idles += 1

    async def close(self, reason: str) -> None:
        self.closed = reason


def limits(**overrides: Any) -> ChunkLimits:
    base = dict(flush_bytes=32 * 1024, idle_flush_seconds=2.0, session_timeout_seconds=1800.0,
                sweep_seconds=60.0, max_buffer_bytes=256 * 1024, resume_seconds=60.0)
    return ChunkLimits(**{**base, **overrides})


async def test_it_acknowledges_a_repeated_offset_and_ignores_it():
    manager = SessionManager(limits())
    sink = RecordingSink()
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    first = session.receive(0, b"aa")
    again = session.receive(0, b"aa")
    await asyncio.sleep(0.01)
    assert not first.duplicate and again.duplicate and again.next_offset == 1
    assert bytes(sink.data) == b"aa"
    await manager.close("s", "user_requested")


async def test_it_holds_chunks_after_a_gap_and_reports_what_is_missing():
    manager = SessionManager(limits())
    sink = RecordingSink()
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    session.receive(0, b"0")
    gap = session.receive(3, b"3")
    assert gap.missing == [1, 2] and gap.next_offset == 1
    assert gap.payload(5)["missing"] == 1 and gap.payload(5)["missingOffsets"] == [1, 2]
    session.receive(2, b"2")
    filled = session.receive(1, b"1")
    assert filled.missing == [] and filled.next_offset == 4
    await asyncio.sleep(0.01)
    assert bytes(sink.data) == b"0123"
    await manager.close("s", "user_requested")


async def test_it_flushes_at_most_the_flush_size_at_a_time():
    manager = SessionManager(limits(flush_bytes=1024))
    sink = RecordingSink()
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    session.receive(0, b"x" * 3000)
    await asyncio.sleep(0.01)
    assert sink.flushes == [1024, 1024, 952]
    await manager.close("s", "user_requested")


async def test_it_flushes_idle_after_the_idle_time_with_no_new_data():
    manager = SessionManager(limits(idle_flush_seconds=0.1))
    sink = RecordingSink()
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    session.receive(0, b"a")
    await asyncio.sleep(0.06)
    session.receive(1, b"b")  # new data re-arms the timer
    await asyncio.sleep(0.06)
    assert sink.idles == 0
    await asyncio.sleep(0.1)
    assert sink.idles == 1
    await manager.close("s", "user_requested")
    assert sink.closed == "user_requested"


async def test_it_refuses_a_chunk_over_the_memory_bound_so_the_client_retries():
    manager = SessionManager(limits(max_buffer_bytes=100))
    session = manager.open(session_id="s", user_id=1, sink=RecordingSink(), audio_config={})
    session.receive(5, b"x" * 80)  # held behind a gap
    with pytest.raises(ChunkRefused) as refused:
        session.receive(6, b"y" * 40)
    assert refused.value.code == "ERR_RATE_LIMIT"
    assert session.receive(6, b"y" * 10).next_offset == 0
    await manager.close("s", "user_requested")


async def test_it_sweeps_idle_and_abandoned_sessions_but_keeps_live_ones():
    manager = SessionManager(limits(session_timeout_seconds=10, resume_seconds=5))
    idle_sink, gone_sink, live_sink = RecordingSink(), RecordingSink(), RecordingSink()
    idle = manager.open(session_id="idle", user_id=1, sink=idle_sink, audio_config={})
    gone = manager.open(session_id="gone", user_id=1, sink=gone_sink, audio_config={})
    live = manager.open(session_id="live", user_id=1, sink=live_sink, audio_config={})
    owner = object()
    await gone.attach(owner, _noop_emit)
    gone.detach(owner)
    now = time.monotonic()
    idle.last_activity = now - 11
    assert await manager.sweep(now + 1) == ["idle"]
    assert sorted(await manager.sweep(now + 6)) == ["gone"]
    assert idle_sink.closed == "timeout" and gone_sink.closed == "dropped" and live_sink.closed is None
    assert manager.get("live") is live
    await manager.close("live", "user_requested")


async def test_it_keeps_events_for_a_detached_session_until_a_socket_reattaches():
    manager = SessionManager(limits())
    session = manager.open(session_id="s", user_id=1, sink=RecordingSink(), audio_config={})
    first, second, got = object(), object(), []
    await session.attach(first, _noop_emit)
    session.detach(first)
    await session.emit("transcription", {"text": "hi"})

    async def collect(name: str, data: dict) -> None:
        got.append(name)

    assert await session.attach(second, collect) is None
    assert got == ["transcription"]
    third_previous = await session.attach(object(), _noop_emit)
    assert third_previous is second
    await manager.close("s", "user_requested")


async def test_it_batches_the_pieces_that_arrive_within_the_decode_interval():
    manager = SessionManager(limits(decode_interval_seconds=0.5))
    sink = RecordingSink()
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    session.receive(0, b"a")  # a stream that was quiet: flushed at once
    await asyncio.sleep(0.02)
    for i in range(1, 4):  # these wait for the interval and go as one flush
        session.receive(i, b"bcd"[i - 1 : i])
        await asyncio.sleep(0.03)
    assert sink.flushes == [1]
    await asyncio.sleep(0.6)
    assert sink.flushes == [1, 3] and bytes(sink.data) == b"abcd"
    await manager.close("s", "user_requested")


class BusySink(RecordingSink):
    """A sink whose decoder is saturated for its first ``busy`` flushes."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    async def audio(self, data: bytes) -> bool:
        if self.busy:
            self.busy -= 1
            return False
        await super().audio(data)
        return True


async def test_it_keeps_and_retries_audio_a_saturated_decoder_could_not_take(monkeypatch):
    monkeypatch.setattr("signaling.chunk_sessions.BUSY_RETRY_SECONDS", 0.02)
    manager = SessionManager(limits(max_buffer_bytes=64 * 1024))
    sink = BusySink(busy=3)
    session = manager.open(session_id="s", user_id=1, sink=sink, audio_config={})
    session.receive(0, b"one ")
    await asyncio.sleep(0.03)
    session.receive(1, b"two")  # arrives while the first bytes wait for the decoder
    await asyncio.sleep(0.15)
    assert bytes(sink.data) == b"one two"  # nothing lost, nothing reordered
    await manager.close("s", "user_requested")


async def test_it_refuses_new_chunks_with_a_retry_hint_while_the_decoder_is_saturated(monkeypatch):
    monkeypatch.setattr("signaling.chunk_sessions.BUSY_RETRY_SECONDS", 10)
    manager = SessionManager(limits(max_buffer_bytes=100))
    session = manager.open(session_id="s", user_id=1, sink=BusySink(busy=1), audio_config={})
    session.receive(0, b"x" * 60)
    await asyncio.sleep(0.02)  # handed to the sink, refused, kept in the buffer
    with pytest.raises(ChunkRefused) as refused:
        session.receive(1, b"y" * 60)
    assert refused.value.code == "ERR_RATE_LIMIT" and refused.value.details["retry_after"] > 0
    assert len(session.buffer) == 60
    await manager.close("s", "user_requested")


async def _noop_emit(name: str, data: dict) -> None:
    return None


# ================================================================================================
# WebM / PCM16 stream decode
# ================================================================================================

@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return np.concatenate([speak(SENTENCE), silence(1200)])


def decode_all(stream, pieces: list[bytes]) -> tuple[np.ndarray, list[str]]:
    out, errors = [], []
    for piece in pieces:
        result = stream.feed(piece)
        out.append(result.audio)
        if result.error:
            errors.append(result.error)
    end = stream.finish()
    out.append(end.audio)
    return np.concatenate(out), errors


def test_it_decodes_a_media_recorder_stream_piece_by_piece(speech):
    pieces = media_recorder_pieces(speech)
    assert len(pieces) > 10 and pieces[0].startswith(bytes.fromhex("1a45dfa3"))
    assert not any(p.startswith(bytes.fromhex("1a45dfa3")) for p in pieces[1:])
    audio, errors = decode_all(WebMOpusStream(), pieces)
    assert errors == []
    assert abs(len(audio) / 16000 - len(speech) / 16000) < 0.1
    assert np.corrcoef(audio[: len(speech)][2000:20000], speech[: len(audio)][2000:20000])[0, 1] > 0.5


def test_it_decodes_the_same_stream_cut_at_every_few_bytes(speech):
    data = webm_opus(speech[:16000])
    audio, errors = decode_all(WebMOpusStream(), [data[i : i + 7] for i in range(0, len(data), 7)])
    assert errors == [] and abs(len(audio) - 16000) < 1000


def test_it_says_clearly_when_a_blob_is_not_webm():
    result = WebMOpusStream().feed(b"RIFF\x00\x00\x00\x00WAVEfmt garbage that is not a webm stream")
    assert result.audio.size == 0
    assert "not a WebM stream" in result.error and "EBML header" in result.error


def test_it_skips_corrupt_bytes_and_resumes_at_the_next_cluster(speech):
    data = webm_opus(speech)
    first_cluster = data.find(bytes.fromhex("1f43b675"))
    second_cluster = data.find(bytes.fromhex("1f43b675"), first_cluster + 4)
    assert second_cluster > 0
    damaged = data[: first_cluster + 40] + b"\x00" * 500 + data[first_cluster + 40 :]
    stream = WebMOpusStream()
    audio, errors = decode_all(stream, [damaged[i : i + 900] for i in range(0, len(damaged), 900)])
    assert errors and "EBML" in errors[0] or "element" in errors[0]
    assert len(audio) > 0.5 * len(speech)  # everything from the next cluster on survived


def test_it_reports_a_stream_that_ends_inside_an_element(speech):
    data = webm_opus(speech[:8000])
    stream = WebMOpusStream()
    stream.feed(data[:-5])
    assert "ended inside an element" in stream.finish().error


def test_it_accepts_a_restarted_recorder_in_the_same_session(speech):
    one = webm_opus(speech[:16000])
    stream = WebMOpusStream()
    audio, errors = decode_all(stream, [one, one])
    assert errors == [] and stream.restarts == 1 and abs(len(audio) - 32000) < 2000


def test_it_decodes_raw_pcm16_even_with_odd_byte_boundaries():
    pcm = speak_pcm16("pricing", rate=16000).tobytes()
    audio, errors = decode_all(PCM16Stream(16000), [pcm[i : i + 333] for i in range(0, len(pcm), 333)])
    assert errors == [] and len(audio) == len(pcm) // 2


def test_it_resamples_pcm16_from_other_rates():
    pcm = speak_pcm16("pricing", rate=48000).tobytes()
    audio, _ = decode_all(open_stream("pcm16", sample_rate=48000), [pcm])
    assert abs(len(audio) - len(pcm) // 2 // 3) < 200


def test_it_refuses_formats_it_does_not_know():
    with pytest.raises(AudioDecodeError):
        open_stream("mp3")


# ================================================================================================
# live server, python-socketio client
# ================================================================================================

@pytest.fixture(scope="module")
def server():
    live = LiveServer(MAX_LIVE_SESSIONS_PER_USER="50").start()
    live.make_trainee("other")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def token(server) -> str:
    return server.token("trainee")


@pytest.fixture
async def client(server, token):
    c = await Client(server).connect(token=token)
    yield c
    await c.close()


def heard_all(text: str, *stems: str) -> bool:
    """Every stem appears in the transcript (tiny.en may say "invoicing" for "invoices")."""
    lowered = text.lower()
    return all(stem in lowered for stem in stems)


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnframes() > 0 and w.getsampwidth() == 2
        return w.getnframes() / w.getframerate()


@pytest.mark.slow
async def test_it_runs_a_whole_session_from_media_recorder_chunks(server, client, speech):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    assert started["maxTurns"] >= 2 and started["buyerPersona"]["name"]
    assert started["audioConfig"]["format"] == "webm-opus" and started["resumed"] is False
    opening, _ = await client.wait("ai-response")
    assert opening["turnCount"] == 0 and opening["text"]
    await client.wait("avatar-response")

    pieces = media_recorder_pieces(speech)
    await client.send(sid, pieces, pace=0.05)
    ack, _ = await client.wait("audio-received")
    assert ack["offset"] == 0 and ack["audioSize"] == len(pieces[0]) and ack["timestamp"] > 0

    heard, _ = await client.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "finance", "invoic", "month"), heard
    reply, _ = await client.wait("ai-response", timeout=30)
    assert reply["text"] and reply["turnCount"] == 1 and reply["maxTurns"] == started["maxTurns"]
    avatar, _ = await client.wait("avatar-response")
    assert avatar["videoUrl"] is None and avatar["duration"] > 0.3
    fetched = httpx.get(server.url + avatar["audioUrl"], timeout=10)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "audio/x-wav"
    assert abs(wav_seconds(fetched.content) - avatar["duration"]) < 0.05

    ended = await client.sio.call("end-session", {"sessionId": sid}, timeout=20)
    assert ended == {"sessionId": sid}
    done, _ = await client.wait("session-ended")
    assert done["reason"] == "user_requested" and done["totalTurns"] == 1 and done["duration"] > 0

    row = server.query(
        "SELECT transport, state, end_reason, turn_count, recording, audio_metadata FROM roleplay_realtimesession "
        "WHERE id = ?", sid)[0]
    assert row[:4] == ("chunk", "ended", "user_requested", 1)
    assert row[4] == f"sessions/{sid}/recording-raw.wav"
    assert json.loads(row[5])["format"] == "webm-opus"
    utterances = server.query(
        "SELECT speaker, source, text, start_ms, end_ms FROM roleplay_utterance u JOIN roleplay_realtimesession s "
        "ON u.session_id = s.id WHERE s.id = ? ORDER BY seq", sid)
    assert [u[0] for u in utterances] == ["buyer", "trainee", "buyer"]
    trainee = utterances[1]
    assert trainee[1] == "voice" and trainee[2] == heard["text"] and 0 <= trainee[3] < trainee[4]
    assert utterances[2][3] >= trainee[4] - 1000
    assert (server.dir / "media" / row[4]).stat().st_size > 1000


@pytest.mark.slow
async def test_it_answers_acks_when_the_client_asks(server, client):
    started = await client.start(server.scenario_id())
    piece = media_recorder_pieces(silence(500))[0]
    ack = await client.sio.call("audio-chunk", {
        "sessionId": started["sessionId"], "audioData": base64.b64encode(piece).decode(), "offset": 0,
    }, timeout=10)
    assert ack["offset"] == 0 and ack["nextOffset"] == 1
    refused = await client.sio.call("audio-chunk", {"sessionId": started["sessionId"], "audioData": "%%%",
                                                    "offset": 1}, timeout=10)
    assert refused["error"]["code"] == "ERR_INVALID_MESSAGE"
    await client.sio.call("end-session", {"sessionId": started["sessionId"]}, timeout=20)


@pytest.mark.slow
async def test_it_accepts_binary_audio_attachments(server, client):
    started = await client.start(server.scenario_id())
    piece = media_recorder_pieces(silence(500))[0]
    await client.sio.emit("audio-chunk", {"sessionId": started["sessionId"], "audioData": piece, "offset": 0})
    ack, _ = await client.wait("audio-received")
    assert ack["audioSize"] == len(piece)
    await client.sio.call("end-session", {"sessionId": started["sessionId"]}, timeout=20)


@pytest.mark.slow
async def test_it_handles_duplicate_and_missing_offsets(server, client, speech):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    pieces = media_recorder_pieces(speech)
    await client.send(sid, pieces[:2])
    await client.send(sid, pieces[1:2], first=1)  # resent by a nervous client
    acks = [(await client.wait("audio-received"))[0] for _ in range(3)]
    assert acks[2]["duplicate"] is True and acks[2]["nextOffset"] == 2
    await client.send(sid, pieces[4:5], first=4)  # 2 and 3 got lost
    gap, _ = await client.wait("audio-received")
    assert gap["gap"] is True and gap["missing"] == 2 and gap["missingOffsets"] == [2, 3]
    await client.send(sid, pieces[2:4], first=2)  # the client resends what was missing
    await client.send(sid, pieces[5:], first=5)
    heard, _ = await client.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "finance", "invoic")
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)
    transcripts = [d["text"] for e, d in client.seen if e == "transcription"]
    assert len(transcripts) == 1  # nothing heard twice


@pytest.mark.slow
async def test_it_resumes_after_a_drop_mid_utterance_without_loss_or_duplication(server, token, speech):
    first = await Client(server).connect(token=token)
    started = await first.start(server.scenario_id())
    sid = started["sessionId"]
    pieces = media_recorder_pieces(speech)
    half = len(pieces) // 2
    await first.send(sid, pieces[:half], pace=0.02)
    for _ in range(half):
        await first.wait("audio-received")
    await first.sio.eio.disconnect(abort=True)  # the network goes away, no goodbye
    await asyncio.sleep(0.5)
    assert server.query("SELECT state FROM roleplay_realtimesession WHERE id = ?", sid)[0][0] == "dropped"

    second = await Client(server).connect(token=token)
    resumed = await second.start(session_id=sid)
    assert resumed["resumed"] is True and resumed["nextOffset"] == half and resumed["streamReset"] is False
    await second.send(sid, pieces[half - 1 :], first=half - 1, pace=0.02)  # one overlapping resend
    heard, _ = await second.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "finance", "invoic", "month"), heard
    await second.wait("ai-response")
    await second.sio.call("end-session", {"sessionId": sid}, timeout=20)
    done, _ = await second.wait("session-ended")
    assert done["totalTurns"] == 1
    await second.close()


@pytest.mark.slow
async def test_another_user_cannot_resume_my_session(server, client):
    started = await client.start(server.scenario_id())
    intruder = await Client(server).connect(token=server.token("other"))
    await intruder.sio.emit("start-session", {"sessionId": started["sessionId"]})
    error, _ = await intruder.wait("error")
    assert error["code"] == "ERR_SESSION_NOT_FOUND"
    await intruder.close()
    await client.sio.call("end-session", {"sessionId": started["sessionId"]}, timeout=20)


@pytest.mark.slow
async def test_garbage_base64_is_an_error_and_the_session_goes_on(server, client):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.sio.emit("audio-chunk", {"sessionId": sid, "audioData": "not*base64!!", "offset": 0})
    error, _ = await client.wait("error")
    assert error["code"] == "ERR_INVALID_MESSAGE" and "base64" in error["message"]
    await client.send(sid, media_recorder_pieces(silence(300))[:1])
    ack, _ = await client.wait("audio-received")
    assert ack["offset"] == 0
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)


@pytest.mark.slow
async def test_a_non_webm_blob_is_reported_and_the_next_stream_still_works(server, client, speech):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.send(sid, [b"RIFF....WAVEfmt this is not what MediaRecorder makes" * 4])
    error, _ = await client.wait("error")
    assert error["code"] == "ERR_AUDIO_ENCODE_FAILED" and "not a WebM stream" in error["message"]
    await client.send(sid, media_recorder_pieces(speech), first=1)
    heard, _ = await client.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "invoic")
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)


@pytest.mark.slow
async def test_an_oversized_chunk_is_refused_and_the_session_goes_on(server, client):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.send(sid, [b"\x1a" * (40 * 1024)])
    error, _ = await client.wait("error")
    assert error["code"] == "ERR_INVALID_MESSAGE" and "limit" in error["message"]
    await client.sio.emit("audio-chunk", {"sessionId": sid, "audioData": "A" * (80 * 1024), "offset": 0})
    error, _ = await client.wait("error")
    assert "exceeds" in error["message"]
    await client.send(sid, media_recorder_pieces(silence(300))[:1])
    ack, _ = await client.wait("audio-received")
    assert ack["offset"] == 0
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)


@pytest.mark.slow
async def test_it_flushes_after_two_idle_seconds_when_speech_stops_without_silence(server, client):
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.wait("avatar-response")
    # Speech cut off mid-sentence, no trailing silence: VAD alone would wait for the end of the turn.
    words = speak(SENTENCE)
    pieces = media_recorder_pieces(words[: int(len(words) * 0.85)])
    await client.send(sid, pieces, pace=0.01)
    for _ in pieces:
        _, last_at = await client.wait("audio-received")
    heard, at = await client.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "finance")
    assert at - last_at >= 1.8, at - last_at  # not before the idle time (upper bound: machine load)
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)


@pytest.mark.slow
async def test_it_accepts_raw_pcm16_when_the_audio_config_says_so(server, client):
    started = await client.start(server.scenario_id(), audio_config={"format": "pcm16", "sampleRate": 16000})
    sid = started["sessionId"]
    assert started["audioConfig"]["format"] == "pcm16"
    pcm = np.concatenate([speak_pcm16(SENTENCE), np.zeros(16000, dtype=np.int16)]).tobytes()
    await client.send(sid, [pcm[i : i + 8000] for i in range(0, len(pcm), 8000)])
    heard, _ = await client.wait("transcription", timeout=60)
    assert heard_all(heard["text"], "finance", "invoic")
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)


@pytest.mark.slow
async def test_it_ends_the_session_at_max_turns(server, client):
    scenario = server.query("SELECT id FROM roleplay_scenario WHERE language = 'en' ORDER BY id DESC LIMIT 1")[0][0]
    server.manage("shell", "-c", f"from roleplay.models import Scenario; Scenario.objects.filter(pk={scenario})"
                                 ".update(max_turns=2)")
    started = await client.start(scenario)
    assert started["maxTurns"] == 2
    await client.wait("avatar-response")
    for text in ("What does your month-end close look like?", "Would a pilot next week work for you?"):
        await client.sio.emit("text-message", {"sessionId": started["sessionId"], "text": text})
        await client.wait("avatar-response", timeout=30)
    done, _ = await client.wait("session-ended", timeout=30)
    assert done["reason"] == "max_turns" and done["totalTurns"] == 2
    row = server.query("SELECT state, end_reason FROM roleplay_realtimesession WHERE id = ?", started["sessionId"])
    assert row == [("ended", "max_turns")]


@pytest.mark.slow
async def test_it_accepts_a_session_cookie_instead_of_a_token(server):
    cookie = server.session_cookie("trainee")
    c = await Client(server).connect(headers={"Cookie": f"sessionid={cookie}"})
    started = await c.start(server.scenario_id())
    assert started["sessionId"].startswith("sess_")
    await c.sio.call("end-session", {"sessionId": started["sessionId"]}, timeout=20)
    await c.close()


@pytest.mark.slow
@pytest.mark.parametrize("token", [None, "not-a-jwt"])
async def test_it_refuses_a_client_without_valid_credentials(server, token):
    c = Client(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(token=token)
    assert c.connect_errors and c.connect_errors[0]["message"] == "Authentication required"


@pytest.mark.slow
async def test_it_refuses_a_foreign_origin_before_accepting(server, token):
    c = Client(server)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.connect(token=token, headers={"Origin": "https://evil.example"})
    ws_url = server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with ws_connect(ws_url, origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.slow
def test_it_tells_polling_clients_to_use_the_websocket_transport(server):
    response = httpx.get(server.url + "/socket.io/?EIO=4&transport=polling", timeout=5)
    assert response.status_code == 400 and "websocket" in response.json()["message"]


# ================================================================================================
# a server with short timers: session timeout, ping/pong
# ================================================================================================

@pytest.fixture(scope="module")
def quick_server():
    live = LiveServer(
        CHUNK_SESSION_TIMEOUT_SECONDS="1.5", CHUNK_SWEEP_SECONDS="0.5",
        WS_PING_INTERVAL_SECONDS="0.5", WS_IDLE_TIMEOUT_SECONDS="1.5",
    ).start()
    yield live
    live.stop()


@pytest.mark.slow
async def test_it_ends_a_session_idle_past_the_session_timeout(quick_server):
    c = await Client(quick_server).connect(token=quick_server.token())
    started = await c.start(quick_server.scenario_id())
    done, _ = await c.wait("session-ended", timeout=10)
    assert done["reason"] == "timeout"
    row = quick_server.query("SELECT state, end_reason FROM roleplay_realtimesession WHERE id = ?",
                             started["sessionId"])
    assert row == [("ended", "timeout")]
    await c.close()


@pytest.mark.slow
async def test_it_pings_and_keeps_a_ponging_client_but_drops_a_silent_one(quick_server):
    c = await Client(quick_server).connect(token=quick_server.token())
    await asyncio.sleep(2.5)  # several ping intervals: the stock client answers every ping
    assert c.sio.connected
    await c.close()

    ws_url = quick_server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    token = quick_server.token()  # before connecting: it blocks this loop for a second
    async with ws_connect(ws_url) as ws:
        opened = json.loads((await ws.recv())[1:])
        assert opened["pingInterval"] == 500 and opened["pingTimeout"] == 1000 and opened["upgrades"] == []
        await ws.send("40" + json.dumps({"token": token}))
        assert (await ws.recv()).startswith('40{"sid":')
        assert await asyncio.wait_for(ws.recv(), 3) == "2"
        started = time.monotonic()
        with pytest.raises(websockets.exceptions.ConnectionClosed):  # closed by the server, not by us
            while True:  # never pong
                await asyncio.wait_for(ws.recv(), 5)
        assert time.monotonic() - started < 3


@pytest.mark.slow
async def test_a_pause_mid_sentence_is_one_turn_with_one_reply(server, client):
    """Natural turn-taking on the chunk path: "…about [0.8 s] the invoices…" is one transcription,
    one trainee utterance, one turn and one reply (the held thought is joined, not answered)."""
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.wait("avatar-response")  # the opening line
    audio = np.concatenate([speak("I wanted to ask you about"), silence(800),
                            speak("the invoices your team handles every month."), silence(1500)])
    await client.send(sid, media_recorder_pieces(audio), pace=0.25)  # in real time, as a recorder would
    heard, _ = await client.wait("transcription", timeout=30)
    assert heard_all(heard["text"], "want", "month"), heard
    reply, _ = await client.wait("ai-response", timeout=30)
    assert reply["turnCount"] == 1
    await asyncio.sleep(2.0)
    assert [e for e, _ in client.seen].count("transcription") == 1, client.seen
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)
    trainee = server.query(
        "SELECT text, turn_end FROM roleplay_utterance WHERE session_id = ? AND speaker = 'trainee'", sid)
    assert len(trainee) == 1 and heard_all(trainee[0][0], "want", "month"), trainee
    assert json.loads(trainee[0][1])["decision"], trainee  # how its end was decided, for the review page


def recorded(samples: np.ndarray) -> np.ndarray:
    """``samples`` as the server decodes them from the page's recorder (32 kbps WebM/Opus)."""
    coded, _ = decode_all(WebMOpusStream(), media_recorder_pieces(samples))
    return coded


@pytest.mark.slow
async def test_a_pause_after_a_content_word_mid_sentence_is_one_turn_with_one_reply(server, client):
    """Natural turn-taking after a content word: in "I understand that the budget [0.8 s] is a big
    problem for you." no word rule holds after "budget", only the ASR's odds of "…" right after it
    (Transcript.ending, words.trailing_cue). The pause is cut into the whole sentence's audio, so
    "budget" keeps its mid-sentence pitch (said on its own it would fall, and be heard as finished)."""
    take = await asyncio.to_thread(trailing_off_take, *CONTENT_WORD_PAUSE, code=recorded)
    audio = np.concatenate([silence(500), take, silence(1500)])
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.wait("avatar-response")  # the opening line
    await client.send(sid, media_recorder_pieces(audio), pace=0.25)  # in real time, as a recorder would
    heard, _ = await client.wait("transcription", timeout=30)
    assert heard_all(heard["text"], "understand", "budget", "problem"), heard
    reply, _ = await client.wait("ai-response", timeout=30)
    assert reply["turnCount"] == 1
    await asyncio.sleep(2.0)
    seen = [e for e, _ in client.seen]
    assert seen.count("transcription") == 1 and seen.count("ai-response") == 2, client.seen  # the opening + one
    await client.sio.call("end-session", {"sessionId": sid}, timeout=20)
    said = server.query("SELECT speaker, text FROM roleplay_utterance WHERE session_id = ? ORDER BY seq", sid)
    trainee = [text for speaker, text in said if speaker == "trainee"]
    assert len(trainee) == 1 and heard_all(trainee[0], "understand", "budget", "problem"), said
    assert [speaker for speaker, _ in said] == ["buyer", "trainee", "buyer"], said


@pytest.mark.slow
async def test_a_held_thought_is_answered_when_the_client_stops_sending(server, client):
    """A recorder that stops mid-thought ("…about", then nothing: a muted microphone, a closed tab that
    kept its socket) sends no more audio to decode: the held thought is answered on the wall clock."""
    started = await client.start(server.scenario_id())
    sid = started["sessionId"]
    await client.wait("avatar-response")  # the opening line
    audio = np.concatenate([silence(300), speak("I wanted to ask you about"), silence(600)])
    await client.send(sid, media_recorder_pieces(audio), pace=0.25)
    heard, _ = await client.wait("transcription", timeout=30)
    assert heard_all(heard["text"], "want", "about"), heard
    reply, _ = await client.wait("ai-response", timeout=30)
    assert reply["turnCount"] == 1
