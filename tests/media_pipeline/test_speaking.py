"""The speaker stage (media_pipeline.webrtc.speaking) with fakes at its ports: a track that plays at once,
a TTS that records what it was asked, a call that records what it emitted. The live tests
(test_voice_e2e, test_turn_joining) cover the same behaviour through aiortc."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from media_pipeline.audio import float32_to_pcm16, resample
from media_pipeline.executor import BoundedExecutor
from media_pipeline.webrtc.outbound import OutboundAudioTrack, PlayResult
from media_pipeline.webrtc.speaking import Speaker, playback_facts, text_once

RATE = 8000


class InstantTrack:
    """An outbound track that plays a reply the moment it is closed (or stops it when flushed)."""

    sample_rate = RATE

    def __init__(self) -> None:
        self.playing: str | None = None
        self.samples = 0
        self.texts: list[str] = []
        self._done: asyncio.Future[PlayResult] | None = None
        self.began = time.monotonic()

    def begin(self, reply_id: str) -> asyncio.Future[PlayResult]:
        self.playing, self.samples, self.texts = reply_id, 0, []
        self._done = asyncio.get_running_loop().create_future()
        return self._done

    def push(self, audio: np.ndarray, *, text: str = "", recorded: np.ndarray | None = None) -> None:
        self.samples += audio.size
        self.texts.append(text)

    def _finish(self, interrupted: bool) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(PlayResult(self.playing or "", self.samples, RATE, interrupted,
                                             " ".join(self.texts), self.began))
        self.playing = None

    def close_reply(self) -> None:
        self._finish(False)

    def flush(self) -> None:
        self._finish(True)


class RecordingTTS:
    name = "recording"
    sample_rate = 16000

    def __init__(self, *, broken: bool = False) -> None:
        self.said: list[str] = []
        self.broken = broken

    def synthesize(self, text: str, **_: Any):
        if self.broken:
            raise RuntimeError("tts down")
        self.said.append(text)
        yield np.full(1600, 0.1, dtype=np.float32)  # 100 ms


class Host:
    def __init__(self, tts: RecordingTTS, *, connected: bool = True) -> None:
        self.session_id = "sess_speaker"
        self.engines = SimpleNamespace(tts=tts, tts_pool=BoundedExecutor("tts", max_workers=1, max_queue=8,
                                                                          block=True))
        self.outbound = InstantTrack()
        self.negotiated = None
        self.connected = connected
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.t0 = time.monotonic()
        self._tasks: set[asyncio.Task] = set()

    def session_ms(self, monotonic: float) -> int:
        return int((monotonic - self.t0) * 1000)

    async def emit(self, message_type: str, data: dict[str, Any]) -> None:
        self.events.append((message_type, data))

    async def error(self, code: Any, message: str, details: dict[str, Any] | None = None) -> None:
        self.events.append(("error", {"code": code, "message": message, "details": details or {}}))

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        return task

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


async def until_playing(host: Host) -> None:
    """Until the first sentence is on the track (synthesised and pushed)."""
    async def pushed() -> None:
        while not host.outbound.samples:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(pushed(), 5)


async def stream(*chunks: str, hold: asyncio.Event | None = None):
    for chunk in chunks:
        yield chunk
    if hold is not None:
        await hold.wait()  # the brain is still writing


async def test_it_speaks_a_streamed_reply_sentence_by_sentence_and_reports_it_all():
    host = Host(RecordingTTS())
    spoken = await Speaker(host).speak("resp_1", stream("Hello there. How ", "are you today?"),
                                       text_response={"response_id": "resp_1"})
    assert host.engines.tts.said == ["Hello there.", "How are you today?"]
    assert host.kinds() == ["tts_start", "text_response", "tts_complete"]
    assert dict(host.events)["text_response"]["text"] == "Hello there. How are you today?"
    assert dict(host.events)["tts_complete"] == {"request_id": "resp_1", "duration_ms": 200, "interrupted": False}
    assert spoken.played.duration_ms == 200 and not spoken.played.interrupted
    assert spoken.end_ms - spoken.start_ms >= 200


async def speaking_mid_reply(reply_id: str, text: str) -> tuple[Host, Speaker, asyncio.Future]:
    """A speaker whose first sentence is on the track while the brain is still writing the rest."""
    host = Host(RecordingTTS())
    speaker = Speaker(host)
    speaking = asyncio.ensure_future(speaker.speak(reply_id, stream(text, hold=asyncio.Event())))
    await until_playing(host)
    return host, speaker, speaking


async def test_a_barge_in_stops_the_reply_and_only_what_was_played_is_its_text():
    host, speaker, speaking = await speaking_mid_reply("resp_2", "We can talk about that. And ")
    assert speaker.playing == "resp_2"
    speaker.barge_in(time.monotonic())
    spoken = await asyncio.wait_for(speaking, 5)
    assert spoken.played.interrupted
    assert dict(host.events)["tts_complete"]["interrupted"] is True
    facts = playback_facts(spoken)
    assert facts["interrupted"] and facts["text"] == "We can talk about that."
    assert speaker.barge_in_stop_ms is not None


async def test_a_withdrawn_reply_says_so_in_tts_complete():
    host, speaker, speaking = await speaking_mid_reply("resp_3", "I see what you mean. And ")
    speaker.withdraw("resp_3", time.monotonic())
    await asyncio.wait_for(speaking, 5)
    assert dict(host.events)["tts_complete"]["withdrawn"] is True


async def test_when_speech_fails_the_reply_still_arrives_as_text_with_one_error():
    host = Host(RecordingTTS(broken=True))
    spoken = await Speaker(host).speak("resp_4", stream("First. ", "Second. ", "Third."),
                                       text_response={"response_id": "resp_4"})
    errors = [data for kind, data in host.events if kind == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "ERR_TTS_FAILED" and errors[0]["details"]["engine"] == "recording"
    assert dict(host.events)["text_response"]["text"] == "First. Second. Third."
    assert spoken.played.duration_ms == 0


async def test_without_a_connection_it_says_so_and_plays_nothing():
    host = Host(RecordingTTS(), connected=False)
    assert await Speaker(host).speak("resp_5", text_once("Hello.")) is None
    assert host.kinds() == ["error"] and host.events[0][1]["details"] == {"request_id": "resp_5"}


async def test_the_call_recording_gets_the_16_khz_audio_of_what_was_played_and_nothing_after_a_barge_in():
    """The real track: the recording takes the reply's 16 kHz copy frame by frame as frames go out
    (no resampling of each 20 ms frame on the loop), and nothing that a barge-in dropped."""
    recorded: list[np.ndarray] = []
    track = OutboundAudioTrack(48000, record=lambda samples, _at: recorded.append(samples.copy()))
    second = np.arange(16000)
    tone16 = (np.sin(second * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16)
    tone48 = float32_to_pcm16(resample(tone16, 16000, 48000))
    try:
        track.begin("r1")
        track.push(tone48, text="one", recorded=tone16)
        for _ in range(10):
            await track.recv()
        assert np.array_equal(np.concatenate(recorded), tone16[:3200])  # 10 frames of 320 samples
        track.flush()
        for _ in range(3):
            await track.recv()
        assert sum(part.size for part in recorded) == 3200

        recorded.clear()
        done = track.begin("r2")
        track.push(tone48, text="two")  # no 16 kHz copy given: the track makes one, once
        track.close_reply()
        for _ in range(52):
            await track.recv()
        assert done.done() and not done.result().interrupted
        whole = np.concatenate(recorded).astype(np.float64)
        assert whole.size == 16000
        assert np.corrcoef(whole[400:-400], tone16[400:-400])[0, 1] > 0.99
    finally:
        track.stop()


async def test_reply_frames_encoded_ahead_are_the_frames_a_frame_by_frame_encoder_makes_and_a_barge_in_drops_them():
    """Reply audio is Opus-encoded ten frames per trip to a thread. What goes out must be exactly
    what encoding each frame in turn makes (the last partial frame padded, then the tail of silence
    that drains the encoder), and a barge-in must not let an already-encoded frame out."""
    from media_pipeline.webrtc.outbound import AHEAD_FRAMES, TAIL_FRAMES, FrameEncoder, silence_payload

    track = OutboundAudioTrack(48000)
    frame = track.frame_samples
    tone = (np.sin(np.arange(frame * 23 + 500) * 2 * np.pi * 220 / 48000) * 8000).astype(np.int16)
    try:
        await track.recv()  # the track starts in silence
        done = track.begin("r1")
        track.push(tone[: frame * 7 + 100], text="one")
        track.push(tone[frame * 7 + 100:], text="two")
        track.close_reply()
        sent = [bytes(await track.recv()) for _ in range(24 + TAIL_FRAMES + 1)]
        assert done.done() and not done.result().interrupted

        reference = FrameEncoder(48000)
        padded = np.concatenate([tone, np.zeros(24 * frame - tone.size, dtype=np.int16)])
        frames = [padded[i * frame:(i + 1) * frame] for i in range(24)]
        frames += [np.zeros(frame, dtype=np.int16)] * TAIL_FRAMES
        assert sent[:-1] == [reference.encode(f) for f in frames]
        assert sent[-1] == silence_payload(48000)

        track.begin("r2")
        track.push(tone, text="three")
        await track.recv()  # encodes this frame and the next AHEAD_FRAMES - 1
        assert len(track._ahead) == AHEAD_FRAMES - 1
        encoded_ahead = set(track._ahead)
        track.flush()  # barge-in
        after = [bytes(await track.recv()) for _ in range(TAIL_FRAMES + 1)]
        assert not encoded_ahead & set(after)
        assert after[-1] == silence_payload(48000)
    finally:
        track.stop()


async def test_a_barge_in_while_frames_are_being_encoded_ahead_keeps_none_of_them():
    import threading

    track = OutboundAudioTrack(48000)
    tone = (np.sin(np.arange(48000) * 2 * np.pi * 220 / 48000) * 8000).astype(np.int16)
    try:
        await track.recv()
        encoder = track._encoder
        entered, release = threading.Event(), threading.Event()
        encode_many = encoder.encode_many

        def slow_encode_many(frames):
            entered.set()
            release.wait(10)
            return encode_many(frames)

        encoder.encode_many = slow_encode_many
        track.begin("r1")
        track.push(tone, text="one")
        sending = asyncio.ensure_future(track.recv())
        assert await asyncio.to_thread(entered.wait, 10)
        track.flush()  # the trainee barges in while the thread encodes
        release.set()
        await sending
        assert not track._ahead
    finally:
        track.stop()


async def test_a_listening_opus_track_sends_only_dtx_packets_and_still_starts_a_reply_on_the_next_frame():
    """Opus DTX: after DTX_AFTER_FRAMES of silence the track sends one TOC-only packet every
    DTX_EVERY_FRAMES instead of a packet per 20 ms, with timestamps that keep real time; a reply
    queued meanwhile goes out on the next 20 ms tick, not at the next DTX packet. Only for a client
    that asked (``usedtx=1``), and never on PCMA."""
    from media_pipeline.webrtc.outbound import DTX_AFTER_FRAMES, DTX_EVERY_FRAMES, dtx_payload, silence_payload

    track = OutboundAudioTrack(48000)
    track.configure(48000, dtx=True)
    frame = track.frame_samples
    sent: list[tuple[float, Any]] = []

    async def sender() -> None:  # as aiortc's RTCRtpSender: recv() in a loop, each packet out at once
        while True:
            packet = await track.recv()
            sent.append((time.monotonic(), packet))

    running = asyncio.ensure_future(sender())
    try:
        while len(sent) < DTX_AFTER_FRAMES + 3:
            await asyncio.sleep(0.01)
        first, dtx = sent[:DTX_AFTER_FRAMES], sent[DTX_AFTER_FRAMES:DTX_AFTER_FRAMES + 3]
        assert [bytes(p) for _, p in first] == [silence_payload(48000)] * DTX_AFTER_FRAMES
        assert [p.pts for _, p in first] == [i * frame for i in range(DTX_AFTER_FRAMES)]
        assert [bytes(p) for _, p in dtx] == [dtx_payload(48000)] * 3
        assert len(dtx_payload(48000)) == 1 and dtx_payload(48000)[0] & 0x03 == 0  # code 0, no frame bytes
        assert [p.pts for _, p in dtx] == [(DTX_AFTER_FRAMES + i * DTX_EVERY_FRAMES) * frame for i in range(3)]
        assert dtx[2][0] - dtx[0][0] >= 2 * DTX_EVERY_FRAMES * 0.02 - 0.05  # real time between them

        await asyncio.sleep(0.1)  # well inside the next DTX interval
        tone = (np.sin(np.arange(frame * 5) * 2 * np.pi * 220 / 48000) * 8000).astype(np.int16)
        before = len(sent)
        track.begin("r1")
        track.push(tone, text="hello")
        queued_at = time.monotonic()
        while len(sent) == before:
            await asyncio.sleep(0.002)
        at, voiced = sent[before]
        assert at - queued_at < 0.045  # the next 20 ms tick (plus scheduling), not ~300 ms later
        assert len(bytes(voiced)) > 2
        last_dtx = sent[before - 1][1]
        assert voiced.pts - last_dtx.pts >= 5 * frame and (voiced.pts - last_dtx.pts) % frame == 0  # time went on
    finally:
        running.cancel()
        track.stop()

    for rate, asked in ((48000, False), (8000, True)):
        track = OutboundAudioTrack(rate)
        track.configure(rate, dtx=asked)
        try:
            payloads = [bytes(await track.recv()) for _ in range(DTX_AFTER_FRAMES + 3)]
            assert payloads == [silence_payload(rate)] * (DTX_AFTER_FRAMES + 3)
        finally:
            track.stop()
