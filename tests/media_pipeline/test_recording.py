from __future__ import annotations

import wave

import numpy as np
import pytest
from django.core.files.storage import default_storage

from media_pipeline.recording import RATE, CallRecorder


@pytest.mark.django_db
def test_it_places_both_sides_on_the_session_timeline():
    recorder = CallRecorder("sess_test")
    tone = (np.sin(np.arange(RATE // 2) / 5) * 10000).astype(np.int16)  # 500 ms
    recorder.add("trainee", tone, at_ms=1000)
    recorder.add("buyer", tone, at_ms=2000)
    name = recorder.save()
    with default_storage.open(name, "rb") as handle, wave.open(handle) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2)
    assert len(frames) == int(2.5 * RATE)
    left_active = np.flatnonzero(frames[:, 0])
    right_active = np.flatnonzero(frames[:, 1])
    assert abs(left_active[0] - RATE) < 10 and abs(right_active[0] - 2 * RATE) < 10
    assert not frames[: RATE, :].any()


def test_it_stops_at_the_size_bound_and_says_so():
    recorder = CallRecorder("sess_bound", max_seconds=1)
    recorder.add("trainee", np.ones(RATE * 2, np.int16))
    assert recorder.truncated and recorder.duration_ms == 1000
    recorder.close()


def test_an_empty_recording_stores_nothing():
    assert CallRecorder("sess_empty").save() is None
