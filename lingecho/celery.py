"""The Celery app. Embedded default: tasks run in-process (eager); scaled: Redis/AMQP broker."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

app = Celery("lingecho")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Periodic after-call jobs (run `celery -A lingecho beat` once per deployment).
app.conf.beat_schedule = {
    "purge-old-recordings": {"task": "roleplay.tasks.purge_recordings", "schedule": 6 * 3600.0},
    "sweep-unprocessed-sessions": {"task": "roleplay.tasks.sweep_unprocessed_sessions", "schedule": 300.0},
}
