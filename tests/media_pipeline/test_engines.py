"""The offline engines (eSpeak NG, faster-whisper tiny.en, Silero VAD), the audio helpers and
the bounded executor, all real: speech is synthesised at test time, nothing is mocked."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from media_pipeline import audio
from media_pipeline.engines import get_asr_engine, get_tts_engine, get_vad_model
from media_pipeline.engines.asr.base import UnsupportedLanguage
from media_pipeline.engines.tts.text import SentenceBuffer, sentence_split
from media_pipeline.engines.vad.base import Endpointer, EndpointerConfig, SpeechDetector
from media_pipeline.executor import BoundedExecutor, EngineBusy, monitor_event_loop_lag
from tests.audio_fixtures import frames, noise, silence, speak, speak_pcm16

RATE = 16000


@pytest.fixture(scope="module")
def asr():
    return get_asr_engine("faster_whisper")


def voiced_span(samples: np.ndarray, rate: int = RATE, floor_dbfs: float = -40.0) -> tuple[int, int]:
    """First and last sample of 10 ms blocks louder than ``floor_dbfs``: where speech really is."""
    step = rate // 100
    loud = [i for i in range(0, len(samples) - step, step) if audio.dbfs(samples[i : i + step]) > floor_dbfs]
    return loud[0], loud[-1] + step


# --- TTS -------------------------------------------------------------------------------------

def test_it_speaks_english_that_whisper_understands(asr):
    speech = speak("Please send me the pricing proposal by Friday.")
    transcript = asr.transcribe(speech, language="en-US")
    text = transcript.text.lower()
    for word in ("send", "pricing", "proposal", "friday"):
        assert word in text, transcript
    assert 0.3 < transcript.confidence <= 1.0
    assert transcript.language == "en"
    assert transcript.duration_s == pytest.approx(len(speech) / RATE)


def test_a_live_decode_gives_the_odds_that_the_speech_goes_on():
    """Whisper's own odds of "…"/","/"-" right after the last word: high where the speaker broke off,
    low after a finished sentence (``turns.words.trails_off`` holds the turn on them)."""
    from media_pipeline.engine_pool import asr_options
    from media_pipeline.turns.words import TRAILS_OFF_MORE, trailing_cue

    live = get_asr_engine("faster_whisper", **asr_options())  # the 10 s window a call decodes with
    finished = [live.transcribe(np.concatenate([silence(300), speak(text), silence(100)]), language="en")
                for text in ("Could you tell me who else is involved in the decision?",
                             "What would it take to get a pilot started?")]  # words tiny.en hears whole
    broken_off = [live.transcribe(np.concatenate([silence(300), speak(text), silence(100)]), language="en")
                  for text in ("We are planning to", "The main problem is")]
    assert all(t.ending is not None for t in finished + broken_off)
    assert all(t.ending.more < TRAILS_OFF_MORE < b.ending.more for t in finished for b in broken_off), \
        [t.ending for t in finished + broken_off]
    assert [trailing_cue(t.text, "en", t.ending) for t in finished] == ["", ""]
    assert get_asr_engine("faster_whisper").transcribe(speak("The main problem is"), language="en").ending is None


def test_it_gives_word_timestamps_inside_the_audio(asr):
    speech = np.concatenate([silence(300), speak("The budget is approved.")])
    transcript = asr.transcribe(speech, language="en", word_timestamps=True)
    assert [w.word.strip(".").lower() for w in transcript.words][-1] == "approved"
    starts = [w.start_s for w in transcript.words]
    assert starts == sorted(starts)
    assert transcript.words[-1].end_s <= transcript.duration_s + 0.1


def test_it_speaks_chinese_with_the_cmn_voice():
    tts = get_tts_engine("espeak")
    pcm = np.concatenate(list(tts.synthesize("你好，请问你们的价格是多少？", language="zh-CN")))
    assert pcm.dtype == np.int16
    assert len(pcm) / tts.sample_rate > 1.0
    assert audio.dbfs(pcm) > -30


def test_it_speaks_faster_when_speed_goes_up():
    text = "We would like to review the contract terms before signing."
    normal, fast = len(speak(text)), len(speak(text, speed=2.0))
    assert fast < 0.65 * normal


def test_it_accepts_an_espeak_voice_name_and_falls_back_on_an_unknown_one():
    tts = get_tts_engine("espeak")
    female = np.concatenate(list(tts.synthesize("Hello there.", voice="en-us+f3")))
    unknown = np.concatenate(list(tts.synthesize("Hello there.", voice="longxiaochun", language="en")))
    assert audio.dbfs(female) > -30 and audio.dbfs(unknown) > -30


def test_it_refuses_a_nonsense_speed():
    with pytest.raises(ValueError, match="speed"):
        list(get_tts_engine("espeak").synthesize("Hi.", speed=0))


def test_it_splits_sentences_in_english_and_chinese():
    assert sentence_split("Hi Mr. Lee. It costs 3.5 k! OK?") == ["Hi Mr. Lee.", "It costs 3.5 k!", "OK?"]
    chinese = sentence_split("太贵了。能便宜点吗？我们预算有限；", "zh-CN")
    assert chinese == ["太贵了。", "能便宜点吗？", "我们预算有限；"]
    buffer = SentenceBuffer("en")
    released = [s for token in ("That is", " fine. The price", " is 2.", "5 k.") for s in buffer.push(token)]
    assert released == ["That is fine."]
    assert buffer.flush() == ["The price is 2.5 k."]


# --- ASR garbage -----------------------------------------------------------------------------

def test_it_returns_an_empty_transcript_for_empty_short_or_silent_audio(asr):
    for samples in (np.zeros(0, np.float32), speak("Yes")[:800], silence(1000)):
        transcript = asr.transcribe(samples, language="en")
        assert transcript.is_empty and transcript.confidence == 0.0


def test_it_rejects_nan_audio_with_a_clear_message(asr):
    bad = speak("Hello")
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        asr.transcribe(bad, language="en")


def test_it_refuses_chinese_on_the_english_only_model(asr):
    with pytest.raises(UnsupportedLanguage, match="English-only"):
        asr.transcribe(speak("你好", language="zh-CN"), language="zh-CN")


def test_it_names_known_engines_when_asked_for_an_unknown_one():
    with pytest.raises(ValueError, match="faster_whisper"):
        get_asr_engine("nope")


# --- VAD -------------------------------------------------------------------------------------

def test_it_endpoints_speech_silence_speech_at_the_right_times():
    first = speak("I think the price is too high for us.")
    second = speak("Can you do better on the discount?")
    floor = noise(5000, level_dbfs=-60)
    pause_ms, tail_ms = 1500, 1200
    stream = np.concatenate([silence(500), first, silence(pause_ms), second, silence(tail_ms)])
    stream = stream + np.resize(floor, stream.shape)
    first_at = RATE // 2
    second_at = first_at + len(first) + RATE * pause_ms // 1000
    truth = [
        tuple(x + first_at for x in voiced_span(first)),
        tuple(x + second_at for x in voiced_span(second)),
    ]

    config = EndpointerConfig(end_silence_ms=600)
    detector = SpeechDetector(get_vad_model(), config)
    events = [e for frame in frames(stream) for e in detector.feed(frame)]
    tolerance = int(0.1 * RATE)

    starts = [e for e in events if e.kind == "speech_start"]
    ends = [e for e in events if e.kind == "speech_end"]
    assert len(starts) == 2 and len(ends) == 2, events
    assert not [e for e in events if e.kind == "speech_discarded"]
    for (t_start, t_end), start, end in zip(truth, starts, ends, strict=True):
        assert abs(start.sample - t_start) <= tolerance
        assert abs(end.end_sample - t_end) <= tolerance
        assert end.start_sample == start.sample
        # the turn is declared after the configured hang-over, not much later
        assert abs((end.detected_at - end.end_sample) - 600 * RATE // 1000) <= tolerance
        began = [e for e in events if e.kind == "silence_began" and e.sample == end.end_sample]
        assert began and began[0].detected_at < end.detected_at


def test_it_finds_no_speech_in_silence_or_noise():
    detector = SpeechDetector(get_vad_model())
    quiet = np.concatenate([silence(1000), noise(2000, level_dbfs=-30), noise(1000, level_dbfs=-60, seed=1)])
    events = [e for frame in frames(quiet) for e in detector.feed(frame)]
    assert events == []
    assert not detector.in_speech


def test_it_scores_the_same_whatever_the_chunking():
    speech = np.concatenate([speak("Send the proposal."), silence(300)])
    one_shot = get_vad_model().create_stream().feed(speech)
    streamed = get_vad_model().create_stream()
    probs = np.concatenate([streamed.feed(c) for c in np.array_split(speech, 37)])
    assert len(one_shot) == len(speech) // 512
    np.testing.assert_allclose(probs, one_shot, atol=1e-4)
    assert one_shot.max() > 0.9


def test_a_quiet_line_between_turns_waits_for_the_model_and_every_score_is_the_same(monkeypatch):
    """Deferred scoring (silero.GATE_PEAK): between turns, digital silence is scored 0 at once and
    run through Silero later, in one batch with the next windows, so every score the model gives
    and every endpointing event are exactly those of the model run window by window; a pause inside
    a turn always runs the model. The long silences matter: Silero remembers them for seconds."""
    from media_pipeline.engines.vad import silero

    line = np.concatenate([silence(3000), speak("Send the proposal."), silence(700),
                           speak("We start next week."), silence(4000), speak("Okay."), silence(1000)])

    def run() -> tuple[list, np.ndarray, SpeechDetector]:
        detector = SpeechDetector(get_vad_model(), EndpointerConfig(end_silence_ms=600))
        events, probs = [], []
        for frame in frames(line, ms=32):
            events += detector.feed(frame)
            probs.append(detector.last_probs)
        return events, np.concatenate(probs), detector

    deferred_events, deferred_probs, deferred = run()
    monkeypatch.setattr(silero, "GATE_PEAK", 0.0)
    events, probs, plain = run()
    assert plain.stream.windows_deferred == 0
    assert deferred.stream.windows_deferred >= (3000 + 4000 - 2 * 600) * 16 // 512
    assert deferred.stream.deferred_voiced == 0
    assert deferred_events == events and len([e for e in events if e.kind == "speech_end"]) == 3
    ran = deferred_probs > 0
    np.testing.assert_allclose(deferred_probs[ran], probs[ran], atol=1e-5)
    assert (probs[~ran] < 0.1).all()  # what waited for the model was silence to the model too


def test_a_faint_talker_is_still_heard_and_noise_is_still_scored(monkeypatch):
    phrase = speak("Send the proposal.")
    faint = np.concatenate([silence(500), phrase / np.abs(phrase).max() * 10 ** (-50 / 20), silence(300)])
    detector = SpeechDetector(get_vad_model())
    events = [e for frame in frames(faint) for e in detector.feed(frame)]
    assert [e.kind for e in events][:1] == ["speech_start"]
    room = get_vad_model().create_stream()
    room.defer_ok = True
    room.feed(noise(1000, level_dbfs=-55))
    assert room.windows_deferred == 0  # a room's hiss is above the gate: the model hears it


def test_the_loop_may_score_a_hop_only_between_turns_on_a_quiet_line():
    detector = SpeechDetector(get_vad_model(), EndpointerConfig(end_silence_ms=600))
    hop = silence(32)
    assert detector.idle_for(hop)
    assert not detector.idle_for(noise(32, level_dbfs=-40))
    for frame in frames(np.concatenate([speak("Send the proposal."), silence(100)])):
        detector.feed(frame)
    assert detector.in_speech and not detector.idle_for(hop)  # a pause inside a turn runs the model
    for frame in frames(silence(2000)):
        detector.feed(frame)
    assert not detector.in_speech
    # An idle line runs the model once per MAX_DEFERRED windows (then on the VAD thread), not never.
    from media_pipeline.engines.vad.silero import MAX_DEFERRED

    idle = 0
    while detector.idle_for(silence(32)):
        detector.feed(silence(32))
        idle += 1
    assert 0 < idle <= MAX_DEFERRED
    detector.feed(silence(32))  # the hop that runs the model over every deferred window
    assert detector.idle_for(hop)


def test_it_rejects_nan_in_the_vad_stream():
    with pytest.raises(ValueError, match="NaN"):
        get_vad_model().create_stream().feed(np.full(600, np.nan, np.float32))


def test_it_discards_a_blip_and_reports_a_resumed_pause():
    ep = Endpointer(EndpointerConfig(start_ms=64, end_silence_ms=320, min_speech_ms=250))
    blip = ep.process([0.9, 0.9, 0.9] + [0.0] * 12)
    assert [e.kind for e in blip] == ["speech_start", "silence_began", "speech_discarded"]
    ep.reset()
    talk = ep.process([0.9] * 20 + [0.1] * 5 + [0.9] * 5 + [0.1] * 12)
    assert [e.kind for e in talk] == [
        "speech_start", "silence_began", "speech_resumed", "silence_began", "speech_end",
    ]
    assert talk[-1].start_sample == 0 and talk[-1].end_sample == 30 * 512


# --- audio helpers ---------------------------------------------------------------------------

def test_it_keeps_the_signal_through_a_streaming_resample_round_trip():
    speech = speak("Let me check with my manager.")
    up, down = audio.Resampler(RATE, 48000), audio.Resampler(48000, RATE)
    wide = np.concatenate([up.process(f) for f in frames(speech)] + [up.flush()])
    assert abs(len(wide) - 3 * len(speech)) <= 3
    back = np.concatenate([down.process(f) for f in frames(wide, 48000)] + [down.flush()])
    n = min(len(back), len(speech))
    assert abs(len(back) - len(speech)) <= 3
    assert np.corrcoef(back[:n], speech[:n])[0, 1] > 0.99


def test_it_resamples_espeak_rate_and_downmixes_stereo():
    tone = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32) * 0.5
    assert abs(len(audio.resample(tone, 22050, RATE)) - RATE) <= 2
    stereo = np.stack([tone, tone])
    assert np.allclose(audio.downmix(stereo), tone)
    interleaved = audio.float32_to_pcm16(stereo.T.reshape(-1))
    assert audio.downmix(interleaved, channels=2).dtype == np.int16
    assert len(audio.to_asr_input(interleaved, 22050, channels=2)) == pytest.approx(RATE, abs=2)


def test_decoded_webrtc_frames_become_the_same_16k_mono_whatever_their_layout_or_timestamps():
    """What WebRTC's inbound stage does with aiortc's frames: 48 kHz packed s16 stereo (Opus) or
    8 kHz mono (PCMA), timestamps with a gap, the layout changing mid-stream."""
    import av

    speech = speak_pcm16("Let me check with my manager.", rate=48000)
    converter = audio.FrameConverter(RATE)

    def frame(pcm: np.ndarray, layout: str, rate: int, pts: int) -> av.AudioFrame:
        packed = np.stack([pcm, pcm], axis=1).reshape(1, -1) if layout == "stereo" else pcm.reshape(1, -1)
        made = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
        made.sample_rate, made.pts = rate, pts
        return made

    pieces = [speech[i : i + 960] for i in range(0, len(speech) - 960 + 1, 960)]
    got = np.concatenate([converter.convert(frame(p, "stereo", 48000, i * 960 + (5000 if i > 20 else 0)))
                          for i, p in enumerate(pieces)])
    reference = audio.resample(np.concatenate(pieces), 48000, RATE)  # mono in, so no downmix
    n = min(len(got), len(reference))
    assert abs(len(got) - len(reference)) <= 16  # the filter's delay, nothing inserted at the gap
    assert np.corrcoef(got[:n], reference[:n])[0, 1] > 0.99
    assert np.abs(got).max() == pytest.approx(np.abs(reference).max(), rel=0.02)  # (L + R) / 2, not 3 dB up
    narrow = audio.float32_to_pcm16(audio.resample(speech, 48000, 8000))
    after = converter.convert(frame(narrow[:160], "mono", 8000, 0))  # PCMA after a renegotiation
    assert after.dtype == np.float32 and 0 < after.size <= 320


def test_it_round_trips_pcm16_wav_and_levels(tmp_path):
    pcm = speak_pcm16("Deal.")
    assert np.array_equal(audio.float32_to_pcm16(audio.pcm16_to_float32(pcm.tobytes())), pcm)
    samples, rate = audio.read_wav(audio.write_wav(tmp_path / "deal.wav", pcm, RATE))
    assert rate == RATE and np.array_equal(audio.float32_to_pcm16(samples), pcm)
    assert audio.dbfs(silence(20)) == audio.DBFS_FLOOR
    assert audio.dbfs(np.full(160, 0.5, np.float32)) == pytest.approx(-6.02, abs=0.01)
    assert audio.float32_to_pcm16(np.array([2.0, -2.0]))[0] == 32767


# --- executor --------------------------------------------------------------------------------

def sample(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind}) or 0.0


def test_it_raises_engine_busy_when_the_queue_is_full():
    gate = threading.Event()
    with BoundedExecutor("test-raise", max_workers=1, max_queue=1) as ex:
        running, queued = ex.submit(gate.wait), ex.submit(gate.wait)
        with pytest.raises(EngineBusy, match="all 2 slots"):
            ex.submit(gate.wait)
        gate.set()
        assert running.result(1) and queued.result(1)
        assert ex.submit(lambda: 42).result(1) == 42


def test_it_waits_for_a_slot_then_gives_up_after_the_timeout():
    gate = threading.Event()
    with BoundedExecutor("test-wait", max_workers=1, max_queue=0, block=True, timeout=0.1) as ex:
        ex.submit(gate.wait)
        started = time.monotonic()
        with pytest.raises(EngineBusy, match="after waiting"):
            ex.submit(gate.wait)
        assert time.monotonic() - started >= 0.09
        threading.Timer(0.05, gate.set).start()
        assert ex.submit(lambda: "late").result(1) == "late"


def test_it_forgets_cancelled_queued_tasks():
    kind = "test-cancel"
    gate = threading.Event()
    ex = BoundedExecutor(kind, max_workers=1, max_queue=1)
    ex.submit(gate.wait)
    pending = ex.submit(time.sleep, 0)
    assert pending.cancel()
    assert sample("lingecho_engine_queue_depth", kind) == 0
    gate.set()
    ex.shutdown()


def test_it_awaits_a_slot_without_blocking_the_event_loop():
    gate = threading.Event()

    async def scenario() -> tuple[list[str], int]:
        ex = BoundedExecutor("test-async", max_workers=1, max_queue=0, block=True, timeout=2)
        first = asyncio.ensure_future(ex.run(gate.wait))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(ex.run(lambda: "second"))
        ticks = 0
        for _ in range(10):  # the loop keeps ticking while `second` waits for its slot
            await asyncio.sleep(0.005)
            ticks += 1
        assert not second.done()
        gate.set()
        results = [str(await first), await second]
        ex.shutdown()
        return results, ticks

    results, ticks = asyncio.run(scenario())
    assert results == ["True", "second"] and ticks == 10


def test_it_moves_the_executor_metrics():
    kind = "test-metrics"
    gate = threading.Event()
    before = sample("lingecho_engine_task_seconds_count", kind)
    with BoundedExecutor(kind, max_workers=1, max_queue=1) as ex:
        ex.submit(gate.wait)
        ex.submit(time.sleep, 0.01)
        time.sleep(0.02)
        assert sample("lingecho_engine_queue_depth", kind) == 1
        assert sample("lingecho_engine_in_flight", kind) == 1
        with pytest.raises(EngineBusy):
            ex.submit(time.sleep, 0)
        gate.set()
    assert sample("lingecho_engine_task_seconds_count", kind) == before + 2
    assert sample("lingecho_engine_rejected_total", kind) >= 1
    assert sample("lingecho_engine_queue_depth", kind) == 0
    assert sample("lingecho_engine_in_flight", kind) == 0


def test_it_measures_event_loop_lag():
    async def stall() -> None:
        monitor = asyncio.ensure_future(monitor_event_loop_lag(interval=0.01, loop_name="test"))
        await asyncio.sleep(0.03)
        time.sleep(0.1)  # a blocking call on the loop: exactly what the monitor must catch
        await asyncio.sleep(0.03)
        monitor.cancel()

    before = REGISTRY.get_sample_value("lingecho_event_loop_lag_hist_seconds_sum", {"loop": "test"}) or 0.0
    asyncio.run(stall())
    after = REGISTRY.get_sample_value("lingecho_event_loop_lag_hist_seconds_sum", {"loop": "test"})
    assert after - before >= 0.08


# --- VAD batching across calls ------------------------------------------------------------------

def test_one_vad_pass_scores_every_waiting_call_and_keeps_each_calls_state():
    """Six calls' hops queued while the VAD thread is busy go in one pass, and each call's Silero
    state is its own: the probabilities equal scoring each stream alone, hop by hop."""
    from media_pipeline.vad_batch import VADBatcher

    model = get_vad_model()
    speech = speak("We close the quarter on Friday, so I need the numbers today.")
    clips = [np.concatenate([silence(200 * k), speech, silence(600)]) for k in range(6)]
    hop = 512 * 3
    hops = [[clip[i : i + hop] for i in range(0, len(clip), hop)] for clip in clips]
    expected = []
    for parts in hops:
        alone = model.create_stream()
        expected.append(np.concatenate([alone.feed(p) for p in parts]))

    async def run() -> tuple[list[np.ndarray], VADBatcher]:
        with BoundedExecutor("vad-batch-test", max_workers=1, max_queue=16, block=True, timeout=30) as pool:
            batcher = VADBatcher(pool)
            streams = [model.create_stream() for _ in hops]
            gate = threading.Event()
            pool.submit(gate.wait, 30)  # the VAD thread is busy: the first hops all queue up
            firsts = [asyncio.ensure_future(batcher.score(s.feed, parts[0]))
                      for s, parts in zip(streams, hops, strict=True)]
            await asyncio.sleep(0.05)
            gate.set()
            got = [[p] for p in await asyncio.gather(*firsts)]
            assert (batcher.passes, batcher.hops) == (1, len(hops))

            async def rest(stream, parts, out):
                for part in parts[1:]:
                    out.append(await batcher.score(stream.feed, part))

            await asyncio.gather(*(rest(s, parts, out) for s, parts, out in zip(streams, hops, got, strict=True)))
            return [np.concatenate(out) for out in got], batcher

    got, batcher = asyncio.run(run())
    assert batcher.hops == sum(len(parts) for parts in hops)
    for mine, alone in zip(got, expected, strict=True):
        np.testing.assert_allclose(mine, alone, atol=1e-5)
        assert mine.max() > 0.8  # the speech was heard, not just zeros compared with zeros


def test_a_failing_hop_fails_only_its_own_call():
    from media_pipeline.vad_batch import VADBatcher

    model = get_vad_model()

    async def run() -> tuple[Exception | None, np.ndarray]:
        with BoundedExecutor("vad-batch-fail", max_workers=1, max_queue=4, block=True, timeout=30) as pool:
            batcher = VADBatcher(pool)
            bad, good = model.create_stream(), model.create_stream()
            broken = np.full(1024, np.nan, dtype=np.float32)
            results = await asyncio.gather(batcher.score(bad.feed, broken), batcher.score(good.feed, speak("Hello.")),
                                           return_exceptions=True)
            return results[0], results[1]

    error, probs = asyncio.run(run())
    assert isinstance(error, ValueError) and "NaN" in str(error)
    assert isinstance(probs, np.ndarray) and probs.size > 0


def test_a_full_vad_queue_refuses_the_hop():
    from media_pipeline.vad_batch import VADBatcher

    async def run() -> None:
        with BoundedExecutor("vad-batch-full", max_workers=1, max_queue=1, block=True, timeout=30) as pool:
            batcher = VADBatcher(pool)  # capacity 2
            gate = threading.Event()
            pool.submit(gate.wait, 30)
            waiting = [asyncio.ensure_future(batcher.score(lambda x: x, k)) for k in range(2)]
            await asyncio.sleep(0.01)
            with pytest.raises(EngineBusy):
                await batcher.score(lambda x: x, 2)
            gate.set()
            assert await asyncio.gather(*waiting) == [0, 1]

    asyncio.run(run())


def test_the_engine_pool_leaves_numpys_blas_one_thread_that_does_not_spin():
    from media_pipeline import engine_pool
    from media_pipeline.native_threads import blas_threads, limit_blas_threads

    limit_blas_threads(2)  # numpy's own start on this two-core machine (a worker thread that spins)
    saved, engine_pool._engines = engine_pool._engines, None  # the pool sets it when it is created
    try:
        engine_pool.get_engines()
    finally:
        engine_pool._engines = saved or engine_pool._engines
    assert blas_threads() and set(blas_threads()) == {1}
