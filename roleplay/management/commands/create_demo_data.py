from django.core.management.base import BaseCommand

from roleplay.demo_data import demo_data_load


class Command(BaseCommand):
    help = "Create (or refresh) the demo users, team and scenarios. Safe to run repeatedly."

    def handle(self, *args, **options) -> None:
        counts = demo_data_load()
        self.stdout.write(f"Demo data ready: {counts['users']} users, {counts['scenarios']} scenarios.")
