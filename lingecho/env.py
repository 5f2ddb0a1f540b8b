"""Tiny helpers that read settings from the environment and fail loudly.

A malformed value (``PORT=eighty``) must stop start-up with a message naming the variable,
not fall back silently to a default the operator never asked for.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse


class ConfigError(RuntimeError):
    """A configuration variable is present but malformed."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use one of 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above the maximum {maximum}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    return value


def envlist(name: str, default: str = "") -> list[str]:
    raw = os.environ.get(name, default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip()
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of: {', '.join(choices)}")
    return value


_DB_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def parse_database_url(name: str, raw: str) -> dict:
    """Turn ``postgres://user:pw@host:5432/db`` or ``sqlite:///path`` into a Django DATABASES entry."""
    parsed = urlparse(raw)
    engine = _DB_ENGINES.get(parsed.scheme)
    if engine is None:
        raise ConfigError(f"{name}={raw.split('@')[-1]!r}: scheme must be postgres:// or sqlite:///")
    if engine.endswith("sqlite3"):
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs/path.db -> "/abs/path.db"
        path = parsed.path[1:]
        if not path:
            raise ConfigError(f"{name}: sqlite URL needs a path, e.g. sqlite:///db.sqlite3")
        return {"ENGINE": engine, "NAME": path}
    dbname = parsed.path.lstrip("/")
    if not dbname:
        raise ConfigError(f"{name}: the URL has no database name")
    try:
        port = parsed.port
    except ValueError:
        raise ConfigError(f"{name}: the port is not a number") from None
    return {
        "ENGINE": engine,
        "NAME": unquote(dbname),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(port or ""),
        "CONN_MAX_AGE": 60,
        # A kept connection is checked before a request uses it: after PostgreSQL restarts or the
        # network drops, the first request reconnects instead of failing on a dead socket.
        "CONN_HEALTH_CHECKS": True,
    }


def envurl(name: str, default: str = "", *, schemes: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default).strip()
    if raw and urlparse(raw).scheme not in schemes:
        raise ConfigError(f"{name}: scheme must be one of {', '.join(s + '://' for s in schemes)}")
    return raw
