"""lingecho.server: daphne's per-connection sweeps, cut into slices that keep the loop free."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from lingecho import server as lingecho_server
from lingecho.server import SWEEP_STEPS, SlicedSweepServer, _Sweep


@pytest.fixture
def scheduled(monkeypatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(lingecho_server.reactor, "callLater", lambda delay, fn: delays.append(delay))
    return delays


def test_every_connection_is_visited_once_per_period_a_slice_at_a_time(scheduled):
    connections = {f"conn{i}": {} for i in range(59)}
    visits: list[list[str]] = []
    sweep = _Sweep(SimpleNamespace(connections=connections), 2.0, lambda protocol, _: visits[-1].append(protocol))
    for _ in range(SWEEP_STEPS):
        visits.append([])
        sweep.step()
    assert sorted(p for step in visits for p in step) == sorted(connections)  # each exactly once
    assert max(len(step) for step in visits) == 3  # ceil(59 / 20)
    assert scheduled == [2.0 / SWEEP_STEPS] * SWEEP_STEPS  # the period is kept


def test_connections_gone_since_the_snapshot_are_skipped_and_new_ones_join_the_next_period(scheduled):
    connections = {"a": {}, "b": {}}
    seen: list[str] = []
    sweep = _Sweep(SimpleNamespace(connections=connections), 1.0, lambda protocol, _: seen.append(protocol))
    sweep.step()  # snapshot [a, b]; one per step
    del connections["b"]
    connections["c"] = {}
    sweep.step()
    sweep.step()  # new snapshot [a, c]
    sweep.step()
    assert seen == ["a", "a", "c"]


def test_a_visit_that_raises_still_keeps_the_sweep_going(scheduled):
    def boom(protocol, details):
        raise RuntimeError("bad connection")

    sweep = _Sweep(SimpleNamespace(connections={"a": {}}), 1.0, boom)
    with pytest.raises(RuntimeError):
        sweep.step()
    assert scheduled == [1.0 / SWEEP_STEPS]


class Protocol:
    def __init__(self) -> None:
        self.handled: list[BaseException] = []

    def handle_exception(self, exc: BaseException) -> None:
        self.handled.append(exc)


async def test_finished_applications_are_reaped_and_closed_connections_forgotten():
    srv = SlicedSweepServer(application=None, endpoints=["tcp:port=0"], application_close_timeout=10)
    loop = asyncio.get_running_loop()
    failed, finished, stuck = loop.create_future(), loop.create_future(), loop.create_future()
    failed.set_exception(ValueError("consumer crashed"))
    finished.set_result(None)
    live_fail, closed, late = Protocol(), Protocol(), Protocol()
    srv.connections = {
        live_fail: {"application_instance": failed},
        closed: {"application_instance": finished, "disconnected": 1.0},
        late: {"application_instance": stuck, "disconnected": 1.0},  # closed long ago, app still running
    }
    for protocol, details in list(srv.connections.items()):
        srv._check_application(protocol, details)
    assert [str(e) for e in live_fail.handled] == ["consumer crashed"]  # still open: told about it
    assert "application_instance" not in srv.connections[live_fail]
    assert closed not in srv.connections
    assert stuck.cancelled()  # closed long ago and still running: killed and reaped
    assert late not in srv.connections and late.handled == []
