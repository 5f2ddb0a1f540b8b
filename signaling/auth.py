"""WebSocket authentication and Origin checks, applied before a consumer ever accepts.

Browser pages authenticate with the Django session cookie; other clients pass a JWT access
token as ``?token=``. The token is read here and never logged.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from roleplay.models import User


def query_params(scope: dict) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(raw).items() if v}


MAX_TOKEN_CHARS = 4096  # our access tokens are ~250 characters


async def user_from_token(token: str) -> User | AnonymousUser:
    """The user a JWT access token names. A value that cannot be one of our tokens (not a string,
    empty, or long enough to make signature checking expensive) is anonymous without a hop to the
    database thread: a client must not be able to buy database queries or CPU with junk tokens."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        return AnonymousUser()
    return await _user_from_token(token)


@database_sync_to_async
def _user_from_token(token: str) -> User | AnonymousUser:
    try:
        access = AccessToken(token)
        return User.objects.get(pk=access["user_id"], is_active=True)
    except (TokenError, KeyError, User.DoesNotExist, ValueError):
        return AnonymousUser()


class JWTQueryAuthMiddleware:
    """If ``?token=`` is present it decides the user (a bad token is anonymous, never the cookie's user)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        token = query_params(scope).get("token")
        if token is not None:
            scope = dict(scope, user=await user_from_token(token))
        return await self.inner(scope, receive, send)


def allowed_origins() -> list[str]:
    """Hosts from ALLOWED_HOSTS (same-site pages) plus the explicit ALLOWED_ORIGINS list."""
    hosts = [h for h in settings.ALLOWED_HOSTS]
    extra = []
    for origin in settings.ALLOWED_ORIGINS:
        parsed = urlparse(origin)
        extra.append(origin if not parsed.scheme else f"{parsed.scheme}://{parsed.netloc}")
    return hosts + extra


class _LayerlessDenier(WebsocketDenier):
    """Channels' denier subscribes to the channel layer like any consumer: on Redis every refused
    handshake would create a channel and leave a blocking receive to cancel. It needs neither."""

    channel_layer_alias = "__refused__"  # not a configured alias: get_channel_layer() gives None
    close_code: int | None = None

    async def connect(self) -> None:
        await self.close(code=self.close_code)


class RefuseAnonymous:
    """Refuse a handshake without a user before the consumer exists, with ``close_code``.

    A consumer subscribes to the channel layer before its ``connect`` runs, so refusing there
    would still create a channel and a blocking receive on Redis for every anonymous attempt (and
    leave it to be cancelled when the client goes away). Refused here, none of that happens.
    """

    def __init__(self, inner, *, close_code: int) -> None:
        self.inner = inner
        self.close_code = close_code

    async def __call__(self, scope, receive, send):
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            denier = _LayerlessDenier()
            denier.close_code = self.close_code
            return await denier(scope, receive, send)
        return await self.inner(scope, receive, send)


class StrictOriginValidator(OriginValidator):
    """Like AllowedHostsOriginValidator, plus ALLOWED_ORIGINS; a missing Origin header is accepted
    only for non-browser clients, which must then authenticate with a token."""

    def __init__(self, application) -> None:
        super().__init__(application, allowed_origins())

    async def __call__(self, scope, receive, send):
        origin = next((value for name, value in scope.get("headers", []) if name == b"origin"), None)
        try:
            parsed = urlparse(origin.decode("latin1")) if origin is not None else None
        except UnicodeDecodeError:
            parsed = urlparse("")
        if self.valid_origin(parsed):
            return await self.application(scope, receive, send)
        return await _LayerlessDenier()(scope, receive, send)

    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def websocket_stack(inner):
    return StrictOriginValidator(AuthMiddlewareStack(JWTQueryAuthMiddleware(inner)))
