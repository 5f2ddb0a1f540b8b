"""Accounts: no published password outside the embedded default, sign-in limits per username and
per client address on the page and the token endpoint, and the HTTPS switch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from roleplay.demo_data import PUBLISHED_PASSWORD
from roleplay.login_limits import client_address
from roleplay.models import Scenario, Team, User
from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
TOKEN_URL = "/api/auth/token/"


@pytest.fixture(autouse=True)
def _own_cache_and_low_limits(settings):
    """A private cache per test (the scaled pass shares Redis) and small limits."""
    private = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": str(uuid.uuid4())}
    settings.CACHES = {"default": private}
    settings.LOGIN_FAILURES_PER_USERNAME = 3
    settings.LOGIN_FAILURES_PER_ADDRESS = 5
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 300
    settings.TRUSTED_PROXY_COUNT = 0


def _settings_in_subprocess(env_overrides: dict[str, str], *names: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env.pop("LINGECHO_DEMO_PASSWORD", None)
    env.update(env_overrides)
    values = f"{{n: getattr(settings, n, None) for n in {names!r}}}"
    code = f"import json; from django.conf import settings; print(json.dumps({values}))"
    done = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- demo accounts ----------------------------------------------------------------------------


def test_the_published_password_applies_only_to_the_embedded_default_or_when_set_explicitly():
    assert _settings_in_subprocess({}, "LINGECHO_DEMO_PASSWORD") == {"LINGECHO_DEMO_PASSWORD": PUBLISHED_PASSWORD}
    scaled = {"DATABASE_URL": "postgres://app:pw@db.invalid:5432/lingecho"}
    assert _settings_in_subprocess(scaled, "LINGECHO_DEMO_PASSWORD") == {"LINGECHO_DEMO_PASSWORD": ""}
    explicit = {**scaled, "LINGECHO_DEMO_PASSWORD": "chosen-by-ops"}
    assert _settings_in_subprocess(explicit, "LINGECHO_DEMO_PASSWORD") == {"LINGECHO_DEMO_PASSWORD": "chosen-by-ops"}


@pytest.mark.django_db
def test_without_a_demo_password_it_creates_scenarios_but_no_users_and_says_how_to_make_an_admin(settings, capsys):
    settings.LINGECHO_DEMO_PASSWORD = ""
    call_command("create_demo_data")
    out = capsys.readouterr().out
    assert not User.objects.exists()
    assert Scenario.objects.count() >= 4 and Team.objects.filter(name="Inside Sales").exists()
    assert "No demo users were created" in out and "manage.py createsuperuser" in out


@pytest.mark.django_db
def test_in_the_embedded_default_the_demo_users_sign_in_with_the_published_password(settings):
    settings.LINGECHO_DEMO_PASSWORD = PUBLISHED_PASSWORD
    call_command("create_demo_data")
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password(PUBLISHED_PASSWORD)
    assert Team.objects.get(name="Inside Sales").members.filter(username="trainee").exists()


@pytest.mark.django_db
def test_it_warns_about_an_old_demo_account_that_still_has_the_published_password(settings, capsys):
    settings.LINGECHO_DEMO_PASSWORD = PUBLISHED_PASSWORD
    call_command("create_demo_data")  # an earlier `make run` against this database
    settings.LINGECHO_DEMO_PASSWORD = ""
    capsys.readouterr()
    call_command("create_demo_data")
    err = capsys.readouterr().err
    assert "'admin' still has the published demo password" in err and "changepassword admin" in err


# --- the client address -------------------------------------------------------------------------


def test_the_client_address_ignores_x_forwarded_for_unless_proxies_are_trusted(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.5")
    assert client_address(request) == "10.0.0.9"
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_address(request) == "203.0.113.5"  # what our one proxy saw; 6.6.6.6 is the client's claim
    settings.TRUSTED_PROXY_COUNT = 2
    assert client_address(request) == "6.6.6.6"


def test_drf_throttles_identify_clients_the_same_way():
    from rest_framework.settings import api_settings

    assert api_settings.NUM_PROXIES == 0


# --- the token endpoint ---------------------------------------------------------------------------


def _token(client: APIClient, username: str, password: str, **extra):
    return client.post(TOKEN_URL, {"username": username, "password": password}, format="json", **extra)


@pytest.mark.django_db
def test_the_token_endpoint_refuses_a_username_after_too_many_failures_even_with_the_right_password(alice):
    client = APIClient()
    for _ in range(3):
        assert _token(client, "alice", "wrong").status_code == 401
    refused = _token(APIClient(REMOTE_ADDR="10.9.9.9"), "alice", PASSWORD)  # another address, right password
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 300
    assert refused.json()["error"]["code"] == "throttled"


@pytest.mark.django_db
def test_the_token_endpoint_refuses_an_address_trying_many_usernames(alice, bob):
    client = APIClient()
    for n in range(5):
        assert _token(client, f"user{n}", "wrong").status_code == 401
    assert _token(client, "alice", PASSWORD).status_code == 429
    assert _token(APIClient(REMOTE_ADDR="10.9.9.9"), "bob", PASSWORD).status_code == 200  # others unaffected


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_does_not_buy_new_attempts(alice):
    client = APIClient()
    for n in range(5):
        forged = {"HTTP_X_FORWARDED_FOR": f"198.51.100.{n}"}
        assert _token(client, f"user{n}", "wrong", **forged).status_code == 401
    assert _token(client, "bob", "wrong", HTTP_X_FORWARDED_FOR="198.51.100.77").status_code == 429


@pytest.mark.django_db
def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(settings, alice):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = APIClient(REMOTE_ADDR="10.0.0.1")
    for n in range(5):
        assert _token(proxy, f"user{n}", "wrong", HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 401
    assert _token(proxy, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.1").status_code == 429
    assert _token(proxy, "alice", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.2").status_code == 200


@pytest.mark.django_db
def test_a_successful_sign_in_clears_its_usernames_failures(alice):
    client = APIClient()
    for _ in range(2):
        _token(client, "alice", "wrong")
    assert _token(client, "alice", PASSWORD).status_code == 200
    for _ in range(2):
        assert _token(APIClient(REMOTE_ADDR="10.9.9.9"), "alice", "wrong").status_code == 401
    assert _token(APIClient(REMOTE_ADDR="10.9.9.8"), "alice", PASSWORD).status_code == 200


# --- the login page ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_login_page_refuses_after_too_many_failures_and_says_why(alice):
    client = Client()
    for _ in range(3):
        response = client.post("/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200 and b"didn't match" in response.content
    refused = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 300
    minutes = math.ceil(int(refused["Retry-After"]) / 60)  # the window is fixed: what is left of it
    unit = "minute" if minutes == 1 else "minutes"
    assert f"Too many sign-in attempts. Please wait {minutes} {unit} and try again." in refused.content.decode()
    assert "_auth_user_id" not in client.session  # the right password did not sign in


@pytest.mark.django_db
def test_the_login_page_and_the_token_endpoint_share_the_count(alice):
    for _ in range(3):
        Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert _token(APIClient(REMOTE_ADDR="10.9.9.9"), "alice", PASSWORD).status_code == 429


@pytest.mark.django_db
def test_the_admin_login_is_no_way_around_the_limits(mallory):
    admin = Client()
    for _ in range(3):
        assert admin.post("/admin/login/", {"username": "mallory", "password": "wrong"}).status_code == 200
    admin.post("/admin/login/", {"username": "mallory", "password": PASSWORD})
    assert "_auth_user_id" not in admin.session  # refused before the password was checked
    assert Client().post("/login/", {"username": "mallory", "password": PASSWORD}).status_code == 429


@pytest.mark.django_db
def test_sessions_signed_in_before_the_limits_existed_stay_signed_in(alice):
    client = Client()
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get("/history/").status_code == 200


@pytest.mark.django_db
def test_the_login_page_still_signs_in_normally(alice):
    response = Client().post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/"


# --- the HTTPS switch ----------------------------------------------------------------------------------

_HTTPS_NAMES = ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_PROXY_SSL_HEADER",
                "SECURE_SSL_REDIRECT")


def test_https_settings_are_off_by_default():
    assert _settings_in_subprocess({}, *_HTTPS_NAMES) == {
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_SSL_REDIRECT": False,
    }


def test_lingecho_https_turns_on_secure_cookies_hsts_and_the_proxy_header():
    values = _settings_in_subprocess({"LINGECHO_HTTPS": "1"}, *_HTTPS_NAMES)
    assert values == {
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_SSL_REDIRECT": False,
    }
    tuned = _settings_in_subprocess({"LINGECHO_HTTPS": "1", "SECURE_HSTS_SECONDS": "600", "SECURE_SSL_REDIRECT": "1"},
                                    "SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT")
    assert tuned == {"SECURE_HSTS_SECONDS": 600, "SECURE_SSL_REDIRECT": True}


def test_the_deploy_check_has_no_https_warnings_with_the_switch_on():
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env["LINGECHO_HTTPS"] = "1"
    done = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    report = done.stdout + done.stderr
    for warning in ("security.W004", "security.W012", "security.W016"):  # HSTS, session and CSRF cookies
        assert warning not in report, report
