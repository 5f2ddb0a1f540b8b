"""A buyer brain on any OpenAI-compatible chat endpoint: OpenAI, DashScope (Qwen), Ollama, vLLM.

``POST {base}/chat/completions`` with ``stream: true``; the answer is Server-Sent Events, one
``data: {json}`` line per token delta and ``data: [DONE]`` at the end. Deltas go through the
shared :class:`SentenceChunker`, so each sentence is yielded (and can be spoken) as soon as it
is complete instead of after the whole reply. Replies are capped at a few sentences: this is a
phone call, and every extra sentence is TTS time before the trainee can answer.

Registered on import as "openai"/"openai_chat" (``OPENAI_*`` settings) and "qwen"/"dashscope"
(``DASHSCOPE_COMPATIBLE_URL``, ``DASHSCOPE_API_KEY``, ``DASHSCOPE_CHAT_MODEL``). The empty
history's reply is the scenario's scripted opening line: no model call for a known sentence.
``state`` reads progress (objections raised/handled, next step) from the trainee's turns the
same way the scripted brain does.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from lingecho.resilience.errors import api_error_message, mark, retryable_status
from lingecho.resilience.redaction import redact, register_secret
from roleplay.dialog import register_brain
from roleplay.dialog.base import BUYER, BrainError, BrainState, ScenarioBrief, SentenceChunker, Turn
from roleplay.dialog.prompt import MAX_SENTENCES, build_system_prompt, is_chinese
from roleplay.dialog.scripted import ScriptedBrain

log = logging.getLogger(__name__)

# A model that ignores "no speaker names" still must not say "Buyer:" aloud.
_PREFIX = re.compile(r"^\s*(?:\*\*)?[\w .\u4e00-\u9fff]{1,30}(?:\*\*)?\s*[:：]\s*")
_MARKUP = re.compile(r"\*[^*]{1,40}\*(?=\s|$)|[*_#`]+")  # "*sighs*" actions, then stray markdown


def _settings(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def parse_sse(lines: list[str]) -> tuple[str, bool]:
    """One SSE event's lines -> (content delta, done). Raises BrainError on an error event."""
    data = "\n".join(line[5:].lstrip() for line in lines if line.startswith("data:"))
    if not data:
        return "", False  # comments (": keep-alive"), "event:" or "id:" lines alone
    if data.strip() == "[DONE]":
        return "", True
    try:
        chunk = json.loads(data)
    except ValueError:
        raise mark(BrainError("malformed stream chunk from the chat server"), retryable=False) from None
    if isinstance(chunk, dict) and chunk.get("error"):
        err = chunk["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise mark(BrainError(f"chat stream error: {redact(str(message))}"), retryable=True)
    choices = chunk.get("choices") or []
    if not choices:
        return "", False  # usage-only chunk (stream_options.include_usage)
    choice = choices[0]
    delta = (choice.get("delta") or {}).get("content") or ""
    return delta, choice.get("finish_reason") is not None and not delta


def clean(sentence: str, brief: ScenarioBrief) -> str:
    """Strip what must not be spoken: a speaker prefix, markdown, bracketed stage directions."""
    if _PREFIX.match(sentence):
        head = sentence.split(":", 1)[0].split("：", 1)[0].strip("* ").lower()
        first_name = brief.persona_name.split()[0].lower() if brief.persona_name.strip() else ""
        names = {brief.persona_name.lower(), first_name, "buyer", "customer", "assistant", "买家", "客户"}
        if head in names:
            sentence = _PREFIX.sub("", sentence, count=1)
    cleaned = re.sub(r" {2,}", " ", _MARKUP.sub("", sentence)).lstrip()
    return cleaned if cleaned.strip() else ""


class OpenAIChatBrain:
    name = "openai"

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, model: str | None = None,
                 timeout: float | None = None, temperature: float = 0.7, max_tokens: int = 160,
                 name: str | None = None) -> None:
        self.base_url = (base_url or _settings("OPENAI_BASE_URL", "https://api.openai.com/v1")).rstrip("/")
        self._api_key = api_key if api_key is not None else _settings("OPENAI_API_KEY", "")
        register_secret(self._api_key)
        self.model = model or _settings("OPENAI_CHAT_MODEL", "gpt-4o-mini")
        self.timeout = timeout if timeout is not None else _settings("ENGINE_TIMEOUT_SECONDS", 10.0)
        self.temperature = temperature
        self.max_tokens = max_tokens
        if name:
            self.name = name
        self._scripted = ScriptedBrain()

    def __repr__(self) -> str:
        return f"OpenAIChatBrain(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    # --- BuyerBrain ---------------------------------------------------------------------------

    def state(self, brief: ScenarioBrief, history: Sequence[Turn]) -> BrainState:
        return self._scripted.state(brief, history)

    def messages(self, brief: ScenarioBrief, history: Sequence[Turn]) -> list[dict[str, str]]:
        out = [{"role": "system", "content": build_system_prompt(brief)}]
        for turn in history:
            role = "assistant" if turn.speaker == BUYER else "user"
            if out[-1]["role"] == role and role == "user":  # two trainee turns in a row: one message
                out[-1] = {"role": role, "content": out[-1]["content"] + "\n" + turn.text}
            else:
                out.append({"role": role, "content": turn.text})
        return out

    async def stream_reply(self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0) -> AsyncIterator[str]:
        language = "zh-CN" if is_chinese(brief) else "en"
        if not any(t.speaker != BUYER for t in history):
            # Nobody has spoken to the buyer yet: the scenario's opening line, no model call.
            async for chunk in self._scripted.stream_reply(brief, history, seed=seed):
                yield chunk
            return
        chunker = SentenceChunker(language)
        spoken = 0
        async for delta in self._deltas(brief, history, seed):
            for sentence in chunker.feed(delta):
                sentence = clean(sentence, brief)
                if sentence.strip():
                    yield sentence
                    spoken += 1
                if spoken >= MAX_SENTENCES:
                    return  # long-winded model: stop reading, closing the stream
        for sentence in chunker.flush():
            sentence = clean(sentence, brief)
            if sentence.strip() and spoken < MAX_SENTENCES:
                yield sentence
                spoken += 1

    # --- wire ---------------------------------------------------------------------------------

    async def _deltas(self, brief: ScenarioBrief, history: Sequence[Turn], seed: int) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "messages": self.messages(brief, history),
            "stream": True,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": seed,
        }
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout, headers=headers) as client:
                async with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise mark(BrainError(f"HTTP {response.status_code}: {api_error_message(response)}"),
                                   retryable=retryable_status(response.status_code), status=response.status_code)
                    event: list[str] = []
                    async for line in response.aiter_lines():
                        if line.strip():
                            event.append(line)
                            continue
                        delta, done = parse_sse(event)
                        event = []
                        if delta:
                            yield delta
                        if done:
                            return
                    if event:  # a server that does not end the last event with a blank line
                        delta, _ = parse_sse(event)
                        if delta:
                            yield delta
        except httpx.TimeoutException as exc:
            raise mark(BrainError(f"chat server gave no tokens within {self.timeout:g}s"),
                       retryable=True, timeout=True) from exc
        except httpx.TransportError as exc:
            raise mark(BrainError(f"chat server connection failed: {type(exc).__name__}"), retryable=True) from exc


def _openai() -> OpenAIChatBrain:
    return OpenAIChatBrain()


def _dashscope() -> OpenAIChatBrain:
    return OpenAIChatBrain(
        base_url=_settings("DASHSCOPE_COMPATIBLE_URL", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        api_key=_settings("DASHSCOPE_API_KEY", ""),
        model=_settings("DASHSCOPE_CHAT_MODEL", "qwen-plus"),
        name="qwen",
    )


register_brain("openai", _openai)
register_brain("openai_chat", _openai)
register_brain("qwen", _dashscope)
register_brain("dashscope", _dashscope)

__all__ = ["OpenAIChatBrain", "build_system_prompt", "clean", "parse_sse"]
