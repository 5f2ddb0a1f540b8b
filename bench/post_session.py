"""After-call processing time per minute of call, for the whole chain.

Run: ``.venv/bin/python bench/post_session.py [--minutes 3] [--runs 1]``. Builds a call of about
``--minutes`` of two-sided eSpeak speech (a recording plus its utterances, as a real call leaves
them) in a throwaway SQLite database and media folder, then times ``roleplay.tasks.process_session``
end to end: load, Opus transcode, offline re-transcription of both channels with word timestamps,
analytics and rubric, transcript/analytics/manifest writes. Target: under 10 s per minute of audio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_S_PER_MIN = 10.0


def setup_django(workdir: Path) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LINGECHO_STORAGE"):
        os.environ.pop(name, None)
    os.environ.update(
        SQLITE_PATH=str(workdir / "bench.sqlite3"), MEDIA_ROOT=str(workdir / "media"), CELERY_TASK_ALWAYS_EAGER="1",
        LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="lingecho.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="approximate call length")
    parser.add_argument("--runs", type=int, default=2, help="timed runs (forced re-processing of the same call)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-post-session-") as tmp:
        setup_django(Path(tmp))
        from roleplay.models import RealtimeSession, SessionAnalytics
        from roleplay.tasks import process_session
        from tests.factories import make_scenario, make_user
        from tests.roleplay.recorded_call import CONVERSATION, make_recorded_session

        trainee = make_user("bench-trainee")
        scenario = make_scenario(slug="bench")
        built = time.perf_counter()
        one_pass = make_recorded_session(trainee=trainee, scenario=make_scenario(slug="probe"))
        pass_ms = one_pass.utterances.order_by("-end_ms").first().end_ms + 500
        repeat = max(1, round(args.minutes * 60_000 / pass_ms))
        session = make_recorded_session(trainee=trainee, scenario=scenario, repeat=repeat)
        # End without the on-commit dispatch so the timing below covers exactly one run.
        RealtimeSession.objects.filter(pk=session.pk).update(state="ended", ended_at=session.started_at)
        minutes = (session.utterances.order_by("-end_ms").first().end_ms + 300) / 60_000
        print(f"call: {minutes:.2f} min of audio, {len(CONVERSATION) * repeat} utterances "
              f"(built in {time.perf_counter() - built:.1f} s with eSpeak)")

        timings: list[float] = []
        cpu: list[float] = []
        for run in range(max(1, args.runs)):
            started, cpu_started = time.perf_counter(), time.process_time()
            result = process_session.apply(args=[session.pk], kwargs={"force": run > 0}).get()
            timings.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
            assert result == "done", result
            print(f"run {run + 1}{' (cold: loads the model)' if run == 0 else ''}: {timings[-1]:.2f} s wall, "
                  f"{cpu[-1]:.2f} s CPU (all threads)")
        session.refresh_from_db()
        assert session.processing == "done", session.processing_detail
        retranscript = SessionAnalytics.objects.get(session=session).retranscript

    total = statistics.median(timings)
    per_minute = total / minutes
    print(f"whole chain: {total:.2f} s (median of {len(timings)}), re-transcription {retranscript['elapsed_s']:.2f} s "
          f"of it, model {retranscript['model']}")
    print(f"CPU time per minute of call: {statistics.median(cpu) / minutes:.2f} s (the wall figure is higher "
          f"when other processes share the cores; load average {os.getloadavg()[0]:.1f})")
    print(f"processing time per minute of call: {per_minute:.2f} s  (target < {TARGET_S_PER_MIN:.0f} s) "
          f"{'OK' if per_minute < TARGET_S_PER_MIN else 'OVER TARGET'}")
    return 0 if per_minute < TARGET_S_PER_MIN else 1


if __name__ == "__main__":
    sys.exit(main())
