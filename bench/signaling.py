"""Benchmark the /ws/voice/ signaling server: idle connections per process, memory per connection,
ping→pong round trip under load, and messages per second per process.

    .venv/bin/python bench/signaling.py [--idle 5000] [--rate 2000] [--seconds 10]

Starts one daphne subprocess on a free port with a throwaway SQLite DB (migrated, demo data),
then drives it from this one asyncio process with the ``websockets`` client. Memory is the
server's RSS growth divided by the connections held. Targets: 5,000 idle connections at
≤ 50 KB each; p99 ≤ 10 ms at 2,000 msg/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]


def raise_nofile(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, wanted))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PauseProbe:
    """This client's own full garbage collections: a pause here delays every pong it reads."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((time.perf_counter() - self._started) * 1000)

    def summary(self) -> str:
        if not self.pauses:
            return "none"
        return f"{len(self.pauses)}, longest {max(self.pauses):.0f} ms"


def steal_seconds() -> float:
    """CPU time the hypervisor gave other guests while ours wanted it (all cores; 0 on bare metal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip()


def start_server(tmp: Path, sessions: int, server_module: str) -> tuple[subprocess.Popen, int, str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "lingecho.settings",
        "SQLITE_PATH": str(tmp / "db.sqlite3"),
        "MAX_LIVE_SESSIONS_PER_USER": str(sessions + 10),
        "WS_RATE_PER_SECOND": "1000",
        "WS_RATE_BURST": "1000",
        # Idle means idle: the bench's sockets do not answer server pings, so keep the idle cut-off away.
        "WS_IDLE_TIMEOUT_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
        # Signaling alone: no in-process media worker competing for the loop.
        "MEDIA_WORKER_MODE": "external",
    }
    manage(env, "migrate", "--noinput")
    manage(env, "create_demo_data")
    token = manage(env, "issue_token", "trainee").splitlines()[-1]
    scenario = manage(
        env, "shell", "-c", "from roleplay.models import Scenario; print(Scenario.objects.order_by('pk').first().pk)"
    ).splitlines()[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        # Inherits this process's raised open-file limit.
        [
            sys.executable,
            "-m",
            server_module,
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--access-log",
            os.devnull,
            "lingecho.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("BENCH_LOG", tmp / "daphne.log"), "w"),  # noqa: SIM115 - lives as long as the process
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((tmp / "daphne.log").read_text()[-3000:]) from None
            time.sleep(0.2)
    return proc, port, token, scenario


# max_queue=None: an idle socket never reads, and a full queue would stop websockets from reading the
# transport at all, so daphne's protocol-level pings would go unanswered and it would drop the socket.
async def open_one(url: str) -> tuple[websockets.ClientConnection, str]:
    ws = await websockets.connect(url, ping_interval=None, max_queue=None, compression=None)
    init = json.loads(await ws.recv())
    await ws.recv()  # opening line
    return ws, init["session_id"]


async def hold_idle(url: str, count: int, pid: int) -> list[tuple[websockets.ClientConnection, str]]:
    base = rss_kb(pid)
    conns: list[tuple[websockets.ClientConnection, str]] = []
    started = time.perf_counter()
    batch = 50  # each connect creates a session row: keep the SQLite writer from queueing too deep
    while len(conns) < count:
        n = min(batch, count - len(conns))
        results = await asyncio.gather(*(open_one(url) for _ in range(n)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                print(f"  connect failed after {len(conns)}: {r!r}")
                return conns
            conns.append(r)
    elapsed = time.perf_counter() - started
    # The sockets held here are the client's long-lived objects too: keep them out of its full GC
    # passes (each walked them all, ~0.1 s per 1,000 sockets) so the RTTs measure the server.
    gc.collect()
    gc.freeze()
    await asyncio.sleep(2)
    grown = rss_kb(pid) - base
    print(
        f"idle connections held : {len(conns)} in one process (opened in {elapsed:.1f} s, "
        f"{len(conns) / elapsed:.0f} connects/s: each creates a session and persists the opening line)"
    )
    print(f"server RSS            : {base / 1024:.1f} MB before, {(base + grown) / 1024:.1f} MB after")
    print(f"memory per connection : {grown / max(1, len(conns)):.1f} KB (target <= 50 KB)")
    return conns


async def ping_load(conns: list[tuple[websockets.ClientConnection, str]], rate: int, seconds: float, pid: int) -> None:
    """Open-loop pings at ``rate`` msg/s spread over the connections; RTT measured per ping."""
    active = conns[: min(len(conns), max(20, rate // 10))]  # ~10 pings/s each: below the per-socket rate limit
    rtts: list[float] = []
    sent = 0

    async def reader(ws: websockets.ClientConnection, pending: list[float]) -> None:
        try:
            async for raw in ws:
                if raw.startswith('{"type":"pong"') and pending:
                    rtts.append((time.perf_counter() - pending.pop(0)) * 1000)
        except websockets.ConnectionClosed:
            pass

    probe = PauseProbe()
    pendings = [[] for _ in active]
    readers = [asyncio.create_task(reader(ws, p)) for (ws, _), p in zip(active, pendings, strict=True)]
    frames = [json.dumps({"type": "ping", "session_id": sid, "data": {}}) for _, sid in active]
    cpu0, client0, steal0, t0 = cpu_seconds(pid), own_cpu_seconds(), steal_seconds(), time.perf_counter()
    interval = 1.0 / rate
    next_at = t0
    i = 0
    while time.perf_counter() - t0 < seconds:
        k = i % len(active)
        pendings[k].append(time.perf_counter())
        await active[k][0].send(frames[k])
        sent += 1
        i += 1
        next_at += interval
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.5)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    client_cpu = own_cpu_seconds() - client0
    steal = steal_seconds() - steal0
    for task in readers:
        task.cancel()
    rtts.sort()
    q = statistics.quantiles(rtts, n=100) if len(rtts) > 2 else [float("nan")] * 99
    print(f"ping load             : {sent / seconds:.0f} msg/s offered over {len(active)} sockets for {seconds:.0f} s")
    print(f"pongs received        : {len(rtts)} of {sent}")
    print(f"ping->pong RTT        : p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms (target p99 <= 10 ms)")
    print(
        f"server CPU            : {cpu / elapsed * 100:.0f} % of one core at that rate "
        f"(this client: {client_cpu / elapsed * 100:.0f} %; RTTs include its own delays)"
    )
    print(f"client full GC passes : {probe.summary()} during the ping load")
    print(f"hypervisor steal      : {steal / elapsed * 100:.1f} % of one core (this VM's cores taken by other guests)")


async def throughput(conns: list[tuple[websockets.ClientConnection, str]], seconds: float, pid: int) -> None:
    """Closed loop, several pings in flight per socket: the most pongs one process turns out."""
    active = conns[:200]
    done = 0
    stop = time.perf_counter() + seconds

    async def loop(ws: websockets.ClientConnection, sid: str) -> None:
        nonlocal done
        frame = json.dumps({"type": "ping", "session_id": sid, "data": {}})
        while time.perf_counter() < stop:
            for _ in range(4):
                await ws.send(frame)
            for _ in range(4):
                raw = await ws.recv()
                done += raw.startswith('{"type":"pong"')

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(loop(ws, sid) for ws, sid in active), return_exceptions=True)
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    print(
        f"messages/s per process: {done / elapsed:.0f} pongs/s ({done * 2 / elapsed:.0f} frames/s both ways), "
        f"server CPU {cpu / elapsed * 100:.0f} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.0, help="wait before the ping load (to attach a profiler)")
    parser.add_argument(
        "--server", default="lingecho.server", help="module run with -m: lingecho.server (make run) or plain daphne"
    )
    parser.add_argument(
        "--client-loop", choices=("uvloop", "asyncio"), default="uvloop", help="this client's event loop"
    )
    args = parser.parse_args()
    if args.client_loop == "uvloop":
        import uvloop

        uvloop.run(run(args))
    else:
        asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    limit = raise_nofile(args.idle * 2 + 256)
    server = f"python -m {args.server}"
    if args.server == "lingecho.server":
        server += f" (SERVER_EVENT_LOOP={os.environ.get('SERVER_EVENT_LOOP', 'auto')})"
    print(f"open-file limit       : {limit}, server: {server}, client loop: {args.client_loop}")
    # The DB on tmpfs when there is one: this measures signaling, not the disk's fsync latency
    # (every connect writes a session row and the opening line).
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        proc, port, token, scenario = start_server(Path(tmp), args.idle, args.server)
        try:
            url = f"ws://127.0.0.1:{port}/ws/voice/?scenario={scenario}&token={token}"
            conns = await hold_idle(url, args.idle, proc.pid)
            if conns:
                if args.pause:
                    print(f"server pid {proc.pid}: ping load starts in {args.pause:.0f} s", flush=True)
                    await asyncio.sleep(args.pause)
                await ping_load(conns, args.rate, args.seconds, proc.pid)
                await throughput(conns, min(args.seconds, 5.0), proc.pid)
            # Leave without disconnect messages: the server marks the sessions dropped.
            await asyncio.gather(*(ws.close() for ws, _ in conns), return_exceptions=True)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
