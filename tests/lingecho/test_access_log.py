"""The access log goes through logging, and no token, signature or password reaches a log line."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daphne.access import AccessLogGenerator

from lingecho.access_log import AccessLog, access_log_for, redact_target, routed_through_logging
from lingecho.logging import RedactTokensFilter, redact
from tests.live_server import free_port, isolated_env, server_command

ROOT = Path(__file__).resolve().parents[2]
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjo0Mn0.c2lnbmF0dXJlLXBhcnQtb2YtdGhlLXRva2Vu"
SIG = "sessions%2Fabc%2Frecording.wav%7C3600%3A1vXyZ%3AS3cr3tS1gnatur3"


def test_it_redacts_secret_query_values_and_keeps_the_rest():
    target = f"/ws/voice/?scenario=3&token={JWT}&sig={SIG}&password=hunter2&code=xyz&refresh=r1&access=a1"
    cleaned = redact_target(target)
    assert cleaned == (
        "/ws/voice/?scenario=3&token=[redacted]&sig=[redacted]&password=[redacted]"
        "&code=[redacted]&refresh=[redacted]&access=[redacted]"
    )


def test_it_redacts_a_key_spelled_with_percent_escapes():
    assert redact_target("/media/x?t%6Fken=abc&SIG=def") == "/media/x?t%6Fken=[redacted]&SIG=[redacted]"


def test_a_path_without_query_is_left_alone():
    assert redact_target("/review/abc/") == "/review/abc/"


@pytest.mark.parametrize(
    "line",
    [
        f"GET /anything/{JWT}/ 200",  # a JWT anywhere, not only after token=
        "Authorization: Bearer abc.def.ghi",
        "Authorization: Basic dXNlcjpodW50ZXIy",
        "headers=[(b'authorization', b'Basic dXNlcjpodW50ZXIy'), (b'host', b'x')]",
        "{'username': 'alice', 'password': 'dXNlcjpodW50ZXIy'}",
        "login failed, password=dXNlcjpodW50ZXIy",
        "redirect /login/?next=/media/x%3Fsig%3DdXNlcjpodW50ZXIy%26a%3D1",
        "POST body access_token=dXNlcjpodW50ZXIy&refresh_token=dXNlcjpodW50ZXIy",
    ],
)
def test_the_filter_never_lets_a_credential_through(line):
    cleaned = redact(line)
    assert "[redacted]" in cleaned
    assert "dXNlcjpodW50ZXIy" not in cleaned and "eyJ" not in cleaned and "abc.def.ghi" not in cleaned


def test_ordinary_lines_stay_readable():
    line = "worker exited with code=1 after 3 sessions; token bucket refilled"
    assert redact(line) == line


def test_the_filter_cleans_tracebacks_too():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        record.exc_info = sys.exc_info()
    RedactTokensFilter().filter(record)
    assert JWT not in logging.Formatter().format(record)


def test_daphne_events_become_log_records_on_lingecho_access(caplog):
    with caplog.at_level(logging.INFO, logger="lingecho.access"):
        AccessLog()("http", "complete", {"path": f"/x?token={JWT}", "status": 200, "method": "GET",
                                         "client": "10.0.0.1:5000", "size": 12})
        AccessLog()("websocket", "connected", {"path": "/ws/voice/", "client": "10.0.0.1:5001"})
    lines = [r.getMessage() for r in caplog.records if r.name == "lingecho.access"]
    assert lines == ['10.0.0.1:5000 "GET /x?token=[redacted]" 200 12', '10.0.0.1:5001 "WSCONNECT /ws/voice/" - -']


def test_the_cli_hands_the_server_a_logging_access_log_in_place_of_daphnes():
    built = routed_through_logging(lambda **options: options)(action_logger=AccessLogGenerator(sys.stdout), port=1)
    assert isinstance(built["action_logger"], AccessLog) and built["port"] == 1
    assert access_log_for(None) is None  # -v 0: no access log at all


def test_an_explicit_access_log_file_is_still_redacted():
    stream = io.StringIO()
    access_log_for(AccessLogGenerator(stream))(
        "http", "complete", {"path": f"/m?sig={SIG}", "status": 200, "method": "GET", "client": "c", "size": 1}
    )
    assert "/m?sig=[redacted]" in stream.getvalue() and "S3cr3t" not in stream.getvalue()


@pytest.mark.slow
def test_a_live_server_logs_the_request_without_its_token_or_signature(tmp_path):
    env = isolated_env(tmp_path)
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(server_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, proc, log_path)
            url = f"http://127.0.0.1:{port}/healthz?token={JWT}&sig={SIG}&password=hunter2"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
            text = _wait_for_line(log_path, '"GET /healthz?')
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    line = next(line for line in text.splitlines() if '"GET /healthz?' in line)
    assert "lingecho.access" in line and "token=[redacted]" in line and "sig=[redacted]" in line
    for secret in (JWT, "eyJ", "S3cr3tS1gnatur3", "hunter2"):
        assert secret not in text


def _wait_for_port(port: int, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


def _wait_for_line(log_path: Path, needle: str) -> str:
    deadline = time.monotonic() + 10
    while needle not in (text := log_path.read_text()):
        assert time.monotonic() < deadline, text[-2000:]
        time.sleep(0.1)
    return text
