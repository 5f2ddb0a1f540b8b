"""Fixtures for the cloud engine tests: fresh fake providers and clean breakers per test."""

from __future__ import annotations

import pytest

from lingecho.resilience.breaker import reset_breakers
from media_pipeline.engines.asr.dashscope_paraformer import DashScopeParaformerASR
from media_pipeline.engines.choice import forget_shared_engines, pin_shared_engine
from media_pipeline.engines.tts.dashscope_cosyvoice import DashScopeCosyVoiceTTS
from tests.cloud.fakes import KEY, FakeDashScope, FakeOpenAI

# What the fake Paraformer "hears" and how the fake Qwen streams the buyer's reply in zh-CN calls.
HEARD = "您好，我想介绍一下我们的新软件。"
BUYER_DELTAS = ["嗯，", "预算", "比较紧张。"]


@pytest.fixture(autouse=True)
def _fresh_breakers():
    reset_breakers()
    forget_shared_engines()
    yield
    reset_breakers()
    forget_shared_engines()


@pytest.fixture
def openai_server():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def dashscope_server():
    server = FakeDashScope().start()
    yield server
    server.stop()


@pytest.fixture
def buyer_deltas() -> list[str]:
    """The fake Qwen's streamed reply; a test module overrides this fixture to script another."""
    return list(BUYER_DELTAS)


@pytest.fixture
def zh_call_fakes(settings, buyer_deltas):
    """A zh-CN call's cloud engines: separate Paraformer and CosyVoice servers (so ASR can die
    alone) and a Qwen (compatible-mode) chat fake, pinned as the process's shared engines."""
    asr = FakeDashScope(asr_sentences=[HEARD]).start()
    tts = FakeDashScope().start()
    chat = FakeOpenAI(chat_deltas=list(buyer_deltas)).start()
    settings.DASHSCOPE_API_KEY = KEY
    settings.DASHSCOPE_WS_URL = tts.url
    settings.DASHSCOPE_COMPATIBLE_URL = chat.base_url
    settings.ENGINE_TIMEOUT_SECONDS = 5.0
    settings.ENGINE_RETRIES = 1
    pin_shared_engine("asr", "dashscope_paraformer", DashScopeParaformerASR(url=asr.url, api_key=KEY))
    pin_shared_engine("tts", "dashscope_cosyvoice", DashScopeCosyVoiceTTS(url=tts.url, api_key=KEY))
    yield {"asr": asr, "tts": tts, "chat": chat}
    asr.stop()
    tts.stop()
    chat.stop()
