from __future__ import annotations

import pytest

from roleplay import services

pytestmark = pytest.mark.django_db


def test_it_stores_each_end_reason_as_given(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    assert services.session_end(session=session, reason="buyer_ended").end_reason == "buyer_ended"


def test_an_unknown_end_reason_is_stored_as_an_error_not_a_guess(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    assert services.session_end(session=session, reason="cosmic_rays").end_reason == "error"


def test_ending_twice_keeps_the_first_reason(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.session_end(session=session, reason="max_turns")
    assert services.session_end(session=session, reason="timeout").end_reason == "max_turns"


def test_the_live_session_limit_is_enforced(alice, scenario, settings):
    settings.MAX_LIVE_SESSIONS_PER_USER = 1
    services.session_create(trainee=alice, scenario=scenario, transport="text")
    with pytest.raises(services.LiveSessionLimit):
        services.session_create(trainee=alice, scenario=scenario, transport="text")
