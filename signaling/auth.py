"""WebSocket authentication and Origin checks, applied before a consumer ever accepts.

Browser pages authenticate with the Django session cookie; other clients pass a JWT access
token as ``?token=``. The token is read here and never logged.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator, WebsocketDenier
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from roleplay.models import User
from signaling.db import DATABASE_ERRORS, database_unavailable
from signaling.protocol import CloseCode, encode, error_envelope

# Set in the scope when the user could not be looked up because the database is unavailable:
# the handshake is then refused as "try again shortly", never as "who are you?".
AUTH_UNAVAILABLE = "lingecho.auth_unavailable"


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


class AuthUnavailable(Exception):
    """The database that knows the user is unreachable (an outage, not bad credentials)."""


@database_sync_to_async
def _user_from_token(token: str) -> User | AnonymousUser:
    try:
        access = AccessToken(token)
        return User.objects.get(pk=access["user_id"], is_active=True)
    except (TokenError, KeyError, User.DoesNotExist, ValueError):
        return AnonymousUser()
    except DATABASE_ERRORS:
        raise AuthUnavailable() from None


class JWTQueryAuthMiddleware:
    """If ``?token=`` is present it decides the user (a bad token is anonymous, never the cookie's user)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        token = query_params(scope).get("token")
        if token is not None:
            try:
                scope = dict(scope, user=await user_from_token(token))
            except AuthUnavailable:
                scope = dict(scope, user=AnonymousUser(), **{AUTH_UNAVAILABLE: True})
        return await self.inner(scope, receive, send)


class OutageTolerantAuthMiddleware(AuthMiddleware):
    """Channels' cookie-session user lookup, marking the scope instead of crashing when the
    database is gone (uncaught, the handshake died with an HTTP 500 and a traceback)."""

    async def resolve_scope(self, scope) -> None:
        try:
            await super().resolve_scope(scope)
        except DATABASE_ERRORS:
            scope["user"]._wrapped = AnonymousUser()
            scope[AUTH_UNAVAILABLE] = True


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


class _RefuseUntilDatabaseBack(_LayerlessDenier):
    """Accept only to say why (ERR_CONNECTION_FAILED, database_unavailable, retry_after), then close
    with 4503: a client that retries later gets in, and nobody is told their credentials are bad."""

    async def connect(self) -> None:
        await self.accept()
        refusal = database_unavailable()
        await self.send(text_data=encode(error_envelope("", refusal.code, refusal.message, refusal.details)))
        await self.close(code=CloseCode.TRY_AGAIN)


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
        if scope.get(AUTH_UNAVAILABLE):
            return await _RefuseUntilDatabaseBack()(scope, receive, send)
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
    return StrictOriginValidator(
        CookieMiddleware(SessionMiddleware(OutageTolerantAuthMiddleware(JWTQueryAuthMiddleware(inner))))
    )
