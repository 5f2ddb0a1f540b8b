"""Retention: delete call recordings older than RECORDING_RETENTION_DAYS; transcripts and scores stay."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from roleplay.after_call import recordings_purge


class Command(BaseCommand):
    help = "Delete recordings of sessions that ended more than RECORDING_RETENTION_DAYS days ago."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=None, help="Override RECORDING_RETENTION_DAYS.")

    def handle(self, *args: object, days: int | None = None, **options: object) -> None:
        purged = recordings_purge(older_than_days=days)
        self.stdout.write(f"purged {len(purged)} recording(s)")
