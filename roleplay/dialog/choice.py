"""Which buyer brain a call uses: the scenario's override, else settings.BRAIN_ENGINE, else the scripted buyer.

A cloud brain comes wrapped in :class:`~roleplay.dialog.fallback.FallbackBrain` with the scripted
buyer behind it, so a failing endpoint falls back mid-call instead of leaving the trainee
waiting. A name that does not resolve (a typo in the admin) is logged and replaced by the
scripted buyer: a misconfigured scenario must not stop trainees from practising. The same
precedence picks ASR and TTS (``media_pipeline.engines.choice``).
"""

from __future__ import annotations

import logging

from lingecho.resilience.breaker import breaker_for
from lingecho.resilience.failures import FailureListener
from roleplay.dialog import get_brain
from roleplay.dialog.base import BuyerBrain
from roleplay.dialog.fallback import FallbackBrain

log = logging.getLogger(__name__)

OFFLINE_BRAIN = "scripted"


def brain_name(override: str | None = None) -> str:
    """scenario override > settings.BRAIN_ENGINE > the scripted buyer."""
    from django.conf import settings

    return (override or "").strip() or (getattr(settings, "BRAIN_ENGINE", "") or "").strip() or OFFLINE_BRAIN


def select_brain(override: str | None = None, *, on_failure: FailureListener | None = None) -> BuyerBrain:
    name = brain_name(override)
    try:
        brain = get_brain(name)
    except KeyError:
        log.warning("unknown buyer brain %r; using %s", name, OFFLINE_BRAIN)
        return get_brain(OFFLINE_BRAIN)
    if name == OFFLINE_BRAIN:
        return brain
    return FallbackBrain(brain, get_brain(OFFLINE_BRAIN), breaker=breaker_for(f"brain:{name}"), on_failure=on_failure)
