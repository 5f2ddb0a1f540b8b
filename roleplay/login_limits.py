"""Sign-in limits: every password check from the network (the login page, ``POST /api/auth/token/``,
Django admin's login) is counted by :class:`RateLimitedModelBackend`.

Failed attempts are counted per username and per client address in Django's cache (the local
cache in the embedded default, Redis when scaled, so every server process shares the counts),
in fixed windows of ``LOGIN_FAILURE_WINDOW_SECONDS``. Once either count reaches its limit, further
attempts are refused *before* the password is checked, until the window ends: a refused guess
teaches an attacker nothing. The username limit stops guessing one account from many addresses;
the address limit stops one client trying many accounts.

The client address is ``REMOTE_ADDR`` unless ``TRUSTED_PROXY_COUNT`` says how many proxies in front
of the server append to ``X-Forwarded-For``; only those entries are believed, never one a client
wrote itself (DRF's ``NUM_PROXIES`` follows the same setting for its own throttles).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

_USERNAME_LIMIT_CHARS = 150  # the User model's own limit; longer input is never a real username


def client_address(request: HttpRequest) -> str:
    """The address of the client, as far as the trusted proxies in front of us say."""
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = settings.TRUSTED_PROXY_COUNT
    if trusted <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if not forwarded:
        return remote
    # Each trusted proxy appends the address it received from; the client is `trusted` entries from the end.
    return forwarded[-min(trusted, len(forwarded))]


@dataclass(frozen=True)
class _Window:
    index: int
    seconds_left: int


def _window() -> _Window:
    size = settings.LOGIN_FAILURE_WINDOW_SECONDS
    now = time.time()
    index = int(now // size)
    return _Window(index=index, seconds_left=max(1, math.ceil((index + 1) * size - now)))


def _key(kind: str, value: str, window: _Window) -> str:
    # Hashed: usernames may hold any character and should not sit in the cache in clear.
    digest = hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]
    return f"login-failures:{kind}:{digest}:{window.index}"


def _counters(*, username: str, address: str, window: _Window) -> list[tuple[str, int]]:
    username = username.strip().lower()[:_USERNAME_LIMIT_CHARS]
    counters = [(_key("address", address, window), settings.LOGIN_FAILURES_PER_ADDRESS)]
    if username:
        counters.append((_key("username", username, window), settings.LOGIN_FAILURES_PER_USERNAME))
    return counters


def login_retry_after(*, username: str, address: str) -> int | None:
    """Seconds until this sign-in may be tried again, or None when it may be tried now."""
    window = _window()
    counters = _counters(username=username, address=address, window=window)
    counts = cache.get_many([key for key, _ in counters])
    if any(counts.get(key, 0) >= limit for key, limit in counters):
        return window.seconds_left
    return None


def login_failure_record(*, username: str, address: str) -> None:
    """Count one failed sign-in against the username and the address."""
    window = _window()
    for key, _limit in _counters(username=username, address=address, window=window):
        # add() then incr() is atomic on Redis; the key lives a little past its window.
        cache.add(key, 0, timeout=window.seconds_left + 5)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr: this failure opens a fresh count
            cache.add(key, 1, timeout=window.seconds_left + 5)


def login_success_record(*, username: str) -> None:
    """A successful sign-in clears its username's failures (not its address's: one good account
    must not let a client keep guessing others)."""
    window = _window()
    cache.delete(_key("username", username.strip().lower()[:_USERNAME_LIMIT_CHARS], window))


class RateLimitedModelBackend(ModelBackend):
    """Django's ModelBackend, counting every password check from the network against the limits.

    Every door that checks a password goes through ``authenticate()``: the login page, the token
    endpoint, Django admin's own login. Counting here (not in each view) leaves no door unlimited;
    the page and the token endpoint additionally answer 429 with ``Retry-After`` before getting here.
    Calls without a request (``Client.login`` in tests, management commands) are not counted.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):  # noqa: ANN001, ANN201 - Django's signature
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if request is None or username is None or password is None:
            return super().authenticate(request, username=username, password=password, **kwargs)
        address = client_address(request)
        if login_retry_after(username=username, address=address) is not None:
            raise PermissionDenied  # authenticate() tries no further backend and reports a failure
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            login_failure_record(username=username, address=address)
            # The chain ends here: the plain ModelBackend listed after us (for sessions signed in
            # before this backend existed) must not check the same password a second time.
            raise PermissionDenied
        login_success_record(username=username)
        return user
