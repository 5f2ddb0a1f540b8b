"""The Celery app. Embedded default: tasks run in-process (eager); scaled: Redis/AMQP broker."""

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

app = Celery("lingecho")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic after-call jobs (run `celery -A lingecho beat` once per deployment).
app.conf.beat_schedule = {
    "purge-old-recordings": {"task": "roleplay.tasks.purge_recordings", "schedule": 6 * 3600.0},
    "sweep-unprocessed-sessions": {"task": "roleplay.tasks.sweep_unprocessed_sessions", "schedule": 300.0},
}


@worker_process_init.connect
def _lower_worker_priority(**_: object) -> None:
    """After-call jobs are batch work: on a shared host the live calls' loops come first."""
    from media_pipeline.priority import lower_current_thread_priority

    lower_current_thread_priority()
