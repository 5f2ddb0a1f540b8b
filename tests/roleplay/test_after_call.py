"""After the call, in eager mode: ending a session archives, re-transcribes and scores it, once."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.management import call_command
from django.utils import timezone

from media_pipeline.recording import CallRecorder, raw_recording_name
from media_pipeline.retranscribe import load_stereo, retranscribe
from roleplay import services
from roleplay.after_call.archive import archive_names
from roleplay.models import RealtimeSession, SessionAnalytics
from roleplay.tasks import process_session, retry_countdown, sweep_sessions
from roleplay.transcription import RetranscribeOptions
from tests.audio_fixtures import speak
from tests.roleplay.recorded_call import make_recorded_session

pytestmark = pytest.mark.usefixtures("eager_celery")

ARTEFACTS = ("recording", "transcript_json", "transcript_txt", "transcript_vtt", "retranscript", "analytics",
             "manifest")




def end(session: RealtimeSession, capture) -> RealtimeSession:
    with capture(execute=True):
        services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)
    session.refresh_from_db()
    return session


def read_json(name: str) -> dict:
    with default_storage.open(name, "rb") as handle:
        return json.loads(handle.read().decode("utf-8"))


def archive_listing(session_id: str) -> list[str]:
    _dirs, files = default_storage.listdir(f"sessions/{session_id}/archive/")
    return sorted(files)


@pytest.fixture
def recorded(alice, scenario):
    return make_recorded_session(trainee=alice, scenario=scenario)


def test_it_archives_every_artefact_when_a_session_ends(recorded, django_capture_on_commit_callbacks, client, alice):
    session = end(recorded, django_capture_on_commit_callbacks)
    names = archive_names(session.pk)

    assert (session.processing, session.processing_progress, session.processing_detail) == ("done", 100, "done")
    assert session.archive_prefix == f"sessions/{session.pk}/archive/"
    for key in ARTEFACTS:
        assert default_storage.exists(names[key]), key
    # The compact copy replaced the raw WAV as the session's recording.
    assert session.recording.name == names["recording"]
    assert not default_storage.exists(raw_recording_name(session.pk))

    with default_storage.open(names["recording"], "rb") as handle:
        audio = load_stereo(handle)
    last_end = session.utterances.order_by("-end_ms").first().end_ms
    assert abs(len(audio) / 16 - last_end) < 200
    trainee_rms, buyer_rms = np.sqrt((audio.astype(np.float64) ** 2).mean(axis=0))
    assert trainee_rms > 100 and buyer_rms > 100  # both sides survived the transcoding

    manifest = read_json(names["manifest"])
    assert set(manifest["files"]) == set(ARTEFACTS) - {"manifest"}
    for entry in manifest["files"].values():
        with default_storage.open(entry["name"], "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry["sha256"]
    assert manifest["files"]["recording"]["content_type"] == "audio/webm"

    transcript = read_json(names["transcript_json"])
    assert [u["speaker"] for u in transcript["utterances"]][:2] == ["buyer", "trainee"]
    with default_storage.open(names["transcript_vtt"], "rb") as handle:
        vtt = handle.read().decode()
    assert vtt.startswith("WEBVTT\n")
    assert "<v Trainee>What does a billing error usually cost you?" in vtt
    with default_storage.open(names["transcript_txt"], "rb") as handle:
        assert "Margaret Chen: By hand, mostly." in handle.read().decode()

    analytics = SessionAnalytics.objects.get(session=session)
    assert analytics.metrics["questions"]["trainee"] == 3
    assert analytics.metrics["next_step_secured"] is True
    assert analytics.metrics["objections"]["raised"] == 1 and analytics.metrics["objections"]["handled"] == 1
    assert [c["key"] for c in analytics.rubric] == ["questions", "next-step"]
    assert analytics.total_score == 100.0
    assert read_json(names["analytics"])["total_score"] == 100.0

    # The re-transcription knows who spoke every word, on the recording's timeline.
    retranscript = analytics.retranscript
    assert retranscript["status"] == "done"
    assert {s["speaker"] for s in retranscript["segments"]} == {"trainee", "buyer"}
    assert "reconcile" in retranscript["text"]["trainee"].lower()
    assert "saving" in retranscript["text"]["trainee"].lower()  # tiny.en hears "savings" or "saving"
    assert "saving" not in retranscript["text"]["buyer"].lower()
    words = [w for s in retranscript["segments"] for w in s["words"]]
    assert words and all(w["end_ms"] >= w["start_ms"] for w in words)
    schedule = next(w for s in retranscript["segments"] if s["speaker"] == "trainee" for w in s["words"]
                    if "schedule" in w["word"].lower())
    said = session.utterances.get(text__contains="schedule a demo")
    assert said.start_ms - 300 <= schedule["start_ms"] <= said.end_ms + 300
    assert read_json(names["retranscript"]) == retranscript

    client.force_login(alice)
    body = client.get(f"/api/sessions/{session.pk}/").json()
    assert body["processing"] == "done" and body["processing_progress"] == 100
    assert body["analytics"]["total_score"] == 100.0


def test_the_archived_copy_keeps_each_side_on_its_own_channel_in_time_and_in_words(tmp_path):
    """The compact copy (SILK at the recording's 16 kHz) must not leak one side into the other, shift
    the timeline, or lose the words: it is what a reviewer plays once the raw WAV is gone."""
    from roleplay.after_call.recording import encode_opus

    said = speak("We could schedule a demo with your finance team next Tuesday.")
    stereo = np.zeros((len(said) + 16000, 2), dtype=np.int16)
    stereo[8000:8000 + len(said), 0] = (said * 32767).astype(np.int16)  # the trainee talks, the buyer is silent
    path = tmp_path / "call.webm"
    encode_opus(stereo, str(path), bitrate=32000)

    back = load_stereo(str(path)).astype(np.float64)
    assert abs(len(back) - len(stereo)) <= 320
    trainee_rms, buyer_rms = np.sqrt((back ** 2).mean(axis=0))
    assert trainee_rms > 300 and buyer_rms < trainee_rms / 300  # ~-56 dB here (as with the old 48 kHz encode)
    original = stereo[:, 0].astype(np.float64)
    window = slice(8000, 8000 + 16000)
    lags = np.correlate(back[window, 0], original[window], "full")
    assert abs(int(np.argmax(lags)) - (16000 - 1)) <= 16  # within 1 ms of the original's timeline
    text = retranscribe(back.astype(np.int16), RetranscribeOptions(cpu_threads=1))["text"]["trainee"].lower()
    assert "schedule a demo" in text and "tuesday" in text, text


def test_it_writes_one_result_when_run_twice(recorded, django_capture_on_commit_callbacks, charlie):
    session = end(recorded, django_capture_on_commit_callbacks)
    first = archive_listing(session.pk)
    services.analytics_override(manager=charlie, session=session, scores={"questions": 40}, total=55.0)

    assert process_session.apply(args=[session.pk]).get() == "skipped"  # already done: a duplicate is a no-op
    assert process_session.apply(args=[session.pk], kwargs={"force": True}).get() == "done"

    assert archive_listing(session.pk) == first == sorted(n.rsplit("/", 1)[1] for n in archive_names(session.pk)
                                                          .values())
    assert SessionAnalytics.objects.filter(session=session).count() == 1
    analytics = SessionAnalytics.objects.get(session=session)
    assert analytics.override_rubric == {"questions": 40.0} and analytics.override_total == 55.0
    assert analytics.effective_total == 55.0 and analytics.total_score == 100.0
    assert read_json(archive_names(session.pk)["analytics"])["override"]["total"] == 55.0
    # The re-run decoded the archived Opus copy (the WAV is gone) and still heard both sides.
    assert analytics.retranscript["status"] == "done"
    assert {s["speaker"] for s in analytics.retranscript["segments"]} == {"trainee", "buyer"}


def test_it_processes_a_typed_session_without_a_recording(alice, scenario, django_capture_on_commit_callbacks):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.utterance_append(session=session, speaker="trainee", text="What does reconciliation cost you?",
                              source="text")
    services.utterance_append(session=session, speaker="buyer", text="About a week a month.", source="text")
    session = end(session, django_capture_on_commit_callbacks)

    assert session.processing == "done"
    names = archive_names(session.pk)
    assert not default_storage.exists(names["recording"])
    assert read_json(names["retranscript"])["status"] == "skipped"
    assert "recording" not in read_json(names["manifest"])["files"]
    with default_storage.open(names["transcript_vtt"], "rb") as handle:
        vtt = handle.read().decode()
    assert "00:00:00.000 --> 00:00:01.000" in vtt or "--> " in vtt  # zero-length typed turns get a 1 s cue
    assert SessionAnalytics.objects.get(session=session).metrics["questions"]["trainee"] == 1


class FlakyStorage(FileSystemStorage):
    """Local storage whose archive writes fail ``failures`` times (-1: always), like a full disk."""

    failures = 0
    attempts = 0

    def _save(self, name, content):
        if "/archive/" in name:
            type(self).attempts += 1
            if type(self).failures:
                type(self).failures -= 1
                raise OSError(28, "No space left on device")
        return super()._save(name, content)


@pytest.fixture
def flaky_storage(settings):
    FlakyStorage.failures = FlakyStorage.attempts = 0
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": f"{__name__}.FlakyStorage"}}
    return FlakyStorage


def test_it_retries_a_failing_storage_write_with_backoff(recorded, django_capture_on_commit_callbacks,
                                                         flaky_storage, settings):
    settings.POSTPROCESS_MAX_RETRIES = 3
    flaky_storage.failures = 2
    session = end(recorded, django_capture_on_commit_callbacks)

    assert session.processing == "done"
    assert flaky_storage.failures == 0
    assert flaky_storage.attempts == 2 + len(ARTEFACTS)  # two failed first writes, then every artefact once
    assert archive_listing(session.pk) == sorted(n.rsplit("/", 1)[1] for n in archive_names(session.pk).values())
    assert [retry_countdown(n) for n in range(4)] == [2, 4, 8, 16]
    settings.POSTPROCESS_RETRY_BACKOFF_MAX_SECONDS = 5
    assert retry_countdown(10) == 5


def test_it_reports_failed_with_the_reason_when_retries_run_out(recorded, django_capture_on_commit_callbacks,
                                                                 flaky_storage, settings):
    settings.POSTPROCESS_MAX_RETRIES = 2
    flaky_storage.failures = -1
    session = end(recorded, django_capture_on_commit_callbacks)

    assert session.processing == "failed"
    assert session.processing_detail.startswith("OSError: [Errno 28] No space left on device")
    assert flaky_storage.attempts == 3  # the first run and two retries, each stopped at its first write
    assert default_storage.exists(raw_recording_name(session.pk))  # nothing is lost: a later re-run can finish
    flaky_storage.failures = 0
    assert process_session.apply(args=[session.pk]).get() == "done"


def test_the_sweeper_processes_sessions_whose_dispatch_was_lost(alice, scenario, settings):
    session = make_recorded_session(trainee=alice, scenario=scenario, turns=[("trainee", "Hello there?")])
    RealtimeSession.objects.filter(pk=session.pk).update(
        state="ended", ended_at=timezone.now() - timedelta(hours=1), end_reason="timeout"
    )  # ended without the on-commit dispatch, as when the broker was down
    fresh = services.session_create(trainee=alice, scenario=scenario, transport="text")
    RealtimeSession.objects.filter(pk=fresh.pk).update(state="ended", ended_at=timezone.now())

    assert sweep_sessions.apply().get()["never_processed"] == 1
    session.refresh_from_db()
    fresh.refresh_from_db()
    assert session.processing == "done"
    assert fresh.processing == "pending"  # inside the grace period its own dispatch may still be queued


def test_purge_recordings_removes_old_audio_and_keeps_transcripts(recorded, alice, scenario,
                                                                  django_capture_on_commit_callbacks):
    old = end(recorded, django_capture_on_commit_callbacks)
    recent = end(make_recorded_session(trainee=alice, scenario=scenario, turns=[("trainee", "Hi?")]),
                 django_capture_on_commit_callbacks)
    RealtimeSession.objects.filter(pk=old.pk).update(ended_at=timezone.now() - timedelta(days=91))

    call_command("purge_recordings")
    call_command("purge_recordings")  # idempotent

    old.refresh_from_db()
    recent.refresh_from_db()
    names = archive_names(old.pk)
    assert not old.recording and not default_storage.exists(names["recording"])
    for key in ("transcript_json", "transcript_txt", "transcript_vtt", "retranscript", "analytics"):
        assert default_storage.exists(names[key])
    manifest = read_json(names["manifest"])
    assert manifest["recording_purged_at"] and "recording" not in manifest["files"]
    assert recent.recording and default_storage.exists(recent.recording.name)


def test_it_skips_retranscription_when_the_model_lacks_the_language():
    stereo = np.zeros((16000, 2), dtype=np.int16)
    result = retranscribe(stereo, RetranscribeOptions(language="zh-CN"))
    assert result["status"] == "skipped" and "zh" in result["reason"]


# --------------------------------------------------------------------------- optional model judge


class FakeChatEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions that scores every criterion 70 (or answers 500)."""

    fail = False
    requests: list[dict] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"auth": self.headers.get("Authorization"), "body": body})
        if type(self).fail:
            self.send_response(500)
            self.end_headers()
            return
        content = json.dumps({"criteria": [
            {"key": "questions", "score": 70, "reason": "Good questions, could go deeper.", "evidence_seq": [2, 4]},
            {"key": "next-step", "score": 70, "reason": "Demo booked.", "evidence_seq": [8, 99]},
        ]})
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_endpoint(settings):
    FakeChatEndpoint.fail, FakeChatEndpoint.requests = False, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChatEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{server.server_port}/v1"
    settings.OPENAI_API_KEY = "sk-test"
    settings.RUBRIC_JUDGE = "llm"
    yield FakeChatEndpoint
    server.shutdown()


def test_it_lets_the_language_model_judge_when_configured(recorded, django_capture_on_commit_callbacks,
                                                          chat_endpoint):
    session = end(recorded, django_capture_on_commit_callbacks)
    analytics = SessionAnalytics.objects.get(session=session)

    assert analytics.metrics["judge"]["kind"] == "llm"
    assert [(c["score"], c["judge"], c["rule_score"]) for c in analytics.rubric] == [(70.0, "llm", 100.0)] * 2
    assert analytics.rubric[1]["evidence_seq"] == [8]  # an utterance that does not exist is dropped
    assert analytics.total_score == 70.0
    assert chat_endpoint.requests[0]["auth"] == "Bearer sk-test"
    assert "[4] trainee: What does a billing error usually cost you?" in (
        chat_endpoint.requests[0]["body"]["messages"][1]["content"])


def test_it_keeps_rule_based_scores_when_the_judge_fails(recorded, django_capture_on_commit_callbacks, chat_endpoint):
    chat_endpoint.fail = True
    session = end(recorded, django_capture_on_commit_callbacks)
    analytics = SessionAnalytics.objects.get(session=session)

    assert session.processing == "done"
    assert analytics.metrics["judge"] == {"kind": "rule", "llm_error": "HTTPStatusError"}
    assert analytics.total_score == 100.0


@pytest.mark.django_db(transaction=True)
def test_without_a_broker_it_runs_on_a_background_thread_not_in_the_caller(alice, scenario, settings):
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = True
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.utterance_append(session=session, speaker="trainee", text="Shall we book a demo?", source="text")
    RealtimeSession.objects.filter(pk=session.pk).update(state="ended", ended_at=timezone.now())

    future = process_session.delay(session.pk)  # what session_end's on-commit dispatch calls

    assert future.result(timeout=60) == "done"
    session.refresh_from_db()
    assert session.processing == "done"
    assert SessionAnalytics.objects.get(session=session).metrics["next_step_secured"] is True


# --------------------------------------------------------------------------- the recording arrives late
# The media worker stores the recording once the peer is closed, after session_end dispatched processing.


def unsaved_call(trainee, scenario, *, extra_ms: int = 0) -> tuple[RealtimeSession, CallRecorder]:
    """A two-turn call whose recording is still in the worker's hands (not yet stored)."""
    session = services.session_create(trainee=trainee, scenario=scenario, transport="webrtc")
    recorder = CallRecorder(session.pk)
    cursor = 300
    for speaker, text in [("trainee", "How do you reconcile invoices today?"), ("buyer", "By hand, mostly.")]:
        pcm = speak(text)
        duration = round(len(pcm) * 1000 / 16000)
        recorder.add(speaker, pcm, at_ms=cursor)
        services.utterance_append(session=session, speaker=speaker, text=text, start_ms=cursor,
                                  end_ms=cursor + duration)
        cursor += duration + 400
    if extra_ms:
        recorder.add("trainee", np.zeros(extra_ms * 16, np.int16), at_ms=cursor)
    return session, recorder


def archived_ms(session_id: str) -> int:
    with default_storage.open(archive_names(session_id)["recording"], "rb") as handle:
        return round(len(load_stereo(handle)) / 16)


def test_a_recording_stored_after_processing_ran_is_processed_again(alice, scenario,
                                                                     django_capture_on_commit_callbacks):
    session, recorder = unsaved_call(alice, scenario)
    session = end(session, django_capture_on_commit_callbacks)
    assert (session.processing, session.recording.name) == ("done", "")  # ran without the recording

    with django_capture_on_commit_callbacks(execute=True):
        name = recorder.save()  # processing is dispatched (and here runs) before the worker attaches
    assert services.session_attach_recording(session_id=session.pk, name=name, audio_metadata={"codec": "pcma"}) \
        is False  # the WAV is archived and gone: never point the session at it

    session.refresh_from_db()
    assert session.recording.name == archive_names(session.pk)["recording"]
    assert default_storage.exists(session.recording.name) and not default_storage.exists(name)
    assert (session.processing, session.processed_recording_version, session.recording_version) == ("done", 1, 1)
    assert session.audio_metadata["codec"] == "pcma"
    assert SessionAnalytics.objects.get(session=session).retranscript["status"] == "done"


def test_a_call_still_being_recorded_is_processed_once_when_its_recording_is_stored(
        alice, scenario, django_capture_on_commit_callbacks, settings):
    from roleplay import recording_segments
    from roleplay.after_call.job import processing_orphans_claim

    session, recorder = unsaved_call(alice, scenario)
    recording_segments.hold_lease(session.pk, writer=recorder.writer, seconds=60)  # the worker is still closing
    with django_capture_on_commit_callbacks(execute=True) as at_end:
        services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)
    assert at_end == []  # not dispatched now: it would run without the recording, then again with it
    settings.POSTPROCESS_SWEEP_GRACE_SECONDS = 0
    assert processing_orphans_claim() == ([], [])  # nor by the sweeper while the writer is alive

    with django_capture_on_commit_callbacks(execute=True) as at_store:
        name = recorder.save()  # joins, releases the lease and dispatches
        services.session_attach_recording(session_id=session.pk, name=name, audio_metadata={})
    session.refresh_from_db()
    assert len(at_store) == 1 and session.processing == "done"
    assert session.recording.name == archive_names(session.pk)["recording"]
    assert SessionAnalytics.objects.get(session=session).retranscript["status"] == "done"


def test_a_recording_whose_writer_died_is_left_to_the_sweeper(alice, scenario, django_capture_on_commit_callbacks,
                                                              settings):
    from roleplay import recording_segments
    from roleplay.after_call.job import processing_orphans_claim

    session, recorder = unsaved_call(alice, scenario)
    recording_segments.hold_lease(session.pk, writer=recorder.writer, seconds=60)
    services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)
    recording_segments.release_lease(session.pk, writer=recorder.writer)  # as when its lease runs out
    assert processing_orphans_claim() == ([session.pk], [])  # at once: no dispatch is queued for it


def test_an_attached_recording_is_processed_once_when_it_arrives_before_the_run(alice, scenario,
                                                                                 django_capture_on_commit_callbacks):
    session, recorder = unsaved_call(alice, scenario)
    services.session_end(session=session, reason="user_requested")  # dispatch lost in the capture below
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        name = recorder.save()
        assert services.session_attach_recording(session_id=session.pk, name=name, audio_metadata={}) is True
    session.refresh_from_db()
    assert len(callbacks) == 1 and session.processing == "done"
    assert session.recording.name == archive_names(session.pk)["recording"]
    assert process_session.apply(args=[session.pk]).get() == "skipped"  # up to date: nothing to redo


def test_a_run_overtaken_by_a_newer_recording_never_loses_it(alice, scenario, django_capture_on_commit_callbacks,
                                                             monkeypatch):
    from roleplay.after_call import steps

    session, first = unsaved_call(alice, scenario)
    services.session_attach_recording(session_id=session.pk, name=first.save(), audio_metadata={})
    _, longer = unsaved_call(alice, scenario, extra_ms=3000)
    longer.session_id = session.pk
    calls: list[str] = []

    def the_worker_stores_a_newer_recording_meanwhile(step: str) -> None:
        calls.append(step)
        if len(calls) == 1:
            name = longer.save()
            services.session_attach_recording(session_id=session.pk, name=name, audio_metadata={})

    monkeypatch.setattr(steps, "_test_pause", the_worker_stores_a_newer_recording_meanwhile)
    session = end(session, django_capture_on_commit_callbacks)

    assert len(calls) == 2  # the overtaken run stopped; the run the new recording dispatched finished
    assert session.recording.name == archive_names(session.pk)["recording"]
    assert not default_storage.exists(raw_recording_name(session.pk))
    assert abs(archived_ms(session.pk) - longer.duration_ms) < 100  # the newer audio, not the first
    assert (session.processed_recording_version, session.recording_version) == (2, 2)


def test_a_run_never_deletes_a_recording_that_is_being_written(recorded, django_capture_on_commit_callbacks,
                                                               monkeypatch):
    from roleplay.after_call import steps

    monkeypatch.setattr(steps, "_test_pause",
                        lambda step: services.session_recording_saving(session_id=recorded.pk))
    session = end(recorded, django_capture_on_commit_callbacks)

    assert session.processing == "done"
    assert default_storage.exists(raw_recording_name(session.pk))  # the worker is replacing it right now
    assert session.recording.name == raw_recording_name(session.pk)


def test_attaching_a_recording_that_is_not_in_storage_keeps_what_the_session_had(recorded):
    before = recorded.recording.name
    assert services.session_attach_recording(session_id=recorded.pk, name=f"sessions/{recorded.pk}/gone.wav",
                                             audio_metadata={"codec": "opus"}) is False
    recorded.refresh_from_db()
    assert recorded.recording.name == before and recorded.audio_metadata["codec"] == "opus"
