"""Capacity: how many simultaneous practice calls one server carries, and what each call costs.

For each N in ``--calls`` a fresh server is started the way ``make run`` starts it
(``lingecho.server``, embedded media worker, its own SQLite file; tests/media_pipeline/live.py),
and N real aiortc callers on this same machine connect through /ws/voice/. Each caller behaves
like a trainee: it speaks an eSpeak NG phrase, stays silent while the buyer answers, listens to
the whole reply, pauses, and speaks again, ``--turns`` times. Calls arrive spread over
``--ramp`` seconds. Printed per N:

- turn latency p50/p95, client-measured: the caller's last voiced frame sent → first audible reply
  frame heard (so both aiortc jitter buffers are included, as a real trainee hears it);
- unanswered turns: no reply (``tts_complete``) within ``--reply-timeout`` seconds, or no
  audible reply;
- refused calls: the server answered the offer with an error (admission control, ``retry_after``);
- server CPU per call: utime+stime of the server process (/proc/<pid>/stat) over the talking
  window, in % of one core, divided by the calls that were let in; with ``--media-workers K`` the
  server process and all K worker processes together;
- server CPU per answered turn (ms of CPU): the same CPU over the turns answered; on a machine
  shared with other work the % figures drop when the server is starved, this one does not;
- the whole machine's busy CPU over the window (/proc/stat, all cores: callers, server and anything
  else running), to tell a saturated box from a saturated event loop;
- RSS per call: (peak RSS during the window − RSS of the idle warm server) / calls let in, and the
  peak itself.

``--media-workers K`` (K > 0) runs the scaled topology instead: the server on the Redis channel
layer and cache (``--redis-url``, a database of its own, flushed at each start, so it never crosses
a test run) and K ``manage.py runworker media`` processes, each with its own event loop (one GIL)
and engines. The bench waits until /readyz counts K live workers and their engines have loaded,
then prints, per worker, the most calls its heartbeat showed at once, its CPU and its RSS, so one
sees whether the offers were spread. Without a reachable Redis it says so and exits with status 2.

The callers' own CPU (aiortc, Opus, eSpeak) shares the two cores with the server: that is the
"callers included" condition of the capacity target, not an accident. They run in
``--client-procs`` processes (default 2), so that one client process's event loop and GIL are not
what limits a dozen callers.

Options:
  --calls 1,4,10,12,20   the N to run, in order (each on a fresh server)
  --turns 3              turns per caller (keep short: each N costs ~20–60 s plus server start)
  --codec opus|pcma      the callers' codec (default opus, as a browser)
  --ramp 3               seconds over which the N calls arrive
  --listen 0             seconds each caller first stays connected and silent (listening) before
                         its turns; ``--turns 0 --listen 20`` measures what idle calls cost
  --reply-timeout 20     seconds a turn waits for its reply before it counts as unanswered
  --detector silence     the server's end-of-turn detector (TURN_DETECTOR): ``silence`` (default)
                         ends a turn after ENDPOINT_SILENCE_MS=300 of pause, as both systems did in
                         the issue's comparison (the like-for-like row); ``smart`` asks Smart Turn
                         after TURN_ASK_SILENCE_MS and waits out an "incomplete" answer, so its
                         latency is the product's, not comparable with the issue's figures
  --server-env K=V       extra environment for the server (repeatable), e.g.
                         ``--server-env ENDPOINT_SILENCE_MS=300 --server-env MAX_CALLS_PER_WORKER=0``
  --client-procs 2       processes the callers are spread over
  --media-workers 0      0: the embedded media worker in the server process (``make run``); K > 0:
                         the server on Redis and K ``runworker media`` processes (the scaled setup)
  --redis-url URL        the Redis database for ``--media-workers`` (default redis://127.0.0.1:6379/7)
  --json FILE            also write the rows as JSON (for A/B comparisons)

Run: ``.venv/bin/python bench/capacity.py --calls 1,4,10,12,20 --turns 3``, or two media workers:
``.venv/bin/python bench/capacity.py --calls 12 --media-workers 2``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

from _voice import PHRASES, pct  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BENCH_REDIS_URL = "redis://127.0.0.1:6379/7"  # not the tests' database (1): a bench never crosses a test run


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (children not included: server and workers do their work in threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICKS


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


async def caller(stack: Any, scenario: int, args: argparse.Namespace, rng: random.Random,
                 out: dict[str, Any]) -> None:
    from tests.audio_fixtures import silence, speak
    from tests.media_pipeline.live import WsPeer, ws_connect_media
    from tests.media_pipeline.voice_client import VoiceClient

    codec, reply_timeout = args.codec, args.reply_timeout
    await asyncio.sleep(rng.uniform(0, args.ramp))
    peer = await WsPeer(stack, scenario).start()
    client = VoiceClient(codec, dtx=not args.no_dtx)
    try:
        try:
            await ws_connect_media(peer, client)
        except TimeoutError:
            errors = peer.of_type("error")
            if errors:
                out["refused"].append(errors[0]["data"])
                return
            raise
        out["admitted"] += 1
        await peer.send("asr_start", {"language": "en-US", "format": codec, "sample_rate": client.track.rate,
                                      "mode": "auto"})
        rate = client.track.rate
        await asyncio.sleep(args.listen)
        for _ in range(args.turns):
            client.track.play(speak(rng.choice(PHRASES), rate=rate))
            client.track.play(silence(800, rate))
            try:
                await asyncio.wait_for(client.track.done.wait(), 30)
                await peer.expect("tts_complete", timeout=reply_timeout)
            except TimeoutError:
                out["unanswered"] += 1
                continue
            voiced = client.track.last_voiced_at
            heard = client.sound_since(voiced) if voiced else None
            if heard is None:
                out["unanswered"] += 1
                out["unheard"] += 1  # a reply was sent (tts_complete) but nothing audible arrived
            else:
                out["latency"].append((heard - voiced) * 1000)
            await asyncio.sleep(rng.uniform(0.5, 1.5))  # the trainee thinks before answering
    except Exception as exc:  # noqa: BLE001 - count and report, keep the other calls going
        out["errors"].append(repr(exc))
    finally:
        await peer.close()
        await client.close()


def start_media_workers(stack: Any, count: int) -> None:
    """``count`` ``runworker media`` processes, live on /readyz and with their engines loaded.

    A worker beats as soon as it boots but loads ASR/VAD/TTS on a background thread for some
    seconds more (two of them at once on two cores): measure warm, as the embedded server is, by
    waiting until every worker has been nearly idle (< 15 % of a core) for a second, at most 90 s.
    """
    names = [f"media-{k + 1}" for k in range(count)]
    for name in names:
        stack.start_worker(name)
    stack.wait_for_media_workers(count, timeout=120)
    pids = [stack.procs[name].pid for name in names]
    deadline = time.monotonic() + 90
    before = [cpu_seconds(pid) for pid in pids]
    while time.monotonic() < deadline:
        time.sleep(1.0)
        after = [cpu_seconds(pid) for pid in pids]
        if all(b - a < 0.15 for a, b in zip(before, after, strict=True)):
            return
        before = after


def worker_calls() -> dict[int, int]:
    """Live WebRTC calls per media worker process (pid -> calls), from the heartbeats in Redis."""
    from media_pipeline.heartbeat import live_workers

    counts = {}
    for worker_id, beat in live_workers().items():
        pid = worker_id.rsplit("-", 2)[-2]  # <host>-<pid>-<random>
        if pid.isdigit():
            counts[int(pid)] = beat.get("calls", 0)
    return counts


async def one_n(calls: int, args: argparse.Namespace, server_env: dict[str, str]) -> dict[str, Any]:
    from tests.media_pipeline.live import LiveStack

    tmp = Path(tempfile.mkdtemp(prefix="lingecho-capacity-"))
    scaled = args.media_workers > 0
    stack = LiveStack(tmp, scaled=scaled, redis_url=args.redis_url)
    stack.env.update({"MAX_LIVE_SESSIONS_PER_USER": "1000", **server_env})
    await asyncio.to_thread(stack.start)
    try:
        if scaled:
            await asyncio.to_thread(start_media_workers, stack, args.media_workers)
        pids = {name: proc.pid for name, proc in stack.procs.items()}  # daphne and media-1..K
        scenario = await asyncio.to_thread(stack.scenario_id)
        idle_rss = {name: rss_mb(pid) for name, pid in pids.items()}
        out: dict[str, Any] = {"latency": [], "unanswered": 0, "unheard": 0, "errors": [], "refused": [],
                               "admitted": 0}
        peak = {"total": sum(idle_rss.values()), **idle_rss}
        peak_calls = {pid: 0 for name, pid in pids.items() if name != "daphne"}

        async def sample() -> None:
            while True:
                rss = {name: rss_mb(pid) for name, pid in pids.items()}
                for name, value in rss.items():
                    peak[name] = max(peak[name], value)
                peak["total"] = max(peak["total"], sum(rss.values()))
                if scaled:
                    for pid, count in (await asyncio.to_thread(worker_calls)).items():
                        if pid in peak_calls:
                            peak_calls[pid] = max(peak_calls[pid], count)
                await asyncio.sleep(0.5)

        sampler = asyncio.ensure_future(sample())
        procs = max(1, min(args.client_procs, calls))
        cpu0, t0 = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
        box0 = machine_busy_seconds()
        parts = await asyncio.gather(*(client_process(stack, scenario, args, calls * (k + 1) // procs
                                                      - calls * k // procs, seed=calls * 100 + k)
                                       for k in range(procs)))
        cpu1, t1 = {name: cpu_seconds(pid) for name, pid in pids.items()}, time.monotonic()
        box1 = machine_busy_seconds()
        for part in parts:
            for key in ("latency", "errors", "refused"):
                out[key] += part[key]
            out["unanswered"] += part["unanswered"]
            out["unheard"] += part.get("unheard", 0)
            out["admitted"] += part["admitted"]
        sampler.cancel()
        engine_work = None if scaled else await asyncio.to_thread(engine_work_of, stack.port)
    finally:
        await asyncio.to_thread(stack.stop)
    admitted = max(1, out["admitted"])
    lat = out["latency"]
    cpu = {name: cpu1[name] - cpu0[name] for name in pids}
    total_cpu = sum(cpu.values())
    return {
        "calls": calls,
        "media_workers": args.media_workers,
        "admitted": out["admitted"],
        "refused": len(out["refused"]),
        "refusal": out["refused"][0] if out["refused"] else None,
        "turns": len(lat),
        "p50": pct(lat, 50) if lat else None,
        "p95": pct(lat, 95) if lat else None,
        "unanswered": out["unanswered"],
        "unheard": out["unheard"],
        "errors": out["errors"][:3],
        "cpu_total_pct": total_cpu / (t1 - t0) * 100,
        "cpu_per_call_pct": total_cpu / (t1 - t0) * 100 / admitted,
        "cpu_ms_per_turn": total_cpu * 1000 / len(lat) if lat else None,
        "rss_peak_mb": peak["total"],
        "rss_per_call_mb": (peak["total"] - sum(idle_rss.values())) / admitted,
        "processes": {name: {"cpu_pct": cpu[name] / (t1 - t0) * 100, "rss_peak_mb": peak[name],
                             **({"peak_calls": peak_calls[pid]} if pid in peak_calls else {})}
                      for name, pid in pids.items()},
        "machine_busy_pct": (box1 - box0) / (t1 - t0) * 100,  # all cores, callers and other work included
        "seconds": t1 - t0,
        "engine_work": engine_work,
    }


def engine_work_of(port: int) -> dict[str, Any]:
    """The embedded server's own count of engine jobs by kind (jobs, seconds on a thread) and of the
    interims it skipped, from its /metrics: where a call's CPU goes, stage by stage."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    work: dict[str, Any] = {"jobs": {}, "seconds": {}, "interims_skipped": 0.0, "speculative": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            kind = sample.labels.get("kind")
            if sample.name == "lingecho_engine_task_seconds_count" and kind:
                work["jobs"][kind] = sample.value
            elif sample.name == "lingecho_engine_task_seconds_sum" and kind:
                work["seconds"][kind] = sample.value
            elif sample.name == "lingecho_interims_skipped_total":
                work["interims_skipped"] = sample.value
            elif sample.name == "lingecho_speculative_finals_total":
                work["speculative"][sample.labels["outcome"]] = sample.value
    return work


async def client_process(stack: Any, scenario: int, args: argparse.Namespace, count: int, *, seed: int) -> dict:
    """Run ``count`` callers in a child process (this script with ``--callers``); their results as a dict."""
    argv = [sys.executable, __file__, "--callers", json.dumps({"port": stack.port, "token": stack.token,
                                                               "scenario": scenario, "count": count, "seed": seed}),
            "--turns", str(args.turns), "--codec", args.codec, "--ramp", str(args.ramp),
            "--listen", str(args.listen), "--reply-timeout", str(args.reply_timeout)]
    argv += ["--no-dtx"] if args.no_dtx else []
    proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await proc.communicate()
    lines = stdout.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"latency": [], "errors": [f"client process exited {proc.returncode}"], "refused": [],
                "unanswered": 0, "unheard": 0, "admitted": 0}
    return json.loads(lines[-1])


async def run_callers(spec: dict[str, Any], args: argparse.Namespace) -> None:
    """Child side of :func:`client_process`: run the callers, print the results as one JSON line."""
    from types import SimpleNamespace

    stack = SimpleNamespace(port=spec["port"], token=spec["token"])
    out: dict[str, Any] = {"latency": [], "unanswered": 0, "unheard": 0, "errors": [], "refused": [],
                           "admitted": 0}
    rng = random.Random(spec["seed"])
    await asyncio.gather(*(caller(stack, spec["scenario"], args, random.Random(rng.random()), out)
                           for _ in range(spec["count"])))
    print(json.dumps(out), flush=True)


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "—" if value is None else format(value, spec)


async def run(args: argparse.Namespace) -> None:
    if args.media_workers > 0:
        from tests.media_pipeline.live import redis_reachable

        if not redis_reachable(args.redis_url):
            print(f"capacity bench: --media-workers {args.media_workers} needs Redis, and {args.redis_url} "
                  "does not answer (start redis-server, or pass --redis-url)", file=sys.stderr)
            sys.exit(2)
        # This process reads the workers' heartbeats from the same Redis cache the stack uses.
        os.environ["REDIS_URL"] = args.redis_url
        import django

        django.setup()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    server_env.setdefault("ENDPOINT_SILENCE_MS", "300")
    server_env.setdefault("TURN_DETECTOR", args.detector)
    detector = server_env["TURN_DETECTOR"]
    rule = (f"a {server_env['ENDPOINT_SILENCE_MS']} ms pause ends the turn" if detector == "silence"
            else "Smart Turn asked at TURN_ASK_SILENCE_MS, TURN_PATIENCE_MS at most")
    topology = (f"{args.media_workers} runworker media processes on {args.redis_url}" if args.media_workers
                else "embedded media worker")
    print(f"capacity bench: {topology}, end-of-turn detector {detector} ({rule}), "
          f"codec {args.codec}{'' if args.no_dtx else ' (DTX asked, as the page does)'}, "
          f"{args.turns} turns per caller, server env {server_env}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print("| calls | let in / refused | turns | turn p50 / p95 (ms) | unanswered | server CPU total / per call "
          "(% of one core) | CPU per answered turn (ms) | RSS peak / per call (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for calls in args.calls:
        row = await one_n(calls, args, server_env)
        rows.append(row)
        print(f"| {calls} | {row['admitted']} / {row['refused']} | {row['turns']} | {fmt(row['p50'])} / "
              f"{fmt(row['p95'])} | {row['unanswered']} | {row['cpu_total_pct']:.0f} / {row['cpu_per_call_pct']:.1f} | "
              f"{fmt(row['cpu_ms_per_turn'])} | {row['rss_peak_mb']:.0f} / {row['rss_per_call_mb']:.1f} |", flush=True)
        print(f"  whole machine busy {row['machine_busy_pct']:.0f} % of one core ({os.cpu_count()} cores: callers, "
              "server, workers and anything else running)", flush=True)
        if args.media_workers:
            print("  per process (CPU % of one core, RSS peak MB, most live calls at once):",
                  "; ".join(f"{name} {p['cpu_pct']:.0f} %, {p['rss_peak_mb']:.0f} MB"
                            + (f", {p['peak_calls']} calls" if "peak_calls" in p else "")
                            for name, p in row["processes"].items()), flush=True)
        work = row["engine_work"]
        if work and row["turns"]:
            turns = row["turns"]
            seconds = work["seconds"]
            per_turn = ", ".join(f"{kind} {jobs / turns:.1f} jobs / {seconds.get(kind, 0) * 1000 / turns:.0f} ms"
                                 for kind, jobs in sorted(work["jobs"].items()))
            pauses = " / ".join(f"{work['speculative'].get(k, 0) / turns:.1f}" for k in ("used", "stale"))
            print(f"  engine work per answered turn (whole run, from /metrics): {per_turn}; "
                  f"interims skipped {work['interims_skipped'] / turns:.1f}; pauses whose early final decode "
                  f"was used / thrown away: {pauses}", flush=True)
        for err in row["errors"]:
            print("  error:", err)
        if row["refusal"]:
            print("  refusal:", row["refusal"])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 10, 12, 20])
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--codec", choices=("opus", "pcma"), default="opus")
    parser.add_argument("--ramp", type=float, default=3.0)
    parser.add_argument("--no-dtx", action="store_true", help="callers do not ask for Opus DTX (the page does)")
    parser.add_argument("--listen", type=float, default=0.0)
    parser.add_argument("--reply-timeout", type=float, default=20.0)
    parser.add_argument("--detector", choices=("silence", "smart", "auto"), default="silence")
    parser.add_argument("--server-env", action="append", default=[])
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--media-workers", type=int, default=0)
    parser.add_argument("--redis-url", default=BENCH_REDIS_URL)
    parser.add_argument("--json")
    parser.add_argument("--callers", help=argparse.SUPPRESS)  # internal: run callers in this process
    args = parser.parse_args()
    if args.callers:
        asyncio.run(run_callers(json.loads(args.callers), args))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
