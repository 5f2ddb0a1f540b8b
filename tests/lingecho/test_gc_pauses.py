"""Start-up objects are frozen out of full garbage collections (lingecho.gc_pauses)."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from lingecho.gc_pauses import freeze_loaded_objects
from tests.live_server import isolated_env

ROOT = Path(__file__).resolve().parents[2]


def test_loaded_objects_leave_the_collected_generations_and_new_ones_do_not():
    loaded = [[index] for index in range(2000)]  # stand-ins for a module's long-lived containers
    try:
        frozen = freeze_loaded_objects()
        created_later = [0]
        walked = {id(obj) for obj in gc.get_objects()}  # what a full collection would walk
        assert frozen >= len(loaded)
        assert not any(id(obj) in walked for obj in loaded)
        assert id(created_later) in walked
    finally:
        gc.unfreeze()


def test_the_asgi_application_freezes_what_it_loaded(tmp_path):
    """In a fresh interpreter, as daphne loads it: importing the app leaves Django & co. frozen."""
    code = "import gc, lingecho.asgi; print(gc.get_freeze_count())"
    env = isolated_env(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 100_000
