"""Keys never reach logs or clients.

Adapters register the keys they are configured with; :func:`redact` removes those verbatim and
anything else that looks like a credential (bearer tokens, ``sk-…``, ``api_key=…``) before text
from a provider's error is logged or reported.
"""

from __future__ import annotations

import re
import threading

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
)
_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a configured key so :func:`redact` removes it verbatim wherever it shows up."""
    if value and len(value) >= 4:
        with _known_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every configured key and anything credential-shaped replaced by ``***``."""
    text = str(text)
    with _known_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text[:500]
