"""lingecho.event_loop: the server runs Twisted's reactor on uvloop unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lingecho import event_loop
from lingecho.env import ConfigError
from tests.live_server import isolated_env

# What `python -m lingecho.server` runs on: the loop behind the reactor daphne installs at import.
PROBE = (
    "import lingecho.server as s; from twisted.internet import reactor; "
    "print(s.EVENT_LOOP, type(reactor._asyncioEventloop).__module__)"
)


def server_loop(folder: Path, choice: str | None) -> list[str]:
    env = isolated_env(folder)
    env.pop("SERVER_EVENT_LOOP", None)
    if choice is not None:
        env["SERVER_EVENT_LOOP"] = choice
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_server_process_runs_the_reactor_on_uvloop_by_default(tmp_path):
    kind, module = server_loop(tmp_path, None)
    assert kind == "uvloop"
    assert module == "uvloop"


def test_the_standard_loop_on_request(tmp_path):
    kind, module = server_loop(tmp_path, "asyncio")
    assert kind == "asyncio"
    assert module.startswith("asyncio")


def test_auto_falls_back_without_uvloop_and_an_explicit_choice_fails_loudly(monkeypatch):
    monkeypatch.setattr(event_loop.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv("SERVER_EVENT_LOOP", "auto")
    assert event_loop.configured_loop() == "asyncio"
    monkeypatch.setenv("SERVER_EVENT_LOOP", "uvloop")
    with pytest.raises(ConfigError, match="not installed"):
        event_loop.configured_loop()
    monkeypatch.setenv("SERVER_EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="must be one of"):
        event_loop.configured_loop()
