"""The server's access log, through Python logging (logger ``lingecho.access``) and redacted.

daphne's own access log (``daphne.access.AccessLogGenerator``) writes straight to stdout or to the
``--access-log`` file, past every logging filter, and an HTTP line carries the full request target:
``GET /ws/voice/?token=eyJ…`` or a signed media URL's ``?sig=…`` would be on disk for anyone who
reads the logs. Here the same lines are emitted as log records: credential query values are
replaced before the line is built (:func:`redact_target`), and the record then passes
``lingecho.logging.RedactTokensFilter`` like every other line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from daphne.access import AccessLogGenerator

from lingecho.logging import REDACTED, RedactTokensFilter

LOGGER_NAME = "lingecho.access"

# Query parameters whose values are credentials or one-time secrets (keys compared decoded, lower-case).
SECRET_QUERY_KEYS = frozenset(
    {"token", "sig", "password", "access", "refresh", "code", "access_token", "refresh_token", "secret", "api_key"}
)


def redact_target(target: str) -> str:
    """The request target with the value of every secret query parameter replaced.

    Keys are compared percent-decoded (``?t%6Fken=`` is ``token`` to Django), so spelling a key
    differently cannot smuggle its value into the log.
    """
    path, question, query = target.partition("?")
    if not question:
        return target
    pieces = []
    for piece in query.split("&"):
        key, equals, _value = piece.partition("=")
        if equals and unquote_plus(key).strip().lower() in SECRET_QUERY_KEYS:
            piece = f"{key}={REDACTED}"
        pieces.append(piece)
    return f"{path}?{'&'.join(pieces)}"


class AccessLog(AccessLogGenerator):
    """daphne's action logger (same events, NCSA-like lines) writing to a logger instead of a stream."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__(stream=None)
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if "path" in details:
            details = {**details, "path": redact_target(str(details["path"]))}
        super().__call__(protocol, action, details)

    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None) -> None:  # noqa: ANN001
        # The date is the log record's own timestamp.
        self.logger.info('%s "%s" %s %s', host or "-", request, status or "-", length or "-")


def _file_logger(stream: Any) -> logging.Logger:
    """A logger for an explicit ``--access-log FILE``: only that file, still redacted."""
    logger = logging.getLogger(f"{LOGGER_NAME}.file")
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokensFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def access_log_for(daphne_logger: Callable | None) -> AccessLog | None:
    """Replace the access log daphne's CLI built from ``-v``/``--access-log``.

    None stays None (``-v 0``: no access log); stdout becomes the ``lingecho.access`` logger
    (settings.LOGGING: the console handler with the redaction filter); a file stays that file.
    """
    if daphne_logger is None:
        return None
    stream = getattr(daphne_logger, "stream", None)
    if stream is None or stream is sys.stdout:
        return AccessLog()
    return AccessLog(_file_logger(stream))


def routed_through_logging(server_class: type) -> Callable[..., Any]:
    """``server_class`` as daphne's CLI calls it, with the access log swapped for :class:`AccessLog`."""

    def build(*, action_logger: Callable | None = None, **options: Any) -> Any:
        return server_class(action_logger=access_log_for(action_logger), **options)

    return build
