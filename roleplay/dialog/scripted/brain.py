"""`ScriptedBrain`: the scripted buyer behind the `BuyerBrain` interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from roleplay.dialog.base import BrainState, ScenarioBrief, Turn, split_sentences
from roleplay.dialog.scripted.conversation import replay
from roleplay.dialog.scripted.phrasebook import Phrasebooks, phrasebooks
from roleplay.dialog.scripted.reading import TurnReader
from roleplay.dialog.scripted.wording import terminated


class ScriptedBrain:
    """The offline buyer brain (see the package docstring for how it behaves).

    `phrases` defaults to the shipped phrase files; a test or a translator's preview passes
    books loaded from elsewhere (`load_phrasebooks(directory)`).
    """

    name = "scripted"

    def __init__(self, phrases: Phrasebooks | None = None) -> None:
        self.phrases = phrases or phrasebooks()
        self.reader = TurnReader(self.phrases.keywords)

    def reply(self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0) -> str:
        """The whole reply as one string (handy for tests, logs and the text-only fallback)."""
        return "".join(self._chunks(brief, history, seed)).strip()

    async def stream_reply(self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0) -> AsyncIterator[str]:
        for chunk in self._chunks(brief, history, seed):
            yield chunk
            await asyncio.sleep(0)  # let TTS start on this chunk before the next one is produced

    def state(self, brief: ScenarioBrief, history: Sequence[Turn]) -> BrainState:
        conversation, _ = replay(brief, history, 0, self.phrases, self.reader)
        return conversation.state()

    def _chunks(self, brief: ScenarioBrief, history: Sequence[Turn], seed: int) -> list[str]:
        writing = (book := self.phrases.for_language(brief.language)).writing
        _, parts = replay(brief, history, seed, self.phrases, self.reader)
        if parts is None:  # nobody has spoken yet (or only the buyer has): the opening line
            parts = [terminated(brief.opening_line.strip(), writing) or book.opening]
        text = writing.sentence_joiner.join(p for p in parts if p)
        return split_sentences(text, writing.tag)
