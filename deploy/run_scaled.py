"""``make run-scaled``: the scaled topology on one machine, behind nginx, in one command.

nginx (Debian's, plain HTTP on 127.0.0.1) balances two ``lingecho.server`` processes; two
``runworker media`` processes take the calls; a Celery worker and beat run the after-call jobs and
the sweep; PostgreSQL, Redis and an S3 store (moto's server, in memory) hold the state. The
processes are those of ``deploy/Procfile.scaled``, run by honcho's process manager, so this is the
production layout of ``deploy/`` minus TLS and systemd.

Why a script and not ``honcho start``: the services must be checked first (a missing PostgreSQL
otherwise shows up as eight processes crashing in a loop), the database migrated, nginx's
configuration rendered with this run's ports and folder, and one process dying must not stop the
others (honcho's own rule, from foreman, is to stop everything): killing a media worker or a
server mid-call is exactly what this topology is meant to survive (tests/deploy/).

Settings come from the environment with local defaults: ``DATABASE_URL``
(``postgres://127.0.0.1:5432/test``), ``REDIS_URL`` (``redis://127.0.0.1:6379/3``),
``CELERY_BROKER_URL`` (``redis://127.0.0.1:6379/4``), ``LINGECHO_HTTP_PORT`` (8080), and any app
setting (``SESSION_RESUME_SECONDS`` ...). ``python deploy/run_scaled.py s3`` is the Procfile's S3
process.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
PROCFILE = ROOT / "deploy" / "Procfile.scaled"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "local.conf.template"
S3_BUCKET = "lingecho-local"
S3_KEY = "lingecho-local"  # moto accepts any key pair; these only have to agree between processes
SERVER_NAMES = ("web1", "web2")
STORES = ("s3",)  # stopped after every other process of the Procfile
# honcho gives a process this long after SIGTERM before SIGKILL: more than the drain below.
DRAIN_SECONDS = 10
KILL_WAIT_SECONDS = DRAIN_SECONDS + 5

DEFAULTS = {
    "DATABASE_URL": "postgres://127.0.0.1:5432/test",
    "REDIS_URL": "redis://127.0.0.1:6379/3",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/4",
    "LINGECHO_DEMO_PASSWORD": "lingecho-demo",
    "SHUTDOWN_DRAIN_SECONDS": str(DRAIN_SECONDS),
    "LOG_LEVEL": "INFO",
}


class Refused(SystemExit):
    """A missing service: one line on stderr, exit status 2."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# preflight: every service there before anything starts
# ------------------------------------------------------------------------------------------------

def find_nginx() -> str:
    # /usr/sbin is not on an ordinary user's PATH, which is where Debian puts nginx.
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)),
                                          None)
    if not found:
        raise Refused("nginx is not installed (Debian: apt-get install nginx)")
    return found


def check_postgres(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise Refused(f"DATABASE_URL must be a postgres:// URL for the scaled run (got {parsed.scheme}://)")
    try:
        psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Refused(f"PostgreSQL is not reachable at {parsed.hostname}:{parsed.port or 5432}{parsed.path}: "
                      f"{first}") from None


def check_redis(name: str, url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        parsed = urlparse(url)
        raise Refused(f"Redis ({name}) is not reachable at {parsed.hostname}:{parsed.port or 6379}: {exc}") from None


def check_honcho() -> None:
    try:
        import honcho  # noqa: F401
    except ImportError:
        raise Refused("honcho is not installed (pip install -r requirements-dev.txt)") from None


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------

def run_environment(run_dir: Path, *, http_port: int, nginx: str) -> dict[str, str]:
    """The environment every process of the Procfile gets: the app's settings plus the run's ports."""
    app = {key: os.environ.get(key) or default for key, default in DEFAULTS.items()}
    s3_port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        **app,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "lingecho.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or (run_dir / "secret_key").read_text().strip(),
        "ALLOWED_HOSTS": os.environ.get("ALLOWED_HOSTS") or "127.0.0.1,localhost",
        "TRUSTED_PROXY_COUNT": "1",  # nginx overwrites X-Forwarded-For
        "MEDIA_WORKER_MODE": "external",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "LINGECHO_STORAGE": "s3",
        "S3_BUCKET": S3_BUCKET,
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY_ID": S3_KEY,
        "S3_SECRET_ACCESS_KEY": S3_KEY,
        "S3_ADDRESSING_STYLE": "path",
        "STATIC_ROOT": str(run_dir / "static"),
        "LINGECHO_RUN_DIR": str(run_dir),
        "LINGECHO_HTTP_PORT": str(http_port),
        "LINGECHO_S3_PORT": str(s3_port),
        "LINGECHO_NGINX": nginx,
        **{f"LINGECHO_{name.upper()}_PORT": str(free_port()) for name in SERVER_NAMES},
    }


def render_nginx(run_dir: Path, env: dict[str, str]) -> Path:
    for sub in ("logs", "nginx"):
        (run_dir / sub).mkdir(exist_ok=True)
    upstreams = "\n".join(
        f"        server 127.0.0.1:{env[f'LINGECHO_{name.upper()}_PORT']} max_fails=1 fail_timeout=10s;"
        for name in SERVER_NAMES
    )
    text = Template(NGINX_TEMPLATE.read_text()).safe_substitute(
        run_dir=str(run_dir), http_port=env["LINGECHO_HTTP_PORT"], static_root=env["STATIC_ROOT"],
        upstream_servers=upstreams,
    )
    path = run_dir / "nginx.conf"
    path.write_text(text)
    check = subprocess.run([env["LINGECHO_NGINX"], "-t", "-q", "-e", "stderr", "-p", f"{run_dir}/", "-c", str(path)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise Refused(f"nginx refused the rendered configuration {path}: {check.stderr.strip()}")
    return path


def manage(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise Refused(f"manage.py {' '.join(args)} failed (output above)")


def prepare(run_dir: Path, *, http_port: int) -> dict[str, str]:
    check_honcho()
    nginx = find_nginx()
    check_postgres(os.environ.get("DATABASE_URL") or DEFAULTS["DATABASE_URL"])
    check_redis("REDIS_URL", os.environ.get("REDIS_URL") or DEFAULTS["REDIS_URL"])
    check_redis("CELERY_BROKER_URL", os.environ.get("CELERY_BROKER_URL") or DEFAULTS["CELERY_BROKER_URL"])
    # The master runs as whoever starts it; as root its workers run as nobody and need to enter here.
    run_dir.chmod(0o755)
    secret = run_dir / "secret_key"
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(50))
        secret.chmod(0o600)
    env = run_environment(run_dir, http_port=http_port, nginx=nginx)
    render_nginx(run_dir, env)
    manage(env, "migrate", "--noinput")
    manage(env, "create_demo_data")
    manage(env, "collectstatic", "--noinput")
    return env


def supervise(env: dict[str, str]) -> int:
    """Run the Procfile with honcho's manager; a process that dies leaves the others running."""
    import honcho.manager
    from honcho.environ import parse_procfile

    class KeepServing(honcho.manager.Manager):
        """honcho's Manager, except that only a signal to the runner stops every process, stores last.

        Its loop stops all when ``_any_stopped()``; counting a stop only once we are terminating
        keeps the rest up when one process dies (and then, as before, SIGKILLs stragglers after
        KILL_WAIT). On a stop the stores (S3) get SIGTERM only once every other process has ended:
        servers and media workers store recordings while they drain.
        """

        stores_told = False

        def _killall(self, force: bool = False) -> None:
            if force:
                super()._killall(force=True)
                return
            for name, process in self._processes.items():
                if "returncode" not in process and name not in STORES:
                    self._system_print(f"sending SIGTERM to {name} (pid {process['pid']})\n")
                    self._procmgr.terminate(process["pid"])

        def _any_stopped(self) -> bool:
            return self._terminating and super()._any_stopped()

        def _all_stopped(self) -> bool:
            # Asked on every turn of honcho's loop (the other hooks stop being asked after a stop).
            if self._terminating and not self.stores_told and all(
                "returncode" in process for name, process in self._processes.items() if name not in STORES
            ):
                self.stores_told = True
                for name in STORES:
                    process = self._processes.get(name, {})
                    if process.get("pid") and "returncode" not in process:
                        self._system_print(f"sending SIGTERM to {name} (pid {process['pid']})\n")
                        self._procmgr.terminate(process["pid"])
            return super()._all_stopped()

    honcho.manager.KILL_WAIT = KILL_WAIT_SECONDS
    manager = KeepServing()
    for name, process in parse_procfile(PROCFILE.read_text()).processes.items():
        manager.add_process(name, process, env=env, cwd=str(ROOT))
    manager.loop()
    return manager.returncode or 0


def serve_s3() -> int:
    """The Procfile's ``s3`` process: moto's S3 server in memory, with the run's bucket made."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = int(os.environ["LINGECHO_S3_PORT"])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id=S3_KEY, aws_secret_access_key=S3_KEY).create_bucket(Bucket=S3_BUCKET)
    print(f"S3 (moto, in memory) on 127.0.0.1:{port}, bucket {S3_BUCKET}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("all", "s3"), default="all")
    parser.add_argument("--http-port", type=int, default=int(os.environ.get("LINGECHO_HTTP_PORT") or 8080))
    parser.add_argument("--run-dir", type=Path, help="config, logs and static files (default: a new temp folder)")
    args = parser.parse_args(argv)
    if args.what == "s3":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        return serve_s3()
    if not 1 <= args.http_port <= 65535:
        parser.error("--http-port must be 1-65535")
    own_dir = args.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="lingecho-scaled-")) if own_dir else args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        env = prepare(run_dir, http_port=args.http_port)
        print(f"LingEcho scaled run: http://127.0.0.1:{args.http_port}/ (trainee / "
              f"{env['LINGECHO_DEMO_PASSWORD'] or 'your own account'}); run folder {run_dir}; Ctrl-C stops it all",
              flush=True)
        print("servers behind nginx: " + ", ".join(
            f"{name} on 127.0.0.1:{env[f'LINGECHO_{name.upper()}_PORT']}" for name in SERVER_NAMES), flush=True)
        return supervise(env)
    except Refused as refused:
        print(f"run-scaled: {refused.message}", file=sys.stderr)
        return refused.code
    finally:
        if own_dir:
            shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
