"""Buyer brains: who the trainee is talking to.

`get_brain(name)` returns a brain by its settings name. The scripted persona engine is always
available; other brains live in their own module here and register themselves on import with
`register_brain` (the module is imported lazily the first time its name is asked for, so an
optional cloud client is never imported by a deployment that does not use it). Which brain a
call gets is decided in `choice.select_brain` (scenario override > settings > scripted); a cloud
brain comes wrapped in `fallback.FallbackBrain`, with the scripted buyer behind it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import (
    BUYER,
    TRAINEE,
    BrainState,
    BuyerBrain,
    ObjectionBrief,
    ScenarioBrief,
    SentenceChunker,
    Turn,
    split_sentences,
)
from .scripted import ScriptedBrain, parse_conditions

__all__ = [
    "BUYER",
    "TRAINEE",
    "BrainState",
    "BuyerBrain",
    "ObjectionBrief",
    "ScenarioBrief",
    "ScriptedBrain",
    "SentenceChunker",
    "Turn",
    "get_brain",
    "parse_conditions",
    "register_brain",
    "split_sentences",
]

_FACTORIES: dict[str, Callable[[], BuyerBrain]] = {"scripted": ScriptedBrain}

# name -> module that calls register_brain(name, ...) when imported
_LAZY_MODULES = {
    "openai": "roleplay.dialog.openai_chat",
    "openai_chat": "roleplay.dialog.openai_chat",
    "qwen": "roleplay.dialog.openai_chat",
    "dashscope": "roleplay.dialog.openai_chat",
}


def register_brain(name: str, factory: Callable[[], BuyerBrain]) -> None:
    _FACTORIES[name] = factory


def get_brain(name: str) -> BuyerBrain:
    """A brain by name ("scripted", "openai", …); raise KeyError naming the known ones."""
    if name not in _FACTORIES and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    try:
        factory = _FACTORIES[name]
    except KeyError:
        known = ", ".join(sorted(set(_FACTORIES) | set(_LAZY_MODULES)))
        raise KeyError(f"unknown buyer brain {name!r} (known: {known})") from None
    return factory()
