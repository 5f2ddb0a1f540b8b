"""Throttles of the REST API beyond DRF's defaults (``settings.REST_FRAMEWORK``)."""

from __future__ import annotations

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from roleplay.login_limits import client_address, login_retry_after


def submitted_username(request: Request) -> str:
    """The username a sign-in request claims, as text whatever JSON type the client sent."""
    value = request.data.get("username", "") if hasattr(request.data, "get") else ""
    return value if isinstance(value, str) else str(value)


class LoginThrottle(BaseThrottle):
    """Refuses a sign-in while its username or client address has too many recent failures
    (roleplay.login_limits); DRF answers 429 with ``Retry-After``. The authentication backend counts them."""

    def __init__(self) -> None:
        self.retry_after: int | None = None

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method != "POST":
            return True
        self.retry_after = login_retry_after(username=submitted_username(request), address=client_address(request))
        return self.retry_after is None

    def wait(self) -> int | None:
        return self.retry_after
