"""How an adapter's failure is treated: retried (momentary trouble) or not (ours, and it will repeat).

A cloud engine fails in three ways that matter to a live call: it is slow (timeout), it is
briefly sick (5xx, 429, a dropped socket), or it is wrong for good (bad key, unknown model).
Adapters tag what they raise with :func:`mark`; untagged exceptions are classified by type.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lingecho.resilience.redaction import redact

if TYPE_CHECKING:
    import httpx


def mark(exc: BaseException, *, retryable: bool, status: int | None = None, timeout: bool = False) -> BaseException:
    """Tag an adapter's exception with how to treat it; returns it for ``raise mark(...)``."""
    exc.retryable = retryable  # type: ignore[attr-defined]
    exc.status = status  # type: ignore[attr-defined]
    exc.timeout = timeout  # type: ignore[attr-defined]
    return exc


def retryable_status(status: int) -> bool:
    """429 and 5xx are the provider's momentary trouble; other 4xx are ours and will repeat."""
    return status == 429 or status >= 500


def is_timeout(exc: BaseException) -> bool:
    if getattr(exc, "timeout", False):
        return True
    import httpx

    return isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException))


def is_retryable(exc: BaseException) -> bool:
    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    import httpx

    return isinstance(exc, (TimeoutError, ConnectionError, httpx.TransportError)) or is_timeout(exc)


def api_error_message(response: httpx.Response) -> str:
    """The provider's own explanation: OpenAI's ``{"error": {"message"}}`` or DashScope's ``message``."""
    try:
        body = response.json()
    except ValueError:
        return redact(response.text[:200] or response.reason_phrase)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return redact(str(err.get("message") or err.get("code") or err))
        if isinstance(err, str):
            return redact(err)
        if body.get("message"):
            return redact(str(body["message"]))
    return redact(str(body)[:200])
