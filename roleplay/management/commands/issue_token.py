from django.core.management.base import BaseCommand, CommandError
from rest_framework_simplejwt.tokens import RefreshToken

from roleplay.models import User


class Command(BaseCommand):
    help = "Print a JWT access token for USERNAME (for API and WebSocket clients)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        try:
            user = User.objects.get(username=username, is_active=True)
        except User.DoesNotExist:
            raise CommandError(f"No active user named {username!r}.") from None
        self.stdout.write(str(RefreshToken.for_user(user).access_token))
