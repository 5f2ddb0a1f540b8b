"""MAX_CALLS_PER_WORKER=auto: the call limit sized to the host from one reference decode at warm-up."""

from __future__ import annotations

import pytest

from media_pipeline import host_capacity
from media_pipeline.worker import _limit


@pytest.mark.parametrize(("reference_ms", "cores", "calls"), [
    (52, 2, 12),  # bench/capacity.py on this host: 12 calls at p95 <= 1.0 s, 14 at 1.47 s, 16 at 1.62 s
    (58, 2, 12),  # the same host measured a little slower at its warm-up keeps the same limit
    (78, 2, 8),  # a slower 2-core host
    (400, 2, 1),  # a host that can barely decode still takes one call
    (10, 2, 12),  # never more than one worker's event loop carries
    (78, 4, 12),
    (30, 16, 12),
    (78, 1, 4),
])
def test_the_limit_follows_the_decode_cost_and_the_cores(reference_ms, cores, calls):
    assert host_capacity.limit_for(reference_ms, cores) == calls


def test_the_warm_up_measures_the_host_with_the_live_model(monkeypatch):
    from media_pipeline.engine_pool import asr_options
    from media_pipeline.engines import get_asr_engine

    monkeypatch.setattr(host_capacity, "_measured", None)
    monkeypatch.setattr(host_capacity, "_reference_ms", None)
    assert host_capacity.calls_limit() == host_capacity.FALLBACK, "before the warm-up measured"
    calls = host_capacity.measure(get_asr_engine("faster_whisper", **asr_options()))
    assert 1 <= calls <= host_capacity.MAX_PER_WORKER
    assert host_capacity.reference_ms() > 5, "a real decode of the 10 s window, not a short cut"
    assert host_capacity.calls_limit() == calls == host_capacity.limit_for(host_capacity.reference_ms(),
                                                                           host_capacity.usable_cores())


def test_an_explicit_limit_wins_and_chunk_calls_keep_theirs(settings, monkeypatch):
    monkeypatch.setattr(host_capacity, "_measured", 3)
    settings.MAX_CHUNK_CALLS_PER_WORKER = 40
    settings.MAX_CALLS_PER_WORKER = None  # auto
    assert (_limit("webrtc"), _limit("chunk")) == (3, 40)
    settings.MAX_CALLS_PER_WORKER = 7
    assert _limit("webrtc") == 7
    settings.MAX_CALLS_PER_WORKER = 0
    assert _limit("webrtc") == 0, "0 is still no limit"


def test_auto_is_the_default_and_a_number_or_auto_can_be_set():
    import os
    import subprocess
    import sys

    def configured(value: str | None) -> str:
        env = {k: v for k, v in os.environ.items() if k != "MAX_CALLS_PER_WORKER"}
        if value is not None:
            env["MAX_CALLS_PER_WORKER"] = value
        code = "from lingecho import settings; print(settings.MAX_CALLS_PER_WORKER)"
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        return done.stdout.strip() or done.stderr.strip().splitlines()[-1]

    assert configured(None) == "None"  # auto
    assert configured("auto") == "None"
    assert configured("4") == "4"
    assert "not an integer" in configured("many")
