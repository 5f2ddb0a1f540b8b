"""Which TTS engine a scenario's ``voice`` is meant for.

A scenario's ``voice`` field is shared by every TTS engine; each one uses it only when it is the
kind of name that engine understands, and its own default otherwise.
"""

from __future__ import annotations

import re


def is_provider_voice(voice: str) -> bool:
    """Cloud voice ids ("longxiaochun", "alloy") vs eSpeak names ("cmn", "en-us+f3")."""
    return bool(re.fullmatch(r"[a-z][a-z0-9_]{3,}", voice or ""))


def offline_voice(voice: str) -> str:
    """``voice`` for the offline engine: a cloud voice id means nothing to eSpeak (its default, then)."""
    return "" if is_provider_voice(voice) else voice
