"""The LLM buyer against a local OpenAI-compatible chat server (SSE streaming, errors)."""

from __future__ import annotations

import asyncio

import pytest

from roleplay.dialog import Turn, get_brain
from roleplay.dialog.base import BrainError
from roleplay.dialog.openai_chat import OpenAIChatBrain, clean, parse_sse
from roleplay.dialog.prompt import build_system_prompt
from tests.cloud.briefs import SECRET_GOAL, SECRET_GOAL_ZH, chinese_brief, english_brief
from tests.cloud.fakes import KEY

HISTORY = [
    Turn("buyer", "Dana Lee speaking. You have two minutes."),
    Turn("trainee", "Hi Dana, it's Sam from Shelfwise."),
]


def brain_for(server, **kwargs) -> OpenAIChatBrain:
    return OpenAIChatBrain(base_url=server.base_url, api_key=KEY, model="gpt-test", timeout=2.0, **kwargs)


async def collect(brain, brief, history, seed=0) -> list[str]:
    return [chunk async for chunk in brain.stream_reply(brief, history, seed=seed)]


# --- prompt -----------------------------------------------------------------------------------

def test_it_builds_the_prompt_from_the_brief_without_the_trainees_goals():
    prompt = build_system_prompt(english_brief())
    for expected in ("Dana Lee", "CFO", "Acme Retail", "40 stores", "Total cost of ownership",
                     "It's too expensive", "Difficulty: hard", "sceptical", "never an AI", "3 short sentences"):
        assert expected in prompt
    assert SECRET_GOAL not in prompt and "Friday" not in prompt


def test_it_asks_for_chinese_replies_in_a_chinese_scenario():
    prompt = build_system_prompt(chinese_brief())
    assert "Simplified Chinese" in prompt and "王芳" in prompt and "你们的价格太高了" in prompt
    assert SECRET_GOAL_ZH not in prompt


# --- streaming --------------------------------------------------------------------------------

async def test_it_streams_the_reply_sentence_by_sentence(openai_server):
    openai_server.delta_delay = 0.05
    brain = brain_for(openai_server)
    arrivals: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    async for chunk in brain.stream_reply(english_brief(), HISTORY, seed=7):
        arrivals.append((loop.time() - start, chunk))
    assert [c for _, c in arrivals] == ["Well, our budget is tight. ", "What does it cost? ", "I need to know. "]
    assert arrivals[0][0] < arrivals[-1][0] - 0.1  # the first sentence came before the stream ended
    sent = openai_server.requests[-1]["json"]
    assert sent["stream"] is True and sent["model"] == "gpt-test" and sent["seed"] == 7
    assert [m["role"] for m in sent["messages"]] == ["system", "assistant", "user"]
    assert openai_server.requests[-1]["authorization"] == f"Bearer {KEY}"


async def test_it_stops_a_long_winded_model_after_three_sentences(openai_server):
    openai_server.chat_deltas = ["One. ", "Two. ", "Three. ", "Four. ", "Five."]
    assert await collect(brain_for(openai_server), english_brief(), HISTORY) == ["One. ", "Two. ", "Three. "]


async def test_it_speaks_chinese_sentences_as_they_complete(openai_server):
    openai_server.chat_deltas = ["价格", "确实是", "个问题。", "你们能", "给个折扣吗？"]
    brief = chinese_brief()
    history = [Turn("buyer", brief.opening_line), Turn("trainee", "王经理您好，我想介绍一下我们的系统。")]
    assert await collect(brain_for(openai_server), brief, history) == ["价格确实是个问题。", "你们能给个折扣吗？"]


async def test_it_opens_with_the_scenarios_line_without_calling_the_model(openai_server):
    reply = await collect(brain_for(openai_server), english_brief(), [])
    assert reply == ["Dana Lee speaking. ", "You have two minutes. "]
    assert openai_server.requests == []


async def test_it_strips_speaker_names_and_markup_a_model_adds(openai_server):
    openai_server.chat_deltas = ["Dana Lee: *sighs* Fine. ", "**Send** me the numbers."]
    assert await collect(brain_for(openai_server), english_brief(), HISTORY) == ["Fine. ", "Send me the numbers. "]


def test_it_parses_sse_events_keepalives_and_done():
    assert parse_sse([": keep-alive"]) == ("", False)
    assert parse_sse(['data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}']) == ("Hi", False)
    assert parse_sse(["data: [DONE]"]) == ("", True)
    assert parse_sse(['data: {"choices":[],"usage":{"total_tokens":3}}']) == ("", False)
    with pytest.raises(BrainError):
        parse_sse(['data: {"error":{"message":"overloaded"}}'])


def test_it_leaves_ordinary_sentences_alone():
    assert clean("Price: that's my worry. ", english_brief()) == "Price: that's my worry. "


# --- errors -----------------------------------------------------------------------------------

async def test_it_raises_a_non_retryable_error_on_a_bad_key(openai_server):
    brain = OpenAIChatBrain(base_url=openai_server.base_url, api_key="sk-wrong-key-123456", timeout=2.0)
    with pytest.raises(BrainError) as info:
        await collect(brain, english_brief(), HISTORY)
    assert info.value.retryable is False and info.value.status == 401
    assert "sk-wrong-key-123456" not in str(info.value)


async def test_it_marks_server_errors_retryable(openai_server):
    openai_server.fail_statuses = [503]
    with pytest.raises(BrainError) as info:
        await collect(brain_for(openai_server), english_brief(), HISTORY)
    assert info.value.retryable is True and KEY not in str(info.value)


async def test_it_raises_on_an_error_event_mid_stream(openai_server):
    openai_server.stream_error_after = 2
    chunks = []
    with pytest.raises(BrainError, match="overloaded"):
        async for chunk in brain_for(openai_server).stream_reply(english_brief(), HISTORY):
            chunks.append(chunk)
    assert chunks == []  # "Well, our budget " never completed a sentence


async def test_it_times_out_on_a_silent_server(openai_server):
    openai_server.delay = 1.0
    brain = OpenAIChatBrain(base_url=openai_server.base_url, api_key=KEY, timeout=0.3)
    with pytest.raises(BrainError) as info:
        await collect(brain, english_brief(), HISTORY)
    assert info.value.timeout is True


# --- registry ---------------------------------------------------------------------------------

async def test_it_is_registered_as_openai_and_as_qwen_on_the_dashscope_compatible_url(openai_server, settings):
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = KEY
    settings.DASHSCOPE_COMPATIBLE_URL = openai_server.base_url
    settings.DASHSCOPE_API_KEY = KEY
    settings.DASHSCOPE_CHAT_MODEL = "qwen-turbo"
    assert get_brain("openai").name == "openai"
    qwen = get_brain("qwen")
    assert qwen.name == "qwen"
    assert await collect(qwen, english_brief(), HISTORY)
    assert openai_server.requests[-1]["json"]["model"] == "qwen-turbo"
