from __future__ import annotations

import asyncio
import os

import pytest
from django.conf import settings as django_settings
from django.db.backends.signals import connection_created

from tests.factories import make_scenario, make_team, make_user

# Tests pin the call limit: "auto" (the default, media_pipeline/host_capacity.py) sizes it from a
# decode timed at warm-up, and on a machine the suite itself keeps busy that would vary from run to
# run. tests/media_pipeline/test_host_capacity.py tests "auto" itself. Servers the tests start
# inherit it (tests/live_server.py copies the environment).
os.environ.setdefault("MAX_CALLS_PER_WORKER", "10")
if os.environ["MAX_CALLS_PER_WORKER"].strip().lower() != "auto":  # pytest-django loaded the settings first
    django_settings.MAX_CALLS_PER_WORKER = int(os.environ["MAX_CALLS_PER_WORKER"])


def _sqlite_readers_take_no_table_locks(sender, connection, **kwargs) -> None:
    """The in-memory test database is SQLite in shared-cache mode, where a reader's table lock makes
    a concurrent writer fail at once ("database table is locked") instead of waiting; a test polling
    a row then breaks the after-call job it is watching. ``read_uncommitted`` lets shared-cache
    readers skip those locks. The real embedded default is a WAL file, where readers never block."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA read_uncommitted = 1")


connection_created.connect(_sqlite_readers_take_no_table_locks)


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """Tests run on asyncio's own loop whatever was imported at collection: importing
    ``lingecho.server`` (tests/lingecho/test_server.py) installs uvloop's policy process-wide,
    which would otherwise put every later test on uvloop depending on collection order."""
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def charlie(db, alice, bob):
    """A manager whose team is alice and bob."""
    manager = make_user("charlie", role="manager")
    make_team("Team Charlie", managers=[manager], members=[alice, bob])
    return manager


@pytest.fixture
def dave(db):
    return make_user("dave")


@pytest.fixture
def mallory(db):
    return make_user("mallory", role="admin")


@pytest.fixture
def scenario(db):
    return make_scenario()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2's million rounds cost about half a second per user or login; no test here is about hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_media(settings, tmp_path):
    """Every test writes stored files into its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """Each test runs on its own event loop; a channel layer kept from an earlier loop (the Redis
    layer holds loop-bound locks, pools and receive tasks) can leave a task that never finishes
    cancelling when the test's loop closes. A fresh layer per test keeps loops apart."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _no_chunk_sessions_left_behind():
    """The process's chunk sessions are a module-level registry (signaling.chunk_sessions.manager):
    one a test leaves open belongs to that test's loop and channel layer, and a later test that
    drains the registry (the graceful shutdown) would wait on a worker that no longer exists."""
    yield
    from signaling.chunk_sessions import manager

    manager.sessions.clear()


@pytest.fixture
async def media_worker():
    """A media worker on its own in-memory layer, serving the shared channel like the embedded default."""
    from channels.layers import InMemoryChannelLayer

    from media_pipeline.worker import MediaWorker  # imported here: aiortc is heavy for tests that never call

    worker = MediaWorker(InMemoryChannelLayer(capacity=500))
    await worker.ensure_started(serve_shared=True)
    yield worker
    await worker.stop()


@pytest.fixture
async def default_layer_worker():
    """A media worker on the project's channel layer (in-memory, or Redis in the scaled pass) serving
    the shared channel: what in-process consumer tests talk to, as a server's embedded worker would be.
    Its stop closes the calls it still holds, so no call of one test outlives it."""
    from channels.layers import get_channel_layer

    from media_pipeline.worker import MediaWorker

    worker = MediaWorker(get_channel_layer())
    await worker.ensure_started(serve_shared=True)
    yield worker
    await worker.stop()


def _touches_the_backends(item: pytest.Item) -> bool:
    """Whether the test reaches the database, the channel layer or the broker (what the scaled pass swaps)."""
    return bool(
        item.get_closest_marker("scaled")
        or item.get_closest_marker("django_db")
        or {"db", "transactional_db", "live_server"} & set(getattr(item, "fixturenames", ()))
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In `make test`'s scaled pass, run only what the scaled backends can change.

    Pure functions, engines and wire codecs were already run in the embedded pass; running them
    again on PostgreSQL + Redis would test nothing new and cost minutes of CI time.
    """
    if not os.environ.get("LINGECHO_SCALED_PASS"):
        return
    kept, deselected = [], []
    for item in items:
        (kept if _touches_the_backends(item) else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
