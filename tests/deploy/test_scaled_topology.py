"""The scaled topology as ``make run-scaled`` brings it up, driven through nginx by real aiortc clients.

``deploy/run_scaled.py`` starts nginx, two servers, two media workers, a Celery worker and beat on
PostgreSQL (a database made for this test), Redis and moto's S3 server. Ten calls go through nginx:
they land on both servers (each session's ``owner`` is its server's process) and on both media
workers (each worker's heartbeat says how many calls it holds). Then one media worker is killed
(SIGKILL): its calls get ``ERR_WEBRTC_FAILED`` and their new offers land on the other worker; then
one server is killed: its clients reconnect through nginx with ``?session=`` and carry on with the
same session. Every session ends processed, its recording archived in the S3 bucket.

Runs in the scaled pass (PostgreSQL and Redis); skips with the launcher's own one-line refusal when
a service or nginx is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.voice import talk as talk_on
from tests.live_server import SCALED_VARIABLES, free_port
from tests.media_pipeline.live import WsPeer, ws_connect_media
from tests.media_pipeline.voice_client import VoiceClient

pytestmark = [pytest.mark.slow, pytest.mark.scaled]

ROOT = Path(__file__).resolve().parents[2]
ADMIN_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgres://root@127.0.0.1:5432/test")
REDIS = "redis://127.0.0.1:6379"
REDIS_DBS = (7, 8)  # channel layer + cache, Celery broker: flushed before the run
CALLS = 10


@dataclass
class Front:
    """What WsPeer needs of a stack: nginx's port and a trainee token."""

    port: int
    token: str = ""


@dataclass
class ScaledRun:
    folder: Path
    http_port: int = field(default_factory=free_port)
    database: str = field(default_factory=lambda: f"lingecho_deploy_{secrets.token_hex(4)}")
    proc: subprocess.Popen | None = None

    # --- the launcher -------------------------------------------------------------------------

    def database_url(self, name: str) -> str:
        return ADMIN_DATABASE_URL.rsplit("/", 1)[0] + "/" + name

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.database_url("test").replace("postgres://", "postgresql://", 1),
                             autocommit=True, connect_timeout=3) as conn:
            conn.execute(sql)

    def start(self) -> ScaledRun:
        import psycopg
        import redis

        try:
            self.admin(f'CREATE DATABASE "{self.database}"')
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL at {ADMIN_DATABASE_URL} not reachable: {str(exc).splitlines()[0]}")
        for db in REDIS_DBS:
            try:
                redis.Redis.from_url(f"{REDIS}/{db}", socket_connect_timeout=1).flushdb()
            except redis.RedisError as exc:
                pytest.skip(f"Redis at {REDIS} not reachable: {exc}")
        env = {k: v for k, v in os.environ.items() if k not in SCALED_VARIABLES and k != "LINGECHO_SCALED_PASS"}
        env.update(
            DATABASE_URL=self.database_url(self.database),
            REDIS_URL=f"{REDIS}/{REDIS_DBS[0]}",
            CELERY_BROKER_URL=f"{REDIS}/{REDIS_DBS[1]}",
            MAX_LIVE_SESSIONS_PER_USER="100",  # ten calls by one trainee
            MAX_CALLS_PER_WORKER=str(CALLS),  # after one worker dies the other takes every call left
            LOG_LEVEL="INFO",
            LINGECHO_CELERY_CONCURRENCY="2",  # ten after-call jobs at the end
        )
        self.log = self.folder / "run-scaled.log"
        self.proc = subprocess.Popen(
            [sys.executable, "deploy/run_scaled.py", "--http-port", str(self.http_port),
             "--run-dir", str(self.folder / "run")],
            cwd=ROOT, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._wait_ready()
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 150
        while True:
            if self.proc.poll() is not None:
                refusal = [line for line in self.output().splitlines() if line.startswith("run-scaled:")]
                if self.proc.returncode == 2 and refusal:
                    pytest.skip(refusal[-1])  # the launcher's own reason (no nginx, PostgreSQL, Redis)
                pytest.fail(f"run_scaled.py exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            assert time.monotonic() < deadline, f"the scaled run did not come up:\n{self.output()[-3000:]}"
            if len(self.pids()) == 8 and "bucket lingecho-local" in self.output():
                try:
                    ready = self.get("/readyz")
                    if ready["checks"]["media_worker"]["live"] == 2 and all(
                        self.get("/healthz", port=port)["status"] == "ok" for port in self.server_ports().values()
                    ):
                        return
                except OSError:
                    pass
            time.sleep(0.5)

    def pids(self) -> dict[str, int]:
        """Procfile name -> pid, from honcho's "<name> started (pid=N)" lines."""
        return {m[1]: int(m[2]) for m in re.finditer(r"\| (\w+) started \(pid=(\d+)\)", self.output())}

    def server_ports(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"(web\d) on 127\.0\.0\.1:(\d+)", self.output())}

    def s3_port(self) -> int:
        return int(re.search(r"S3 \(moto, in memory\) on 127\.0\.0\.1:(\d+)", self.output())[1])

    def kill(self, name: str) -> None:
        os.kill(self.pids()[name], signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # honcho drains every process, SIGKILLs stragglers
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        try:
            self.admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        except Exception:  # noqa: BLE001 - nothing to drop when PostgreSQL was never reachable
            pass

    # --- HTTP through nginx ---------------------------------------------------------------------

    def get(self, path: str, *, token: str = "", port: int | None = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{port or self.http_port}{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def token(self) -> str:
        body = json.dumps({"username": "trainee", "password": "lingecho-demo"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/api/auth/token/", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access"]

    # --- what the processes say about themselves ------------------------------------------------

    def session_owners(self) -> dict[str, str]:
        """Session id -> the server (web1/web2) whose process owns it."""
        import psycopg

        by_pid = {str(pid): name for name, pid in self.pids().items()}
        with psycopg.connect(self.database_url(self.database).replace("postgres://", "postgresql://", 1)) as conn:
            rows = conn.execute("SELECT id, owner FROM roleplay_realtimesession").fetchall()
        return {str(sid): by_pid.get(owner.split(":")[1], owner) for sid, owner in rows if owner}

    def calls_per_worker(self) -> dict[str, int]:
        """Procfile name of each live media worker -> the calls its latest heartbeat reports."""
        from django.core.cache.backends.redis import RedisCache

        cache = RedisCache(f"{REDIS}/{REDIS_DBS[0]}", {})
        ids = cache.get("lingecho:media-workers") or []
        beats = cache.get_many([f"lingecho:media-worker:{i}" for i in ids])
        by_pid = {pid: name for name, pid in self.pids().items()}
        found: dict[str, int] = {}
        for key, beat in beats.items():
            if time.time() - beat["at"] < 15:
                pid = int(key.rsplit(":", 1)[-1].split("-")[-2])
                found[by_pid.get(pid, str(pid))] = beat["calls"]
        return found

    def s3_keys(self, session_id: str) -> list[str]:
        import boto3

        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{self.s3_port()}", region_name="us-east-1",
                          aws_access_key_id="lingecho-local", aws_secret_access_key="lingecho-local")
        listing = s3.list_objects_v2(Bucket="lingecho-local", Prefix=f"sessions/{session_id}/")
        return [item["Key"] for item in listing.get("Contents", [])]


async def until(what: str, check, timeout: float = 60.0, every: float = 0.5) -> Any:
    """Poll ``check`` (sync, run off the loop) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


@dataclass
class Call:
    peer: WsPeer
    client: VoiceClient

    async def reoffer(self) -> None:
        await self.client.close()
        self.client = VoiceClient("pcma")
        await ws_connect_media(self.peer, self.client)

    async def close(self) -> None:
        await self.peer.close()
        await self.client.close()


async def talk(call: Call) -> None:
    await talk_on(call.peer, call.client)


async def open_call(front: Front, scenario: int, *, session: str = "") -> Call:
    peer = WsPeer(front, scenario)
    if session:
        peer.url += f"&session={session}"
    await peer.start()
    client = VoiceClient("pcma")
    await ws_connect_media(peer, client)
    return Call(peer, client)


@pytest.fixture
def scaled_run(tmp_path):
    run = ScaledRun(tmp_path)
    try:
        yield run.start()
    finally:
        run.stop()


async def test_ten_calls_through_nginx_survive_a_killed_media_worker_and_a_killed_server(scaled_run):
    run = scaled_run
    started = time.monotonic()
    front = Front(run.http_port, await asyncio.to_thread(run.token))
    listing = await asyncio.to_thread(run.get, "/api/scenarios/", token=front.token)
    scenario = (listing["results"] if isinstance(listing, dict) else listing)[0]["id"]
    calls: list[Call] = []
    try:
        # --- ten calls through nginx: both servers, both media workers ----------------------------
        opening = asyncio.Semaphore(3)  # a few at a time, as people arrive: ten at once swamp two cores

        async def arrive() -> Call:
            async with opening:
                return await open_call(front, scenario)

        calls = list(await asyncio.gather(*(arrive() for _ in range(CALLS))))
        talked = calls[:2]
        await asyncio.gather(*(talk(c) for c in talked))
        owners = await asyncio.to_thread(run.session_owners)
        assert sorted(owners) == sorted(c.peer.session_id for c in calls)
        assert set(owners.values()) == {"web1", "web2"}, owners

        def processed(session_id: str) -> dict[str, Any] | None:
            detail = run.get(f"/api/sessions/{session_id}/", token=front.token)
            return detail if detail["processing"] in ("done", "failed") else None

        def counted(total: int) -> dict[str, int] | None:
            counts = run.calls_per_worker()
            return counts if sum(counts.values()) == total else None

        per_worker = await until("every call in a heartbeat", lambda: counted(CALLS))
        assert set(per_worker) == {"media1", "media2"} and min(per_worker.values()) > 0, per_worker
        phases = [f"10 calls up {time.monotonic() - started:.0f} s"]

        # Fewer calls for the kill steps (their after-call jobs start now): fewer than either worker
        # holds, so both keep some, and only web2's, so web1 keeps all of its own.
        done_early = [c for c in calls if owners[c.peer.session_id] == "web2"][: min(per_worker.values()) - 1]
        await asyncio.gather(*(c.close() for c in done_early))
        calls = [c for c in calls if c not in done_early]
        before_kill = await until("the remaining calls in a heartbeat", lambda: counted(len(calls)))
        assert min(before_kill.get("media1", 0), before_kill.get("media2", 0)) > 0, before_kill
        # A closed call leaves the heartbeat count before its worker has stored the end of its
        # recording; killed in between, that worker loses the seconds not yet in a segment (all of
        # these short calls). That loss is the kill's due, not what this step is about: wait for
        # the early calls' after-call jobs, which start once their recordings are stored.
        for call in done_early:
            await until(f"session {call.peer.session_id} processed",
                        lambda sid=call.peer.session_id: processed(sid), timeout=120)

        # --- a media worker dies: its calls are told, and re-offer to the other -------------------
        run.kill("media1")
        lost = before_kill["media1"]

        def told() -> list[Call]:
            return [c for c in calls if any(e["data"].get("code") == "ERR_WEBRTC_FAILED"
                                            for e in c.peer.of_type("error"))]

        await until(f"{lost} calls told ERR_WEBRTC_FAILED", lambda: len(told()) == lost, timeout=60)
        failed = told()
        assert {e["data"]["details"]["error_type"] for c in failed for e in c.peer.of_type("error")} == {
            "media_worker_lost"}
        await asyncio.gather(*(call.reoffer() for call in failed))
        await until("every call on media2", lambda: run.calls_per_worker() == {"media2": len(calls)})
        await talk(next((c for c in failed if c not in talked), failed[0]))
        phases.append(f"media1 killed, {lost} re-offered {time.monotonic() - started:.0f} s")
        # The calls web1 does not hold are done: ending them now lets the after-call jobs start.
        await asyncio.gather(*(c.close() for c in calls if owners[c.peer.session_id] == "web2"))
        calls = [c for c in calls if owners[c.peer.session_id] == "web1"]

        # --- a server dies: its clients resume their sessions through nginx -----------------------
        run.kill("web1")
        orphans = [c.peer.session_id for c in calls]
        # A call that has not spoken yet speaks after the resume. (One that spoke before the kill,
        # re-offered to the worker still holding its call, sometimes hears nothing more: reported.)
        quiet = next((c.peer.session_id for c in calls if c not in talked), orphans[0])
        await asyncio.gather(*(c.close() for c in calls))
        calls = list(await asyncio.gather(*(open_call(front, scenario, session=sid) for sid in orphans)))
        assert [c.peer.session_id for c in calls] == orphans
        owners_after = await asyncio.to_thread(run.session_owners)
        assert {owners_after[sid] for sid in orphans} == {"web2"}
        await talk(next(c for c in calls if c.peer.session_id == quiet))
        await asyncio.gather(*(c.close() for c in calls))
        calls = []
        phases.append(f"web1 killed, {len(orphans)} resumed {time.monotonic() - started:.0f} s")

        # --- every session ends, is processed, and its recording is in the bucket ----------------
        for session_id in owners:
            detail = await until(f"session {session_id} processed", lambda sid=session_id: processed(sid), timeout=180)
            assert detail["state"] == "ended" and detail["processing"] == "done", detail.get("processing_detail")
            keys = await asyncio.to_thread(run.s3_keys, session_id)
            assert f"sessions/{session_id}/archive/recording.webm" in keys, keys
        phases.append(f"all processed {time.monotonic() - started:.0f} s")
        print(f"\ncalls per server {list(owners.values()).count('web1')}/{list(owners.values()).count('web2')}, "
              f"per media worker {per_worker} (at the kill {before_kill}); " + "; ".join(phases))
    finally:
        await asyncio.gather(*(c.close() for c in calls), return_exceptions=True)
