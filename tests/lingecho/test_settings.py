"""Settings come only from the environment, and a malformed value stops start-up loudly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lingecho.env import ConfigError, envbool, envint, parse_database_url


def _start(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "manage.py", "check"], env=env, capture_output=True, text=True, timeout=120)


def test_it_starts_with_no_variables_set():
    result = _start({})
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("WS_MAX_MESSAGE_BYTES", "lots", "WS_MAX_MESSAGE_BYTES='lots' is not an integer"),
        ("DATABASE_URL", "mysql://x@y/z", "scheme must be postgres:// or sqlite:///"),
        ("LINGECHO_STORAGE", "ftp", "LINGECHO_STORAGE='ftp' must be one of"),
        ("REDIS_URL", "http://localhost", "REDIS_URL: scheme must be one of"),
    ],
)
def test_it_refuses_to_start_on_malformed_values(name, value, expected):
    result = _start({name: value})
    assert result.returncode != 0
    assert expected in result.stderr


def test_envbool_accepts_common_spellings(monkeypatch):
    monkeypatch.setenv("FLAG", "Yes")
    assert envbool("FLAG") is True
    monkeypatch.setenv("FLAG", "off")
    assert envbool("FLAG", True) is False


def test_envint_enforces_bounds(monkeypatch):
    monkeypatch.setenv("N", "3")
    with pytest.raises(ConfigError, match="below the minimum 10"):
        envint("N", 20, minimum=10)


def test_database_url_parses_postgres_with_escaped_password():
    db = parse_database_url("DATABASE_URL", "postgres://me:p%40ss@db.example:6543/app")
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "app",
        "me",
        "p@ss",
        "db.example",
        "6543",
    )


def test_database_url_error_never_echoes_the_password():
    with pytest.raises(ConfigError) as info:
        parse_database_url("DATABASE_URL", "mysql://me:secret@db/app")
    assert "secret" not in str(info.value)
