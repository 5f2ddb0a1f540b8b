"""The listening stage with fakes at its ports: a VAD model that hears loud windows as speech and an
ASR engine that says what it was given. Segmenting, the pre-roll, finals, and failed finals."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines
from media_pipeline.engines.asr.base import ASREngine, ASRError, Transcript
from media_pipeline.executor import BoundedExecutor, EngineBusy
from media_pipeline.listening import PREROLL_SAMPLES, TAIL_SAMPLES, Listening, heard

WINDOW = 512
SPEECH = 0.5


class LoudnessVAD:
    """A VAD model whose streams call a 512-sample window speech when it is loud."""

    sample_rate = 16000
    window_samples = WINDOW

    def create_stream(self) -> LoudnessStream:
        return LoudnessStream()


class LoudnessStream:
    sample_rate = 16000
    window_samples = WINDOW

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        buf = np.concatenate([self._pending, samples])
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW:]
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        return (np.abs(windows).mean(axis=1) > 0.1).astype(np.float32) * 0.9


class EchoASR(ASREngine):
    """Says how many samples it was given, and on which thread it ran."""

    name = "echo"

    def __init__(self) -> None:
        self.heard: list[np.ndarray] = []
        self.threads: list[str] = []

    def transcribe(self, audio: np.ndarray, *, language: str, word_timestamps: bool = False,
                   beam_size: int = 1) -> Transcript:
        self.heard.append(audio)
        self.threads.append(threading.current_thread().name)
        return Transcript(text=f" {audio.size} samples ", confidence=0.8, language=language,
                          duration_s=audio.size / 16000)


class BrokenASR(ASREngine):
    name = "broken"

    def transcribe(self, audio: np.ndarray, *, language: str, word_timestamps: bool = False,
                   beam_size: int = 1) -> Transcript:
        raise ASRError("the provider refused: HTTP 401 for key sk-live-0123456789abcdef")


def engines(asr: ASREngine) -> Engines:
    def pool(kind: str) -> BoundedExecutor:
        return BoundedExecutor(kind, max_workers=1, max_queue=4, block=True, timeout=5)

    return Engines(asr=asr, tts=None, vad=LoudnessVAD(), asr_pool=pool("asr"), vad_pool=pool("vad"),
                   tts_pool=pool("tts"), decode_pool=pool("chunk-decode"))


def windows(n: int, level: float = 0.0) -> np.ndarray:
    return np.full(n * WINDOW, level, dtype=np.float32)


@pytest.fixture
def ears() -> Listening:
    return Listening(engines(EchoASR()), vad_threshold=0.5, end_silence_ms=200, max_utterance_ms=30000)


def test_it_cuts_an_utterance_out_with_its_pre_roll_and_tail(ears):
    segments = ears.feed(windows(30)) + ears.feed(windows(40, SPEECH)) + ears.feed(windows(30))
    assert len(segments) == 1
    segment = segments[0]
    assert (segment.start_sample, segment.end_sample) == (30 * WINDOW, 70 * WINDOW)
    assert segment.audio.size == PREROLL_SAMPLES + 40 * WINDOW + TAIL_SAMPLES
    assert not segment.audio[:PREROLL_SAMPLES].any(), "the pre-roll is the silence before the voice"
    assert (segment.audio[PREROLL_SAMPLES : PREROLL_SAMPLES + 40 * WINDOW] == SPEECH).all()


def test_it_finds_the_pre_roll_when_the_speech_starts_in_the_first_flush(ears):
    (segment,) = ears.feed(np.concatenate([windows(3), windows(40, SPEECH), windows(30)]))
    assert segment.audio.size == 3 * WINDOW + 40 * WINDOW + TAIL_SAMPLES, "the pre-roll stops at the stream's start"


def test_it_ignores_a_cough(ears):
    assert ears.feed(np.concatenate([windows(10), windows(4, SPEECH), windows(30)])) == []


def test_it_closes_an_open_utterance_when_the_stream_pauses(ears):
    assert ears.feed(np.concatenate([windows(10), windows(40, SPEECH)])) == []
    (segment,) = ears.finish()
    assert (segment.start_sample, segment.end_sample) == (10 * WINDOW, 50 * WINDOW)


def test_it_keeps_only_the_last_seconds_between_utterances(ears):
    for _ in range(20):
        ears.feed(windows(31))  # ~1 s of silence each
    assert ears.total - ears.kept_from <= 2 * 16000 + 31 * WINDOW


def test_it_keeps_an_open_utterance_from_its_pre_roll(ears):
    for _ in range(5):
        ears.feed(windows(40))
    start = 200 * WINDOW
    for _ in range(10):
        ears.feed(windows(40, SPEECH))  # 12.8 s of speech: far more than the seconds kept between turns
    assert start - PREROLL_SAMPLES - 40 * WINDOW < ears.kept_from <= start - PREROLL_SAMPLES
    (segment,) = ears.finish()
    assert segment.audio.size == PREROLL_SAMPLES + 400 * WINDOW, "nothing after its end has arrived: no tail"


async def test_it_decodes_a_final_on_the_pools_asr_executor(ears):
    (segment,) = ears.feed(np.concatenate([windows(10), windows(40, SPEECH), windows(30)]))
    transcript = await ears.transcribe(segment.audio, language="en")
    said = heard(transcript, language="en", start_ms=1200, end_ms=2480)
    assert said.text == f"{segment.audio.size} samples" and said.confidence == 0.8
    assert (said.start_ms, said.end_ms, said.language) == (1200, 2480, "en")
    assert ears.engines.asr.threads == ["engine-asr_0"], "never on the event loop"


async def test_a_failed_final_is_ERR_ASR_FAILED_with_the_reason_and_no_secret():
    ears = Listening(engines(BrokenASR()), vad_threshold=0.5, end_silence_ms=200, max_utterance_ms=30000)
    with pytest.raises(ASRError) as raised:
        await ears.transcribe(windows(40, SPEECH), language="zh-CN")
    failure = ears.failure(raised.value, language="zh-CN")
    assert failure.code == ErrorCode.ASR_FAILED
    assert failure.details["engine"] == "broken" and failure.details["language"] == "zh-CN"
    assert "401" in failure.details["reason"] and "sk-live-0123456789abcdef" not in str(failure)


def test_a_busy_asr_executor_asks_the_trainee_to_repeat_later(ears):
    failure = ears.failure(EngineBusy("asr", 6), language="en")
    assert failure.code == ErrorCode.RATE_LIMIT and failure.details == {"retry_after": 2000}


@pytest.mark.parametrize(("text", "said"), [(" .", ""), ("...", ""), ("♪", ""), ("Okay.", "Okay."), ("好。", "好。"),
                                            ("15%.", "15%.")])
def test_a_final_of_marks_only_is_no_words(text, said):
    """Whisper writes "." for a burst of noise: that final is empty (no turn, no reply), not a turn."""
    transcript = Transcript(text=text, confidence=0.5, language="en", duration_s=1.0)
    assert transcript.is_empty is (said == "")
    assert heard(transcript, language="en", start_ms=0, end_ms=1000).text == said
