"""HTTP middleware of the project (one concern each)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class DatabaseUnavailableMiddleware:
    """A lost database is a 503 with ``Retry-After``, not a 500 with a traceback in the log.

    PostgreSQL restarting, failing over or unreachable for a few seconds raises ``OperationalError``
    (``InterfaceError`` on a connection that died mid-request). That is not a bug in the request,
    and every client (the practice page, the API, a load balancer) knows what to do with a 503:
    wait and retry. API callers get the API's one error shape; pages a short plain message.
    Django discards the broken connection at the end of the request, so the next one reconnects.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (OperationalError, InterfaceError)):
            return None
        logger.warning("database unavailable serving %s: %s", request.path, type(exception).__name__)
        message = "The database is unavailable right now; try again in a few seconds."
        if request.path.startswith("/api/") or "application/json" in request.headers.get("Accept", ""):
            response: HttpResponse = JsonResponse(
                {"error": {"code": "database_unavailable", "message": message,
                           "details": {"retry_after": RETRY_AFTER_SECONDS}}},
                status=503,
            )
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
