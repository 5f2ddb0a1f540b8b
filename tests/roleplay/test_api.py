"""The REST API: auth, object-level permissions, filters, and one error shape."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from roleplay import services
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    token = client.post("/api/auth/token/", {"username": user.username, "password": PASSWORD}).json()["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_bad_credentials_get_401_in_the_common_error_shape(alice):
    response = APIClient().post("/api/auth/token/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "no_active_account"


def test_anonymous_requests_get_401_in_the_common_error_shape():
    response = APIClient().get("/api/scenarios/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_it_lists_scenarios_for_a_token_holder(alice, scenario):
    body = client_for(alice).get("/api/scenarios/").json()
    assert [s["title"] for s in body["results"]] == ["Cost-focused CFO"]
    assert body["results"][0]["goals"] == ["Uncover the cost of manual reconciliation", "Book a follow-up"]


def test_scenario_detail_includes_objections_and_rubric(alice, scenario):
    body = client_for(alice).get(f"/api/scenarios/{scenario.pk}/").json()
    assert body["objections"][0]["statement"].startswith("We have a budget freeze")
    assert {c["key"] for c in body["rubric"]} == {"questions", "next-step"}


def test_unknown_scenario_is_404_in_the_common_shape(alice):
    response = client_for(alice).get("/api/scenarios/9999/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_trainee_creates_a_session(alice, scenario):
    response = client_for(alice).post("/api/sessions/", {"scenario": scenario.pk}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("sess_") and len(body["id"]) > 20
    assert body["trainee"] == "alice" and body["state"] == "live"


def test_invalid_input_is_400_with_field_details(alice):
    response = client_for(alice).post("/api/sessions/", {"scenario": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "scenario" in response.json()["error"]["details"]


def test_a_trainee_gets_404_on_another_trainees_session(alice, bob, scenario):
    bobs = services.session_create(trainee=bob, scenario=scenario, transport="text")
    response = client_for(alice).get(f"/api/sessions/{bobs.pk}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "session_not_found"


def test_a_trainee_sees_only_their_own_sessions(alice, bob, scenario):
    services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.session_create(trainee=bob, scenario=scenario, transport="text")
    body = client_for(alice).get("/api/sessions/").json()
    assert [s["trainee"] for s in body["results"]] == ["alice"]


def test_a_manager_sees_only_their_teams_sessions(alice, bob, charlie, dave, scenario):
    for trainee in (alice, bob, dave):
        services.session_create(trainee=trainee, scenario=scenario, transport="text")
    body = client_for(charlie).get("/api/sessions/").json()
    assert sorted(s["trainee"] for s in body["results"]) == ["alice", "bob"]
    daves = services.session_create(trainee=dave, scenario=scenario, transport="text")
    assert client_for(charlie).get(f"/api/sessions/{daves.pk}/").status_code == 404


def test_an_admin_sees_all_sessions(alice, dave, mallory, scenario):
    for trainee in (alice, dave):
        services.session_create(trainee=trainee, scenario=scenario, transport="text")
    assert client_for(mallory).get("/api/sessions/").json()["count"] == 2


def test_session_list_filters_by_trainee_state_and_date(alice, bob, charlie, scenario):
    ended = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.session_end(session=ended, reason="user_requested")
    services.session_create(trainee=bob, scenario=scenario, transport="text")
    client = client_for(charlie)
    assert client.get("/api/sessions/?trainee=alice").json()["count"] == 1
    assert client.get("/api/sessions/?state=live").json()["results"][0]["trainee"] == "bob"
    assert client.get("/api/sessions/?since=2000-01-01&until=2000-01-02").json()["count"] == 0
    assert client.get(f"/api/sessions/?scenario={scenario.pk}").json()["count"] == 2


def test_session_detail_carries_utterances(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.utterance_append(session=session, speaker="buyer", text="Margaret Chen speaking.", source="text")
    services.utterance_append(session=session, speaker="trainee", text="Hi Margaret.", source="text")
    body = client_for(alice).get(f"/api/sessions/{session.pk}/").json()
    assert [u["text"] for u in body["utterances"]] == ["Margaret Chen speaking.", "Hi Margaret."]
    assert body["turn_count"] == 1


def test_a_manager_comments_and_the_trainee_sees_it(alice, charlie, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    response = client_for(charlie).post(
        f"/api/sessions/{session.pk}/comments/",
        {"offset_ms": 1500, "text": "Ask about the $400k first."},
        format="json",
    )
    assert response.status_code == 201
    comments = client_for(alice).get(f"/api/sessions/{session.pk}/").json()["comments"]
    assert comments[0]["text"] == "Ask about the $400k first." and comments[0]["author"] == "charlie"


def test_a_trainee_cannot_comment(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    response = client_for(alice).post(
        f"/api/sessions/{session.pk}/comments/", {"offset_ms": 0, "text": "hi"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_openapi_schema_lists_the_endpoints(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ("/api/scenarios/", "/api/sessions/", "/api/auth/token/"):
        assert path in text


def test_api_docs_page_renders_without_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"cdn.jsdelivr" not in response.content


def test_demo_data_is_idempotent_and_issue_token_works(capsys, settings):
    settings.LINGECHO_DEMO_PASSWORD = "lingecho-demo"  # the embedded default's; the scaled pass has none
    call_command("create_demo_data")
    call_command("create_demo_data")
    from roleplay.models import Scenario, User

    assert Scenario.objects.filter(language="en").count() >= 3
    assert Scenario.objects.filter(language="zh-CN").count() == 1
    assert User.objects.filter(username__in=["admin", "manager", "trainee"]).count() == 3
    capsys.readouterr()
    call_command("issue_token", "trainee")
    token = capsys.readouterr().out.strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/api/scenarios/").json()["count"] >= 4


def test_the_home_page_asks_to_sign_in(client):
    response = client.get("/", follow=True)
    assert b"Sign in" in response.content
