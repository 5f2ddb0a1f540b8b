"""Log hygiene: tokens, signatures, passwords and keys never reach a log line.

Every handler in ``settings.LOGGING`` carries :class:`RedactTokensFilter`, and the server's access
log goes through logging too (:mod:`lingecho.access_log`), so this one module decides what a log
line may show. Patterns err on the side of hiding: a JWT is recognised by its ``eyJ`` start (the
base64 of ``{"``) wherever it appears, not only after ``token=``.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"

# Query-string and form keys whose values are credentials (matched case-insensitively).
SECRET_KEYS = ("token", "sig", "password", "passwd", "access", "refresh", "secret", "api_key", "apikey", "sessionid")

_KEYS = "|".join(SECRET_KEYS)
_AFTER_SEPARATOR = r"(?:^|(?<=[^A-Za-z0-9_])|(?<=%3F)|(?<=%26))"  # start, a non-word character, or encoded ? &
_VALUE = r"(?:(?!%26)[^&\s\"';,])+"  # up to the next parameter, plain or percent-encoded
_SECRET_PATTERNS = [
    # Authorization headers, whatever the scheme, as a header line, a dict entry or an ASGI header pair.
    re.compile(r"(authorization[\"']?\s*[:=,]\s*(?:b?[\"'])?)[^\"'\r\n,}\]]+", re.IGNORECASE),
    re.compile(r"(\bBearer\s+)[A-Za-z0-9._~+/=\-]+", re.IGNORECASE),
    # key=value in query strings, form bodies and "key=value" prose; ``code`` only after ? or &
    # (an OAuth code), so "exit code=1" stays readable.
    # Also percent-encoded inside another parameter (``?next=/x%3Fsig%3D…``).
    re.compile(rf"({_AFTER_SEPARATOR}(?:[a-z_]*_)?(?:{_KEYS})(?:=|%3D)){_VALUE}", re.IGNORECASE),
    re.compile(rf"((?:[?&]|%3F|%26)code(?:=|%3D)){_VALUE}", re.IGNORECASE),
    # JSON and Python reprs: "password": "…", 'token': '…'.
    re.compile(rf"([\"'](?:[a-z_]*_)?(?:{_KEYS})[\"']\s*:\s*b?[\"'])[^\"']*", re.IGNORECASE),
    # Prose such as "password: hunter2".
    re.compile(r"(\bpassword\s*:\s*)[^\s\"',}]+", re.IGNORECASE),
    re.compile(r"(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^&\s\"',]+", re.IGNORECASE),
    re.compile(r"(sk-)[A-Za-z0-9]{6,}"),
]
# A JWT (header.payload.signature, each base64url; the header always starts with eyJ) anywhere.
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}")


def redact(text: str) -> str:
    """``text`` with every credential value replaced by ``[redacted]``."""
    text = _JWT.sub(REDACTED, text)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(rf"\1{REDACTED}", text)
    return text


class RedactTokensFilter(logging.Filter):
    """Rewrites the rendered message and any traceback text before a handler formats the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not hide the record
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatter.format reuses exc_text when set: render the traceback here to clean it.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
