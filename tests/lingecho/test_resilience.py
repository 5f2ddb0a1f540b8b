"""The engine-neutral resilience pieces (lingecho.resilience), without any engine or server."""

from __future__ import annotations

import pytest

from lingecho.resilience.breaker import CircuitBreaker
from lingecho.resilience.errors import is_retryable, is_timeout, mark, retryable_status
from lingecho.resilience.failures import FailureReporter
from lingecho.resilience.redaction import redact, register_secret
from lingecho.resilience.retry import RetryPolicy, call_with_retries


class ProviderError(RuntimeError):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- classification ---------------------------------------------------------------------------

def test_only_429_and_5xx_are_worth_retrying():
    assert retryable_status(429) and retryable_status(503)
    assert not retryable_status(400) and not retryable_status(401)


def test_a_marked_error_is_treated_as_marked_and_an_unmarked_one_by_its_type():
    assert not is_retryable(mark(ProviderError("401"), retryable=False))
    assert is_retryable(mark(ProviderError("503"), retryable=True, status=503))
    assert is_retryable(ConnectionResetError()) and is_retryable(TimeoutError())
    assert not is_retryable(ValueError("bad request"))
    assert is_timeout(mark(ProviderError("slow"), retryable=True, timeout=True))


# --- retries ----------------------------------------------------------------------------------

def test_it_retries_with_exponential_backoff_then_succeeds():
    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise mark(ProviderError("503"), retryable=True)
        return "ok"

    policy = RetryPolicy(retries=3, base_delay=0.1, max_delay=0.15)
    assert call_with_retries(flaky, policy, sleep=slept.append) == "ok"
    assert slept == [0.1, 0.15] and len(calls) == 3
    assert policy.delays() == [0.1, 0.15, 0.15]


def test_it_does_not_retry_a_final_error():
    calls = []

    def bad_key():
        calls.append(1)
        raise mark(ProviderError("401"), retryable=False)

    with pytest.raises(ProviderError):
        call_with_retries(bad_key, RetryPolicy(retries=3, base_delay=0), sleep=lambda s: None)
    assert len(calls) == 1


# --- breaker ----------------------------------------------------------------------------------

def test_the_breaker_opens_after_failures_in_a_row_and_half_opens_after_the_reset_time():
    clock = Clock()
    breaker = CircuitBreaker("x", threshold=3, reset_after=30, clock=clock)
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 30
    assert breaker.state == "half-open"
    assert breaker.allow() and not breaker.allow()  # one trial call only
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 30
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_a_success_resets_the_failure_count():
    breaker = CircuitBreaker("x", threshold=2)
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


# --- failure reports and redaction ------------------------------------------------------------

def test_a_report_carries_the_wrappers_code_and_never_the_key():
    register_secret("report-secret-1234")
    heard = []
    reporter = FailureReporter("asr", "openai", heard.append, code="ERR_ASR_FAILED")
    event = reporter.failure(mark(ProviderError("HTTP 500 for key report-secret-1234"), retryable=True,
                                  timeout=True), "faster_whisper")
    reporter.report(event)
    assert heard == [event] and event.code == "ERR_ASR_FAILED" and event.timeout
    assert "report-secret-1234" not in event.message and "timed out" in event.message
    assert event.details() == {"engine": "openai", "fallback": "faster_whisper", "timeout": True}


def test_a_broken_listener_does_not_take_the_call_down(caplog):
    def broken(event):
        raise RuntimeError("listener bug")

    reporter = FailureReporter("brain", "openai", broken)
    reporter.report(reporter.failure(ProviderError("down"), "scripted"))
    assert "engine failure listener raised" in caplog.text


def test_redact_removes_registered_keys_and_bearer_tokens():
    register_secret("my-very-secret-value")
    text = redact("key my-very-secret-value; Authorization: Bearer abc.def; api_key=zzz123 sk-live-ABCDEF123456")
    for secret in ("my-very-secret-value", "abc.def", "zzz123", "sk-live-ABCDEF123456"):
        assert secret not in text
