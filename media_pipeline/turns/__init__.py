"""End-of-turn strategies (``base.TurnDetector``) and the policy that asks them (``policy``).

:func:`load_turn_detector` builds the process's detector from ``TURN_DETECTOR``; the engine pool
holds the one instance. :func:`turn_policy` is one stream's policy from the settings (and an
optional per-scenario patience).

A missing model: ``TURN_DETECTOR=smart`` said explicitly fails loudly (``ImproperlyConfigured``,
raised where the engine pool is built: the media worker's warm-up at boot and every call's
start) — someone asked for turn detection and must not get a silent 400 ms cut-off instead. Left
unset (``auto``), a process without the model falls back to the silence rule with one warning in
the log, so a checkout without the wheel still runs.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from media_pipeline.turns.base import TurnDecision, TurnDetector, Verdict
from media_pipeline.turns.policy import DEFAULT_REASK_SILENCE_MS, DEFAULT_REASK_THRESHOLD, TurnPolicy
from media_pipeline.turns.silence import SilenceDetector

log = logging.getLogger(__name__)


def load_turn_detector(choice: str | None = None) -> TurnDetector | None:
    """The process's model-backed detector, or None for the silence rule."""
    from media_pipeline.turns.smart_turn import SmartTurnDetector, SmartTurnMissing

    choice = choice or getattr(settings, "TURN_DETECTOR", "auto")
    if choice == "silence":
        return None
    try:
        return SmartTurnDetector(threshold=settings.TURN_COMPLETE_THRESHOLD)
    except SmartTurnMissing as exc:
        if choice == "smart":
            raise ImproperlyConfigured(f"TURN_DETECTOR=smart, but {exc}") from exc
        log.warning("end of turn falls back to fixed silence: %s", exc)
        return None


def turn_policy(detector: Any, *, end_silence_ms: int | None = None, patience_ms: int | None = None) -> TurnPolicy:
    """One stream's policy: the smart detector if the process has one and ``TURN_DETECTOR`` is not
    ``silence`` now (so the setting also holds per call), else today's fixed silence."""
    if detector is None or getattr(settings, "TURN_DETECTOR", "auto") == "silence":
        silence = settings.ENDPOINT_SILENCE_MS if end_silence_ms is None else end_silence_ms
        return TurnPolicy(SilenceDetector(), ask_silence_ms=silence, patience_ms=silence, threshold=0.5)
    return TurnPolicy(
        detector,
        ask_silence_ms=settings.TURN_ASK_SILENCE_MS,
        patience_ms=settings.TURN_PATIENCE_MS if patience_ms is None else patience_ms,
        threshold=settings.TURN_COMPLETE_THRESHOLD,
        # Read with defaults until settings.py declares them (env TURN_REASK_SILENCE_MS, 0 = ask once).
        reask_silence_ms=getattr(settings, "TURN_REASK_SILENCE_MS", DEFAULT_REASK_SILENCE_MS),
        reask_threshold=getattr(settings, "TURN_REASK_THRESHOLD", DEFAULT_REASK_THRESHOLD),
        trails_off_wait_ms=settings.TURN_TRAILS_OFF_WAIT_MS,
    )


__all__ = ["TurnDecision", "TurnDetector", "TurnPolicy", "Verdict", "load_turn_detector", "turn_policy"]
