"""The suite's own test speech (tests/audio_fixtures.py) is reproducible: a test hears the same
audio alone and in the full suite, whatever was synthesised before it in the process."""

from __future__ import annotations

import numpy as np

from media_pipeline.engines.tts.espeak import EspeakTTSEngine
from tests.audio_fixtures import speak, spoken

TEXT = "Our finance team closes the books every month."


def _in_process(text: str) -> np.ndarray:
    return np.concatenate(list(EspeakTTSEngine().synthesize(text)))


def test_the_same_text_gives_the_same_samples_whatever_was_said_before():
    first = speak(TEXT)
    _in_process("Something else entirely, said at another speed.")
    assert np.array_equal(speak(TEXT + " "), first)  # another cache entry, synthesised again
    whole, words = spoken(TEXT)
    assert np.array_equal(whole, first) and [char for char, _ in words][:3] == [0, 4, 12]


def test_the_library_in_a_process_that_keeps_talking_does_not():
    """Why the fixtures synthesise in a fresh process: in one process the same text drifts."""
    takes = {_in_process(TEXT).tobytes() for _ in range(3)}
    assert len(takes) > 1


def test_numbered_takes_differ_and_each_is_reproducible():
    again, _ = spoken(TEXT, take=1)  # synthesised apart from speak's take 1, in another fresh process
    assert np.array_equal(speak(TEXT, take=1), again)
    assert not np.array_equal(again, speak(TEXT))
