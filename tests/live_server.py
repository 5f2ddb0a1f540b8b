"""What every live-server test shares: a free port and an environment for a server subprocess.

A live server started by a test is always the embedded default on its own throwaway SQLite file
and media folder, whatever the test process itself runs against: in `make test`'s scaled pass
the test process has DATABASE_URL/REDIS_URL set, and a subprocess inheriting them would write
into the shared `test` database instead of the file the test then reads. A test that wants the
scaled stack (Redis, external media workers) passes those variables back in explicitly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALED_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LINGECHO_STORAGE", "MEDIA_WORKER_MODE")
ROOT = Path(__file__).resolve().parents[1]
# What ``migrate``/``create_demo_data``/``issue_token`` read: an environment that differs in one of
# these gets a template of its own (prepared_database).
_TEMPLATE_VARIABLES = ("DJANGO_SETTINGS_MODULE", "LINGECHO_DEMO_PASSWORD", "SECRET_KEY", "JWT_ACCESS_MINUTES", "DEBUG")
_TEMPLATES: dict[tuple[str, ...], tuple[Path, str, float]] = {}  # variables -> (SQLite file, token, made at)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(folder: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCALED_VARIABLES}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "lingecho.settings",
            "SQLITE_PATH": str(folder / "db.sqlite3"),
            "MEDIA_ROOT": str(folder / "media"),
        }
    )
    env.update(overrides)
    return env


def server_command(port: int) -> list[str]:
    """The command ``make run`` serves with (lingecho.server: daphne with sliced sweeps)."""
    return [sys.executable, "-m", "lingecho.server", "-b", "127.0.0.1", "-p", str(port), "lingecho.asgi:application"]


def manage(env: dict[str, str], *args: str) -> str:
    """``python manage.py ARGS`` in ``env``; its output (asserted to succeed)."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def prepared_database(env: dict[str, str]) -> str:
    """``env``'s SQLite file migrated with the demo data; returns a trainee's access token.

    ``migrate``, ``create_demo_data`` and ``issue_token`` cost three Django start-ups (~6 s); they
    run once per test process for each variant of the settings they read, into a template that
    every later server gets a copy of (SQLite's backup API: a consistent copy). The token stays
    valid for a copy: the same users, the same key (``.secret_key`` beside ``manage.py``), and a
    lifetime (``JWT_ACCESS_MINUTES``) of which a template serves only the first half.
    """
    if env.get("DATABASE_URL"):  # not a SQLite file of the server's own: nothing to copy
        manage(env, "migrate", "--noinput")
        manage(env, "create_demo_data")
        return manage(env, "issue_token", "trainee").splitlines()[-1]
    key = tuple(env.get(name, "") for name in _TEMPLATE_VARIABLES)
    template = _TEMPLATES.get(key)
    renew_after = int(env.get("JWT_ACCESS_MINUTES") or 60) * 30  # half the token's lifetime, in s
    if template is None or time.monotonic() - template[2] > renew_after:
        folder = Path(tempfile.mkdtemp(prefix="live-server-template-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        making = {**env, "SQLITE_PATH": str(folder / "db.sqlite3"), "MEDIA_ROOT": str(folder / "media")}
        manage(making, "migrate", "--noinput")
        manage(making, "create_demo_data")
        token = manage(making, "issue_token", "trainee").splitlines()[-1]
        template = _TEMPLATES[key] = (folder / "db.sqlite3", token, time.monotonic())
    with contextlib.closing(sqlite3.connect(template[0])) as source, contextlib.closing(
        sqlite3.connect(env["SQLITE_PATH"])
    ) as copy:
        source.backup(copy)
    return template[1]
