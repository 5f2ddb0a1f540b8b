"""Recordings stored in segments as the call goes, joined at its end or, after a crash, by the after-call job."""

from __future__ import annotations

import asyncio
import time
import wave

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.storage import default_storage

from media_pipeline import recording
from media_pipeline.recording import RATE, CallRecorder
from roleplay import after_call, recording_segments, services
from roleplay.after_call.archive import archive_names
from roleplay.models import RealtimeSession
from roleplay.recording_segments import list_segments, raw_recording_name
from tests.roleplay.test_s3_storage import s3, s3_endpoint  # noqa: F401 - moto fixtures (skip without moto_server)

pytestmark = pytest.mark.django_db(transaction=True)


def tone(ms: int, level: int = 8000) -> np.ndarray:
    return (np.sin(np.arange(ms * RATE // 1000) / 5) * level).astype(np.int16)


def stored_frames(name: str) -> np.ndarray:
    with default_storage.open(name, "rb") as handle, wave.open(handle) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, RATE)
        return np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2)


def heard_ms(frames: np.ndarray, column: int) -> tuple[int, int]:
    """First and last audible ms of one side."""
    active = np.flatnonzero(np.abs(frames[:, column]) > 100)
    return int(active[0] * 1000 // RATE), int(active[-1] * 1000 // RATE)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def live_session(alice, scenario) -> RealtimeSession:
    return services.session_create(trainee=alice, scenario=scenario, transport=RealtimeSession.Transport.WEBRTC)


def test_it_stores_the_stretches_the_session_clock_has_passed(live_session):
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(2500), at_ms=200)  # 0.2 s - 2.7 s
    recorder.add("buyer", tone(500), at_ms=3000)
    recorder.store(recorder.take_due(now_ms=2500))  # only the first stretch is 1 s behind the clock
    assert [s.start_sample for s in list_segments(live_session.pk)] == [200 * RATE // 1000]
    recorder.store(recorder.take_due(now_ms=4100))
    assert len(list_segments(live_session.pk)) == 3
    name = recorder.save()
    assert name == raw_recording_name(live_session.pk)
    assert list_segments(live_session.pk) == []  # joined, then deleted
    frames = stored_frames(name)
    assert len(frames) == 3500 * RATE // 1000
    assert heard_ms(frames, 0) == (200, 2699) and heard_ms(frames, 1) == (3000, 3499)
    assert np.array_equal(frames[200 * 16: 2700 * 16, 0], tone(2500))  # sample-exact across three segments


def test_a_late_write_into_a_stored_stretch_is_kept_as_another_part(live_session):
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(300), at_ms=100)
    recorder.store(recorder.take_due(now_ms=2100))
    recorder.add("buyer", tone(300), at_ms=500)  # arrives after its stretch was stored
    recorder.store(recorder.take_due(now_ms=2200))
    assert [s.part for s in list_segments(live_session.pk)] == [0, 1]
    frames = stored_frames(recorder.save())
    assert heard_ms(frames, 0) == (100, 399) and heard_ms(frames, 1) == (500, 799)


def test_a_resumed_call_continues_the_stored_recording(live_session):
    first = CallRecorder(live_session.pk, segment_seconds=1)
    first.add("trainee", tone(400), at_ms=0)
    first.save()
    second = CallRecorder(live_session.pk, segment_seconds=1, continue_stored=True)
    second.add("buyer", tone(400), at_ms=5000)
    frames = stored_frames(second.save())
    assert heard_ms(frames, 0) == (0, 399) and heard_ms(frames, 1) == (5000, 5399)


def test_a_segment_that_cannot_be_stored_is_retried_with_the_next_batch(live_session, monkeypatch):
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(300), at_ms=0)
    real = recording_segments.store_segment

    def outage(*args, **kwargs):
        raise OSError("storage unavailable")

    monkeypatch.setattr(recording_segments, "store_segment", outage)
    recorder.store(recorder.take_due(now_ms=2100))
    assert list_segments(live_session.pk) == []
    monkeypatch.setattr(recording_segments, "store_segment", real)
    recorder.store(recorder.take_due(now_ms=2200))
    assert len(list_segments(live_session.pk)) == 1


async def test_the_writer_task_stores_segments_while_the_call_goes(live_session, monkeypatch):
    monkeypatch.setattr(recording, "LATE_AUDIO_MS", 100)
    recorder = CallRecorder(live_session.pk, segment_seconds=0.5)
    t0 = time.monotonic()
    recorder.start(lambda: int((time.monotonic() - t0) * 1000))
    recorder.add("trainee", tone(1400), at_ms=0)
    before = recording.WRITE_STATS.segments
    await asyncio.sleep(1.8)
    stored = await asyncio.to_thread(list_segments, live_session.pk)
    assert len(stored) >= 2 and recording.WRITE_STATS.segments - before >= 2
    assert recording_segments.writer_active(live_session.pk)  # the after-call job leaves them to this writer
    await recorder.stop_writing()
    frames = stored_frames(await asyncio.to_thread(recorder.save))
    assert heard_ms(frames, 0) == (0, 1399)
    assert not recording_segments.writer_active(live_session.pk)


def test_the_after_call_job_joins_what_a_killed_worker_left(live_session, settings):
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(2000), at_ms=0)
    recorder.add("buyer", tone(1000), at_ms=2500)  # in the stretch being filled when the worker dies
    recorder.store(recorder.take_due(now_ms=3000))  # 0-2 s stored: then SIGKILL (no save, lease expires)
    cache.clear()
    services.session_end(session=live_session, reason="dropped")
    # Eager in the embedded default; with a broker (scaled pass) nobody consumes it here: run it as a worker would.
    after_call.session_process(session_id=live_session.pk)
    live_session.refresh_from_db()
    assert live_session.processing == "done", live_session.processing_detail
    assert live_session.recording.name == archive_names(live_session.pk)["recording"]
    assert live_session.audio_metadata["recording"]["recovered_segments"] == 2
    assert list_segments(live_session.pk) == []
    from roleplay.after_call.recording import load_recording

    frames = load_recording(live_session.recording.name)
    assert 1900 <= len(frames) * 1000 // RATE <= 2100  # everything up to the last stored segment


def test_the_after_call_job_leaves_a_live_writers_segments_to_it(live_session):
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(1500), at_ms=0)
    recorder.store(recorder.take_due(now_ms=2100))  # holds the lease
    started = time.monotonic()
    assert recording_segments.recover_segments(live_session.pk, wait_seconds=0.5) is not None
    assert time.monotonic() - started >= 0.5  # it waited for the writer before joining its leftovers


def test_nothing_recorded_stores_nothing(live_session):
    assert CallRecorder(live_session.pk).save() is None
    assert not default_storage.exists(raw_recording_name(live_session.pk))


@pytest.mark.slow
def test_segments_are_stored_and_joined_on_s3(s3, live_session):  # noqa: F811 - the fixture
    recorder = CallRecorder(live_session.pk, segment_seconds=1)
    recorder.add("trainee", tone(2500), at_ms=0)
    recorder.store(recorder.take_due(now_ms=3000))
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="lingecho-test")["Contents"]}
    assert len(keys) == 2 and all("/segments/" in k for k in keys)
    name = recorder.save()
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="lingecho-test")["Contents"]}
    assert keys == {name}
    assert heard_ms(stored_frames(name), 0) == (0, 2499)
