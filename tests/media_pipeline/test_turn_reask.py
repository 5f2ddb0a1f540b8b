"""The second question: an unsure first answer about a pause is asked again once the pause is
longer (``TURN_REASK_SILENCE_MS``, against ``TURN_REASK_THRESHOLD``), by the endpointer, with the
model's answer started early on the turn executor like the first one."""

from __future__ import annotations

import threading
import time

import pytest

from media_pipeline.executor import BoundedExecutor
from media_pipeline.listening import TURN_PRESPEECH_SAMPLES, Listening
from tests.media_pipeline.test_listening import SPEECH, WINDOW, EchoASR, engines, windows
from tests.media_pipeline.test_turns import ScriptedDetector, ends, run


@pytest.fixture
def reask_settings(settings):
    settings.TURN_ASK_SILENCE_MS = 192  # 6 windows
    settings.TURN_REASK_SILENCE_MS = 384  # 12 windows
    settings.TURN_REASK_THRESHOLD = 0.2
    settings.TURN_PATIENCE_MS = 1024  # 32 windows
    settings.TURN_COMPLETE_THRESHOLD = 0.5
    return settings


def ears_with(detector: ScriptedDetector, *, early: bool = False) -> Listening:
    pool = engines(EchoASR())
    pool.turn = detector
    if early:
        pool.turn_pool = BoundedExecutor("turn", max_workers=1, max_queue=2, block=False)
    return Listening(pool, vad_threshold=0.5, end_silence_ms=400, max_utterance_ms=30000)


@pytest.mark.parametrize("early", [False, True])
def test_a_doubted_finished_sentence_ends_at_the_second_question(reask_settings, early):
    detector = ScriptedDetector(0.3, 0.25)
    ears = ears_with(detector, early=early)
    (end,) = ends(run(ears, windows(20), windows(40, SPEECH), windows(60)))
    assert end.detected_at - end.sample == 12 * WINDOW, "ended at the second question, not the patience"
    decision = Listening.decision(end)
    assert (decision.decision, decision.probability) == ("complete", 0.25)
    first, second = detector.heard
    assert first.size == TURN_PRESPEECH_SAMPLES + 46 * WINDOW
    assert second.size == TURN_PRESPEECH_SAMPLES + 52 * WINDOW, "the model hears the longer pause"
    if early:
        assert (ears.early_started, ears.early_used) == (2, 2), "both answers were ready when asked"


def test_a_confident_incomplete_at_the_second_question_waits_out_the_patience(reask_settings):
    detector = ScriptedDetector(0.3, 0.05)
    ears = ears_with(detector)
    (end,) = ends(run(ears, windows(20), windows(40, SPEECH), windows(60)))
    assert end.detected_at - end.sample == 32 * WINDOW
    assert Listening.decision(end).decision == "patience_expired"
    assert len(detector.heard) == 2, "asked twice, no more"


def test_speech_after_the_first_question_starts_the_questions_over(reask_settings):
    detector = ScriptedDetector(0.3, 0.9)
    ears = ears_with(detector)
    events = run(ears, windows(20), windows(30, SPEECH), windows(8), windows(30, SPEECH), windows(40))
    (end,) = ends(events)
    assert (end.start_sample, end.end_sample) == (20 * WINDOW, 88 * WINDOW), "one turn over the pause"
    assert end.detected_at - end.sample == 6 * WINDOW, "the new pause's first question ended it"
    assert len(detector.heard) == 2


class SlowDetector(ScriptedDetector):
    """Answers only once ``go`` is set: a turn executor running behind on a loaded machine."""

    def __init__(self, *probabilities: float) -> None:
        super().__init__(*probabilities)
        self.go = threading.Event()

    def predict(self, audio, *, text: str = "", language: str = "en"):  # noqa: ANN001 - as the base
        self.go.wait(10)
        return super().predict(audio, text=text, language=language)


def test_an_early_answer_running_late_never_holds_the_vad_thread(reask_settings):
    detector = SlowDetector(0.9)
    ears = ears_with(detector, early=True)
    started = time.monotonic()
    events = run(ears, windows(20), windows(40, SPEECH), windows(10))
    assert time.monotonic() - started < 2.0, "the VAD did not wait for the model"
    assert not ends(events), "no answer yet: the turn is not ended, nor cut"
    detector.go.set()
    deadline = time.monotonic() + 5
    while not ears._early[1].done() and time.monotonic() < deadline:  # noqa: SLF001 - the job in flight
        time.sleep(0.01)
    (end,) = ends(run(ears, windows(20)))
    assert Listening.decision(end).decision == "complete" and end.verdict.probability == 0.9
    assert end.detected_at - end.sample > 6 * WINDOW, "decided when the answer came, a little after the ask point"
