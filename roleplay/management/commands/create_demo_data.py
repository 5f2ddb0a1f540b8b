from django.core.management.base import BaseCommand

from roleplay.demo_data import demo_data_load


class Command(BaseCommand):
    help = (
        "Create (or refresh) the demo team and scenarios, and the demo users when a demo password applies "
        "(the embedded default, or LINGECHO_DEMO_PASSWORD set). Safe to run repeatedly."
    )

    def handle(self, *args, **options) -> None:
        result = demo_data_load()
        self.stdout.write(f"Demo data ready: {result.users} users, {result.scenarios} scenarios.")
        if not result.users:
            self.stdout.write(
                "No demo users were created: DATABASE_URL is set and LINGECHO_DEMO_PASSWORD is not, so no account "
                "gets the published demo password. Create an admin with `python manage.py createsuperuser`, "
                "or set LINGECHO_DEMO_PASSWORD to create the demo users with that password."
            )
        for username in result.published_password_users:
            self.stderr.write(
                self.style.WARNING(
                    f"Warning: user {username!r} still has the published demo password; change it with "
                    f"`python manage.py changepassword {username}` or remove the account."
                )
            )
