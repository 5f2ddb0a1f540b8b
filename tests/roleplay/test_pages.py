"""The browser pages: every page renders in English and Chinese with nothing left untranslated, works
by keyboard (every control focusable and labelled), and shows only what the API would show."""

from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import translation

from roleplay.models import RealtimeSession, ReviewComment, SessionAnalytics, Utterance
from roleplay.pages.js_strings import STRINGS
from tests.factories import PASSWORD, make_scenario

TEMPLATES = Path(settings.BASE_DIR) / "templates"
PAGES_PY = Path(settings.BASE_DIR) / "roleplay" / "pages"


# --------------------------------------------------------------------------- data


def _session(trainee, scenario, *, score: float | None = 72.0, recording: bool = False) -> RealtimeSession:
    session = RealtimeSession.objects.create(
        trainee=trainee, scenario=scenario, transport="webrtc", state="ended", turn_count=2, processing="done"
    )
    lines = [
        ("buyer", "Margaret Chen speaking. What is this about?", 0, 2500),
        ("trainee", "How do you reconcile carrier invoices today?", 3500, 6500),
        ("buyer", "By hand, in spreadsheets.", 7200, 9000),
        ("trainee", "Could we book a follow-up with your controller?", 10000, 13000),
    ]
    for seq, (speaker, text, start, end) in enumerate(lines, start=1):
        Utterance.objects.create(session=session, seq=seq, speaker=speaker, text=text, start_ms=start, end_ms=end)
    if score is not None:
        SessionAnalytics.objects.create(
            session=session,
            metrics={
                "duration_ms": 13000,
                "talk_ratio": 0.55,
                "questions": {"trainee": 2, "buyer": 0},
                "longest_monologue_ms": {"trainee": 3000, "buyer": 2500},
                "patience_ms": 1000,
                "words_per_minute": {"trainee": 150.0, "buyer": 120.0},
                "filler_rate": 0.0,
                "interruptions": {"trainee": 0, "buyer": 0},
                "objections": {"raised": 1, "handled": 1},
                "next_step_secured": True,
                "timeline": [
                    {"speaker": "buyer", "start_ms": 0, "end_ms": 2500},
                    {"speaker": "trainee", "start_ms": 3500, "end_ms": 6500},
                ],
            },
            rubric=[
                {"key": "questions", "name": "Questions", "score": 66.7, "reason": "2 of 3 questions.",
                 "normalised_weight": 0.5},
                {"key": "next-step", "name": "Next step", "score": 100.0, "reason": "Follow-up proposed.",
                 "normalised_weight": 0.5},
            ],
            total_score=score,
        )
    if recording:
        session.recording.save(f"sessions/{session.pk}/recording.wav", ContentFile(b"RIFF0000WAVE"), save=True)
    return session


def _client(user, language: str = "en") -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return client


@pytest.fixture
def alice_session(alice, charlie, scenario):
    return _session(alice, scenario, recording=True)


# --------------------------------------------------------------------------- translations


def _template_msgids() -> set[tuple[str, str | None]]:
    """Every msgid the templates use: (singular, plural or None), in the form makemessages writes."""
    ids: set[tuple[str, str | None]] = set()
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""{%\s*translate\s+(["'])(.+?)\1""", text):
            ids.add((m.group(2), None))
        for m in re.finditer(r"{%\s*blocktranslate([^%]*)%}(.*?){%\s*endblocktranslate\s*%}", text, re.S):
            body = m.group(2)
            parts = re.split(r"{%\s*plural\s*%}", body)
            to_id = lambda s: re.sub(r"{{\s*(\w+)\s*}}", r"%(\1)s", s)  # noqa: E731
            ids.add((to_id(parts[0]), to_id(parts[1]) if len(parts) > 1 else None))
    return ids


def _python_msgids() -> set[str]:
    with translation.override("en"):  # English is the source language: the lazy string renders as its msgid
        ids = {str(s) for s in STRINGS.values()}
    for path in PAGES_PY.glob("*.py"):
        for m in re.finditer(r"""\b_\((["'])(.+?)\1\)""", path.read_text(encoding="utf-8")):
            ids.add(m.group(2))
    return ids


def test_every_template_string_has_a_chinese_translation():
    missing = []
    with translation.override("zh-hans"):
        for singular, plural in sorted(_template_msgids()):
            translated = translation.ngettext(singular, plural, 2) if plural else translation.gettext(singular)
            if translated in (singular, plural):
                missing.append(singular)
    assert not missing, f"untranslated: {missing}"


def test_every_script_and_page_helper_string_has_a_chinese_translation():
    with translation.override("zh-hans"):
        missing = [msgid for msgid in sorted(_python_msgids()) if translation.gettext(msgid) == msgid]
    assert not missing, f"untranslated: {missing}"


def test_chinese_translations_keep_every_placeholder():
    with translation.override("zh-hans"):
        for msgid in _python_msgids() | {s for s, _ in _template_msgids()}:
            placeholders = sorted(re.findall(r"{\w+}|%\(\w+\)[.\d]*\w", msgid))
            assert sorted(re.findall(r"{\w+}|%\(\w+\)[.\d]*\w", translation.gettext(msgid))) == placeholders, msgid


# --------------------------------------------------------------------------- every page, both languages


def _pages(session: RealtimeSession) -> list[str]:
    return [
        "/",
        f"/practice/{session.scenario_id}/",
        f"/practice/result/{session.pk}/",
        "/history/",
        "/review/",
        "/review/leaderboard/",
        f"/review/{session.pk}/",
    ]


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_it_renders_every_page_in_both_languages(language, alice_session, charlie):
    for user in (alice_session.trainee, charlie):
        client = _client(user, language)
        for url in _pages(alice_session):
            response = client.get(url, follow=True)
            assert response.status_code == 200, (user.username, url)
            html = response.content.decode()
            assert f'<html lang="{language}">' in html, url
            if language == "zh-hans":
                assert "Skip to content" not in html and "跳到主要内容" in html, url


def test_the_login_page_renders_in_chinese():
    client = Client()
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hans"
    html = client.get("/login/").content.decode()
    assert "登录" in html and "Sign in" not in html


def test_it_switches_language_through_the_switcher(alice):
    client = _client(alice)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"}, follow=True)
    assert "选择一位客户进行通话" in response.content.decode()


def test_the_call_page_hands_translated_sentences_to_its_scripts(alice, scenario):
    html = _client(alice, "zh-hans").get(f"/practice/{scenario.pk}/").content.decode()
    block = re.search(r'<script id="i18n" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(block)["state_listening"] == "正在聆听：请开始说话"


def test_the_results_page_explains_metrics_in_the_page_language(alice_session):
    en = _client(alice_session.trainee).get(f"/practice/result/{alice_session.pk}/").content.decode()
    zh = _client(alice_session.trainee, "zh-hans").get(f"/practice/result/{alice_session.pk}/").content.decode()
    assert "The share of the call&#x27;s speaking time that was you" in en
    assert "通话中你说话时间所占的比例" in zh
    assert "Top performers: about 43%, not above 65%" in en
    assert "72" in en and "How do you reconcile carrier invoices today?" in en


# --------------------------------------------------------------------------- keyboard and labels


class _Controls(HTMLParser):
    """Collects interactive elements, labels and ids to check keyboard access and names."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[tuple[str, dict[str, str | None]]] = []
        self.label_for: set[str] = set()
        self.problems: list[str] = []
        self._button: dict[str, str | None] | None = None
        self._button_text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("tabindex") not in (None, "0", "-1"):
            self.problems.append(f"positive tabindex on <{tag}>")
        if "onclick" in a and tag not in ("button", "a", "input", "select"):
            self.problems.append(f"click handler on non-focusable <{tag}>")
        if tag == "label" and a.get("for"):
            self.label_for.add(a["for"])
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.controls.append((tag, a))
        if tag == "a" and "href" not in a:
            self.problems.append("<a> without href is not focusable")
        if tag == "button":
            self._button, self._button_text = a, ""

    def handle_data(self, data):
        if self._button is not None:
            self._button_text += data

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            if not (self._button_text.strip() or self._button.get("aria-label")):
                self.problems.append(f"button without a name: {self._button}")
            self._button = None


def test_every_page_works_by_keyboard_with_labelled_controls(alice_session, charlie):
    for user in (alice_session.trainee, charlie):
        client = _client(user)
        for url in [*_pages(alice_session), "/review/?sort=-score"]:
            parser = _Controls()
            parser.feed(client.get(url, follow=True).content.decode())
            for tag, attrs in parser.controls:
                named = attrs.get("id") in parser.label_for or attrs.get("aria-label") or attrs.get("aria-labelledby")
                assert named, f"{url}: unlabelled <{tag}> {attrs}"
            assert not parser.problems, f"{url}: {parser.problems}"


def test_the_call_page_offers_every_control_the_trainee_needs(alice, scenario):
    html = _client(alice).get(f"/practice/{scenario.pk}/").content.decode()
    for control_id in ("mic-check", "conn-check", "start-call", "mute", "end-call", "typed-text", "call-state"):
        assert f'id="{control_id}"' in html
    assert 'role="meter"' in html and 'aria-live="polite"' in html
    assert "/static/vendor/socket.io-client/socket.io.min.js" in html


# --------------------------------------------------------------------------- access control


@pytest.mark.parametrize("path", ["/practice/result/{id}/", "/review/{id}/", "/review/{id}/recording/"])
def test_it_hides_a_session_from_people_who_may_not_see_it(path, alice_session, bob, dave):
    for user in (bob, dave):
        assert _client(user).get(path.format(id=alice_session.pk)).status_code == 404


def test_it_shows_a_session_to_the_trainee_their_manager_and_an_admin(alice_session, charlie, mallory):
    for user in (alice_session.trainee, charlie, mallory):
        assert _client(user).get(f"/review/{alice_session.pk}/").status_code == 200


def test_it_sends_anonymous_visitors_to_the_login_page(alice_session):
    for url in _pages(alice_session):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url


def test_it_sends_a_trainee_from_the_review_list_to_their_history(alice):
    response = _client(alice).get("/review/")
    assert response.status_code == 302 and response["Location"] == "/history/"


def test_the_recording_link_redirects_to_a_signed_media_url(alice_session):
    client = _client(alice_session.trainee)
    response = client.get(f"/review/{alice_session.pk}/recording/")
    assert response.status_code == 302 and "sig=" in response["Location"]
    assert client.get(response["Location"]).status_code == 200


def test_the_review_page_plays_the_recording_and_only_reviewers_can_comment(alice_session, charlie):
    manager_html = _client(charlie).get(f"/review/{alice_session.pk}/").content.decode()
    trainee_html = _client(alice_session.trainee).get(f"/review/{alice_session.pk}/").content.decode()
    assert '<audio id="recording"' in manager_html and "sig=" in manager_html
    assert 'id="comment-form"' in manager_html and 'id="override-form"' in manager_html
    assert 'id="comment-form"' not in trainee_html and 'id="override-form"' not in trainee_html


def test_the_trainee_sees_the_managers_comments(alice_session, charlie):
    ReviewComment.objects.create(session=alice_session, author=charlie, offset_ms=65000, text="Good open question.")
    for url in (f"/review/{alice_session.pk}/", f"/practice/result/{alice_session.pk}/"):
        html = _client(alice_session.trainee).get(url).content.decode()
        assert "Good open question." in html and "1:05" in html


# --------------------------------------------------------------------------- lists, CSV, leaderboard, history


def test_the_review_list_filters_and_sorts(alice_session, bob, charlie):
    other = make_scenario(slug="other", title="Zebra scenario")
    _session(bob, other, score=90.0)
    client = _client(charlie)
    by_score = client.get("/review/?sort=-score").content.decode()
    assert by_score.index("Zebra scenario</a>") < by_score.index("Cost-focused CFO</a>")
    ascending = client.get("/review/?sort=score").content.decode()
    assert ascending.index("Cost-focused CFO</a>") < ascending.index("Zebra scenario</a>")
    only_alice = client.get("/review/?trainee=alice").content.decode()
    assert "Zebra scenario</a>" not in only_alice and "Cost-focused CFO</a>" in only_alice
    by_scenario = client.get(f"/review/?scenario={other.pk}").content.decode()
    assert "Cost-focused CFO</a>" not in by_scenario
    assert "No calls match" in client.get("/review/?since=2999-01-01").content.decode()


def test_the_csv_export_has_one_row_per_visible_session(alice_session, bob, dave, charlie, scenario):
    _session(bob, scenario, score=None)
    _session(dave, scenario, score=99.0)  # not charlie's team
    response = _client(charlie).get("/review/?format=csv")
    assert response["Content-Type"] == "text/csv"
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:3] == ["session", "trainee", "scenario"]
    assert sorted(r[1] for r in rows[1:]) == ["alice", "bob"]
    assert {r[1]: r[-1] for r in rows[1:]} == {"alice": "72.0", "bob": ""}


def test_the_leaderboard_ranks_each_team_by_best_score(alice_session, bob, charlie, scenario):
    _session(bob, scenario, score=88.0)
    _session(alice_session.trainee, scenario, score=60.0)
    html = _client(charlie).get("/review/leaderboard/").content.decode()
    assert "Team Charlie" in html
    assert html.index("<td>bob</td>") < html.index("<td>alice</td>")
    assert "<td>72</td><td>66</td><td>2</td>" in html  # alice: best 72, average 66, two calls


def test_the_history_page_charts_the_trainees_own_scores(alice_session, bob, scenario):
    _session(bob, scenario, score=12.0)
    html = _client(alice_session.trainee).get("/history/").content.decode()
    assert 'id="history-chart"' in html and '"score": 72.0' in html and '"score": 12.0' not in html


def test_the_scenario_list_shows_the_best_score_so_far(alice_session):
    html = _client(alice_session.trainee).get("/").content.decode()
    assert "Margaret Chen" in html and "<strong>72</strong>" in html


def test_a_result_still_being_scored_shows_progress_and_polls(alice, scenario):
    session = _session(alice, scenario, score=None)
    RealtimeSession.objects.filter(pk=session.pk).update(processing="running", processing_progress=40)
    html = _client(alice).get(f"/practice/result/{session.pk}/").content.decode()
    assert 'role="progressbar"' in html and 'aria-valuenow="40"' in html and "lingecho/result.js" in html
    assert "How do you reconcile carrier invoices today?" in html


def test_the_review_says_how_a_turn_ended():
    from roleplay.pages.views import _turn_end_note

    with translation.override("en"):
        note = _turn_end_note({"decision": "patience_expired", "probability": 0.12, "waited_ms": 2000, "cue": "and"})
    assert "patience" in note and "0.12" in note and "2000 ms" in note and "and" in note
    assert _turn_end_note({}) == ""
