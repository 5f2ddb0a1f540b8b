"""The Celery app. Embedded default: tasks run in-process (eager); scaled: Redis/AMQP broker."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

app = Celery("lingecho")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic jobs (run `celery -A lingecho beat` once per deployment).
app.conf.beat_schedule = {
    "purge-old-recordings": {"task": "roleplay.tasks.purge_recordings", "schedule": 6 * 3600.0},
}


@app.on_after_configure.connect
def _schedule_session_sweep(sender: Celery, **_: object) -> None:
    """End stale sessions and re-dispatch orphaned after-call jobs every ``SESSION_SWEEP_SECONDS``.

    Scheduled once the configuration (Django's settings) is loaded: reading a setting while this
    module is imported would load the settings from inside the ``lingecho`` package's own import.
    """
    from django.conf import settings

    sender.add_periodic_task(
        float(settings.SESSION_SWEEP_SECONDS), sender.signature("roleplay.tasks.sweep_sessions"), name="sweep-sessions"
    )


@worker_process_init.connect
def _lower_worker_priority(**_: object) -> None:
    """After-call jobs are batch work: on a shared host the live calls' loops come first."""
    from lingecho.priority import lower_after_call_priority

    lower_after_call_priority()
