"""Which asyncio event loop the server process runs on: uvloop by default.

daphne runs Twisted's asyncio reactor, so every socket read, every write and every timer of the
server goes through the asyncio loop's ``add_reader``/``add_writer``/``call_later``. Twisted never
writes straight away: each outgoing frame registers the socket for writing and unregisters it once
flushed, two ``epoll_ctl`` calls plus the pure-Python bookkeeping of asyncio's selector loop around
them (~16 % of the server's loop under bench/signaling.py's ping load). uvloop does the same work in
C. Measured with the same client at 2,000 pings/s over 1,000 sockets: ping → pong p99 2.9–4.2 ms
instead of 6–33 ms, and 5,300–7,700 instead of 4,900–5,400 pongs/s per process (docs/performance.md).

daphne creates its loop when ``daphne.server`` is imported, so :func:`install` must run before
that import. ``SERVER_EVENT_LOOP=asyncio`` keeps the standard loop (for debugging, or a platform
without uvloop).
"""

from __future__ import annotations

import asyncio
import importlib.util

from lingecho.env import ConfigError, envchoice

CHOICES = ("auto", "uvloop", "asyncio")


def configured_loop() -> str:
    """The loop ``SERVER_EVENT_LOOP`` asks for: ``auto`` means uvloop where it is installed."""
    choice = envchoice("SERVER_EVENT_LOOP", "auto", CHOICES)
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not has_uvloop:
        raise ConfigError("SERVER_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)")
    if choice == "auto":
        return "uvloop" if has_uvloop else "asyncio"
    return choice


def install() -> str:
    """Make new event loops of this process the configured kind; returns which one."""
    kind = configured_loop()
    if kind == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return kind
