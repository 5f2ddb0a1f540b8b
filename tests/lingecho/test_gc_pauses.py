"""Start-up objects are frozen out of full garbage collections (lingecho.gc_pauses)."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

from lingecho.gc_pauses import (
    Housekeeping,
    freeze_loaded_objects,
    freeze_new_objects,
    freeze_survivors_of_full_passes,
    full_collection,
)
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


class Node:
    """A reference cycle's member whose death a weakref can observe."""

    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_frozen_cycle_outlives_young_collections_until_the_full_one():
    """What a closed connection leaves behind: freed by the periodic full collection, not before."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    try:
        freeze_new_objects()
        del a, b
        gc.collect(1)
        assert alive() is not None  # frozen: young (and automatic) passes never look at it
        assert full_collection() >= 2
        assert alive() is None
    finally:
        gc.unfreeze()


def test_housekeeping_freezes_each_step_and_collects_fully_on_its_own_schedule(monkeypatch):
    now = [0.0]
    done: list[str] = []
    monkeypatch.setattr("lingecho.gc_pauses.freeze_new_objects", lambda: done.append("freeze"))
    monkeypatch.setattr("lingecho.gc_pauses.full_collection", lambda: done.append("full"))
    keeper = Housekeeping(freeze_every=30, full_every=100, clock=lambda: now[0])
    for _ in range(8):
        now[0] += 30
        keeper.step()
    assert done == ["freeze", "freeze", "freeze", "full", "freeze", "freeze", "freeze", "full"]


def test_survivors_of_a_full_pass_are_frozen_and_young_passes_freeze_nothing():
    before = [[index] for index in range(1000)]
    try:
        freeze_survivors_of_full_passes()
        gc.collect(1)
        walked = {id(obj) for obj in gc.get_objects()}
        assert id(before[0]) in walked  # a young pass leaves everything collectable
        gc.collect(2)
        walked = {id(obj) for obj in gc.get_objects()}
        assert not any(id(obj) in walked for obj in before)  # survivors of the full pass: frozen
        created_later = [0]
        assert id(created_later) in {id(obj) for obj in gc.get_objects()}
    finally:
        freeze_survivors_of_full_passes(enabled=False)
        gc.unfreeze()
