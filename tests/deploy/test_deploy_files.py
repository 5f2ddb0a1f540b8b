"""The files in deploy/ are what an operator copies: nginx must accept the production site as written,
the environment example must name every setting, and `make run-scaled` must refuse in one line when a
service is missing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
SETTING = re.compile(r'env(?:str|int|float|bool|list|choice|url)\(\s*"([A-Z][A-Z0-9_]+)"')
NOT_FOR_PRODUCTION = {"SQLITE_PATH", "POSTPROCESS_TEST_STEP_DELAY_SECONDS"}


def test_the_env_example_names_every_setting():
    source = "".join(p.read_text() for p in (ROOT / "lingecho").rglob("*.py"))
    settings = set(SETTING.findall(source)) - NOT_FOR_PRODUCTION
    example = (ROOT / "deploy" / "lingecho.env.example").read_text()
    named = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.M))
    assert settings - named == set()


def test_nginx_accepts_the_production_site(tmp_path):
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (Debian: apt-get install nginx; .ci/run does it)")
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (needed for a throwaway certificate)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True)
    site = (ROOT / "deploy" / "nginx" / "lingecho.conf").read_text()
    site = site.replace("/etc/letsencrypt/live/lingecho.example.com/fullchain.pem", str(tmp_path / "cert.pem"))
    site = site.replace("/etc/letsencrypt/live/lingecho.example.com/privkey.pem", str(tmp_path / "key.pem"))
    site = site.replace("/var/log/nginx/", f"{tmp_path}/")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\ninclude /etc/nginx/mime.types;\ninclude {tmp_path}/site.conf;\n}}\n")
    done = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_run_scaled_refuses_in_one_line_without_postgresql(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"postgres://127.0.0.1:{free_port()}/nothing"}
    done = subprocess.run([sys.executable, "deploy/run_scaled.py", "--run-dir", str(tmp_path / "run")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("run-scaled: "), done.stderr
    # nginx is checked first: on a machine without it that is the one line
    assert "PostgreSQL is not reachable at 127.0.0.1:" in done.stderr or "nginx is not installed" in done.stderr
    assert not (tmp_path / "run" / "nginx.pid").exists()  # nothing was started
