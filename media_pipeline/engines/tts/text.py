"""Split reply text into sentences so TTS can start speaking before the whole reply exists.

Strong boundaries (. ! ? ; and 。！？；…) always split; soft ones (, ， 、) split only a piece
that is already long, so the first audio comes quickly without chopping speech into
robotic fragments.
"""

from __future__ import annotations

_STRONG_CJK = "。！？；…"
_STRONG_ASCII = ".!?;"
_SOFT_CJK = "，、"
_SOFT_ASCII = ","
_CLOSERS = "\"')]}”’」』）》"
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd", "no"}


def is_chinese(language: str) -> bool:
    lang = (language or "").lower().replace("_", "-")
    return lang.startswith(("zh", "cmn", "yue"))


def _soft_min(language: str) -> int:
    return 12 if is_chinese(language) else 60


def _ends_abbreviation(piece: str) -> bool:
    words = piece[:-1].split()
    if not words:
        return False
    word = words[-1].lower().lstrip("(\"'")
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _boundary(text: str, i: int, current: str, soft_min: int) -> bool:
    """Is ``text[i]`` (already appended to ``current``) the last character of a piece?"""
    ch = text[i]
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt and nxt in _CLOSERS:
        return False  # the closing quote belongs to this sentence: split after it instead
    if ch in _CLOSERS and len(current) >= 2:
        ch = current.rstrip(_CLOSERS)[-1:] or ch
        if ch in _CLOSERS:
            return False
    if ch == "\n":
        return True
    if ch in _STRONG_CJK:
        return True
    if ch in _SOFT_CJK:
        return len(current.strip()) >= soft_min
    if ch in _STRONG_ASCII or ch in _SOFT_ASCII:
        if nxt and not nxt.isspace():
            return False  # 3.5, e.g., example.com
        if ch == "." and _ends_abbreviation(current.rstrip(_CLOSERS)):
            return False
        return ch != "," or len(current.strip()) >= soft_min
    return False


def sentence_split(text: str, language: str = "en", *, soft_min_chars: int | None = None) -> list[str]:
    """Split ``text`` into speakable pieces, stripped, none empty, punctuation kept."""
    soft_min = _soft_min(language) if soft_min_chars is None else soft_min_chars
    pieces: list[str] = []
    current = ""
    for i, ch in enumerate(text):
        current += ch
        if _boundary(text, i, current, soft_min):
            if current.strip():
                pieces.append(current.strip())
            current = ""
    if current.strip():
        pieces.append(current.strip())
    return pieces


class SentenceBuffer:
    """Incremental splitter for a streamed reply (LLM tokens): push text, get whole sentences.

    A piece is released only once the character after its boundary has arrived, so a "3." at
    the end of a token is not mistaken for the end of a sentence.
    """

    def __init__(self, language: str = "en", *, soft_min_chars: int | None = None) -> None:
        self.language = language
        self.soft_min_chars = soft_min_chars
        self._text = ""

    def push(self, chunk: str) -> list[str]:
        self._text += chunk
        pieces = sentence_split(self._text, self.language, soft_min_chars=self.soft_min_chars)
        if len(pieces) <= 1:
            return []
        # Everything but the last piece is final; keep the tail (from the last piece on) pending.
        tail_start = self._text.rfind(pieces[-1])
        self._text = self._text[tail_start:] if tail_start >= 0 else pieces[-1]
        return pieces[:-1]

    def flush(self) -> list[str]:
        pieces = sentence_split(self._text, self.language, soft_min_chars=self.soft_min_chars)
        self._text = ""
        return pieces
