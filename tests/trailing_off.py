"""An eSpeak take of a paused sentence that the live ASR hears trail off at the pause, for the tests
of a thought held on the ASR's odds alone (no word says "more to come": "…the budget | is…").

Why pick a take: the ASR's odds of "…" right after "budget" move with the take (every take is
reproducible: tests/audio_fixtures.py), the codec and where the cut falls: 0.06-0.17 after the
recorder's 32 kbps Opus (25 ms more lead-in moved one take from 0.06 to 0.14), around the bar of 0.1
(``words.TRAILS_OFF_MORE``), which is a compromise: 6 of 60 finished sentences reach 0.10-0.155
(docs/performance.md, turn-taking, seventh round). Those tests are about what the pipeline does
with a thought the ASR heard trail off (hold it, join what follows, answer once), not about where
one take falls, so they use a take the ASR hears trail off with a margin at every cut the server
can make.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from media_pipeline import audio
from tests.audio_fixtures import silence, speak_with_pause

RATE = 16000
MARGIN = 1.3  # times the bar
# The sentence both transports' tests pause after a content word, and the words before the pause.
CONTENT_WORD_PAUSE = ("I understand that the budget is a big problem for you.", "I understand that the budget")


def trailing_off_take(
    text: str, before: str, pause_ms: int = 800, *, rate: int = RATE,
    code: Callable[[np.ndarray], np.ndarray] | None = None, tries: int = 16,
) -> np.ndarray:
    """``speak_with_pause(text, before, pause_ms, rate=rate)``: the first take whose first half, coded
    as the transport codes it (``code``: 16 kHz float32 in and out; None: as is), the live ASR hears
    trail off by ``MARGIN`` times the bar, wherever the server's cut falls; failing that, of ``tries``
    takes the one it hears trail off most."""
    from media_pipeline.engine_pool import asr_options
    from media_pipeline.engines import get_asr_engine
    from media_pipeline.turns.words import TRAILS_OFF_MORE

    asr = get_asr_engine("faster_whisper", **asr_options())
    best, best_odds = None, -1.0
    for number in range(tries):
        take = speak_with_pause(text, before, pause_ms, rate=rate, take=number)
        heard = np.concatenate([silence(500), audio.resample(take, rate, RATE), silence(1500)])
        if code is not None:
            heard = code(heard)
        voiced = np.flatnonzero(np.abs(heard) > 1e-3)
        onset, pause_at = voiced[0], voiced[int(np.argmax(np.diff(voiced)))]
        # Where the server's cut falls, give or take a VAD window: from the pre-roll before the VAD's
        # start (~0.3 s before the voice) to the tail after its end (~0.1 s after the last word).
        odds = [asr.transcribe(heard[max(0, onset - lead) : pause_at + tail], language="en").ending
                for lead, tail in ((4400, 1600), (4800, 1600), (4800, 2400))]
        weakest = min((o.more if o is not None else 0.0) for o in odds)
        if weakest >= MARGIN * TRAILS_OFF_MORE:
            return take
        if weakest > best_odds:
            best, best_odds = take, weakest
    # On a machine whose ASR hears every take fall short of the margin: the take it hears trail off most.
    return best
