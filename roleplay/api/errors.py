"""One error shape for every API error: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from roleplay.errors import DomainError


def _shape(code: str, message: str, details: object, http_status: int, headers: dict | None = None) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "details": details or {}}}, status=http_status, headers=headers
    )


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, DomainError):
        return _shape(exc.code, exc.message, exc.details, exc.http_status)
    if isinstance(exc, Http404):
        return _shape("not_found", "Not found.", {}, status.HTTP_404_NOT_FOUND)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        return _shape("invalid", "The request is not valid.", response.data, response.status_code)
    if isinstance(exc, exceptions.APIException):
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        code = getattr(detail, "code", None) or exc.default_code
        details = {k: v for k, v in response.data.items() if k != "detail"} if isinstance(response.data, dict) else {}
        headers = {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate")}
        return _shape(str(code), str(detail), details, response.status_code, headers)
    return response
