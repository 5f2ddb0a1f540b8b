"""Coded domain errors. Transports (REST, LingEcho, Socket.IO) map the code to their own wire shape."""

from __future__ import annotations


class DomainError(Exception):
    code = "invalid"
    http_status = 400

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class SessionNotFound(NotFound):
    code = "session_not_found"


class SessionNotResumable(DomainError):
    code = "session_not_resumable"
    http_status = 409


class SessionEnded(DomainError):
    code = "session_ended"
    http_status = 409


class LiveSessionLimit(DomainError):
    code = "live_session_limit"
    http_status = 429


class PermissionDenied(DomainError):
    code = "permission_denied"
    http_status = 403
