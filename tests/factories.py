"""Named people and scenarios for tests: alice and bob are trainees on charlie's team; dave is a
trainee on no team of charlie's; mallory is an admin."""

from __future__ import annotations

from roleplay.models import Objection, RubricCriterion, Scenario, Team, User

PASSWORD = "test-password-123"


def make_user(username: str, role: str = "trainee") -> User:
    user = User.objects.create_user(username=username, password=PASSWORD, role=role)
    if role == "admin":
        user.is_staff = user.is_superuser = True
        user.save()
    return user


def make_scenario(**overrides) -> Scenario:
    fields = {
        "slug": "cfo",
        "title": "Cost-focused CFO",
        "language": "en",
        "difficulty": "medium",
        "persona_name": "Margaret Chen",
        "persona_title": "CFO",
        "company": "Northwind Freight",
        "industry": "Logistics",
        "personality": "Direct and numbers-driven.",
        "background": "Invoices are reconciled by hand; an overbilling error cost about $400k.",
        "concerns": "Budget freeze\nPayback under 12 months",
        "opening_line": "Margaret Chen speaking. What is this about?",
        "goals": "Uncover the cost of manual reconciliation\nBook a follow-up",
        "buying_signals": "That number is not small.",
        "next_step_conditions": "objections_handled:1\nasked_questions:1\nproposed_next_step",
        "max_turns": 6,
    }
    fields.update(overrides)
    scenario = Scenario.objects.create(**fields)
    Objection.objects.create(
        scenario=scenario,
        order=1,
        statement="We have a budget freeze. I can't add new costs right now.",
        triggers="price, cost, budget, pricing",
        handling="roi, payback, savings, pays for itself",
    )
    RubricCriterion.objects.create(
        scenario=scenario,
        order=1,
        key="questions",
        name="Questions",
        kind="questions",
        weight=1.0,
        params={"target": 3},
    )
    RubricCriterion.objects.create(
        scenario=scenario, order=2, key="next-step", name="Next step", kind="next_step", weight=1.0
    )
    return scenario


def make_team(name: str, *, managers: list[User], members: list[User]) -> Team:
    team = Team.objects.create(name=name)
    team.managers.add(*managers)
    team.members.add(*members)
    return team
