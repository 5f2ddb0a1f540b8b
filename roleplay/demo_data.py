"""Demo users, team and scenarios. Idempotent: keyed by username, team name and scenario slug."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from roleplay.models import Objection, RubricCriterion, Scenario, Team, User

_STANDARD_RUBRIC = [
    ("discovery", "Discovery before pitching", "discovery", 2.0, {"min_questions": 2}),
    ("questions", "Asked good questions", "questions", 1.5, {"target": 4}),
    ("objections", "Handled objections", "objection_handling", 2.0, {}),
    ("listening", "Listened more than talked", "talk_ratio", 1.0, {"low": 0.35, "high": 0.6}),
    ("next-step", "Secured a next step", "next_step", 2.0, {}),
    ("clarity", "Clear, filler-free speech", "fillers", 0.5, {"max_per_100": 3}),
]

SCENARIOS: list[dict] = [
    {
        "slug": "cost-focused-cfo",
        "title": "Cost-focused CFO at a logistics firm",
        "summary": "You sell a spend-analytics platform. Margaret signed a budget freeze last quarter and "
        "treats every new tool as a cost. Find the pain before you pitch and get a follow-up meeting.",
        "language": "en",
        "difficulty": "medium",
        "persona_name": "Margaret Chen",
        "persona_title": "Chief Financial Officer",
        "company": "Northwind Freight",
        "industry": "Logistics",
        "personality": "Direct, numbers-driven, impatient with vague claims. Warms up to concrete ROI.",
        "background": "We run 240 trucks across the Midwest. Our fuel and carrier invoices are reconciled by "
        "hand in spreadsheets. Last year one overbilling error cost us about $400k. We have a budget freeze "
        "until the next fiscal year.",
        "concerns": "Budget freeze until next fiscal year\nPayback must be under 12 months\n"
        "Her team has no time for a long implementation\nPrevious software vendor overpromised",
        "opening_line": "Margaret Chen speaking. I have about ten minutes, so what is this about?",
        "voice": "en-us+f3",
        "goals": "Uncover the cost of manual invoice reconciliation\nQuantify the value before discussing price\n"
        "Handle the budget objection\nBook a 30-minute follow-up with her finance controller",
        "buying_signals": "That overbilling number is not small, I'll admit.\n"
        "If it pays for itself inside a year, I can find the money.\nSend me something concrete.",
        "next_step_conditions": "objections_handled:1\nasked_questions:2\nproposed_next_step",
        "max_turns": 12,
        "time_limit_seconds": 900,
        "objections": [
            (
                "We have a budget freeze until next fiscal year. I can't add new costs right now.",
                "price, cost, budget, pricing, expensive, invest, license, subscription",
                "roi, payback, pays for itself, savings, save, return, pilot, recover",
            ),
            (
                "Every vendor says they'll save us money. Why would you be any different?",
                "save you money, reduce costs, best, leading, number one, guarantee",
                "case study, customer, reference, example, similar company, proof, results",
            ),
            (
                "My team is already stretched. We can't take on a six-month implementation.",
                "implementation, rollout, onboarding, migrate, integration, set up, deploy",
                "weeks, days, we handle, done for you, no it work, light, quick, minimal",
            ),
        ],
    },
    {
        "slug": "loyal-it-director",
        "title": "IT director happy with the incumbent",
        "summary": "You sell a cloud backup and recovery service. Raj has used the same vendor for seven years "
        "and sees no reason to change. Find a crack in 'happy' without trashing the competitor.",
        "language": "en",
        "difficulty": "hard",
        "persona_name": "Raj Patel",
        "persona_title": "Director of IT",
        "company": "Harbor Health Clinics",
        "industry": "Healthcare",
        "personality": "Polite, loyal to his vendor, risk-averse, answers briefly. Respects people who know HIPAA.",
        "background": "We run 18 clinics. Our backups go to an on-premises appliance from our current vendor, "
        "renewed every three years, and the renewal is in five months. A ransomware attack at a clinic group "
        "near us worried our board. Our last restore test took two days.",
        "concerns": "Switching risk during a renewal year\nHIPAA compliance and audit trails\n"
        "Restore times the board keeps asking about\nLoyalty to a vendor who has been responsive",
        "opening_line": "This is Raj. We're pretty happy with our current backup setup, to be honest.",
        "voice": "en-us+m3",
        "goals": "Earn the right to ask questions despite 'we're happy'\nUncover the restore-time worry\n"
        "Address switching risk and compliance\nGet agreement to a restore-time comparison or a pilot",
        "buying_signals": "The board did ask about restore times again last month.\n"
        "A side-by-side restore test would at least answer their question.",
        "next_step_conditions": "objections_handled:2\nasked_questions:3\nproposed_next_step",
        "max_turns": 14,
        "time_limit_seconds": 900,
        "objections": [
            (
                "We've been with our vendor seven years and they've never let us down. Why would I switch?",
                "switch, replace, competitor, better than, move to, change vendor",
                "renewal, restore test, board, ransomware, side by side, compare, no rip and replace, alongside",
            ),
            (
                "Anything that touches patient data has to be HIPAA compliant. I can't take chances there.",
                "cloud, data, store, upload, offsite, patient",
                "hipaa, baa, business associate, encrypted, audit, compliance, soc 2",
            ),
            (
                "Honestly, I don't have the bandwidth to evaluate a new vendor this year.",
                "demo, evaluate, trial, meeting, presentation",
                "one hour, we run it, no effort, restore test, your team does nothing, minimal time",
            ),
        ],
    },
    {
        "slug": "busy-gatekeeper",
        "title": "Busy gatekeeper: the executive assistant",
        "summary": "You need a meeting with the VP of Sales at a software company. Dana screens every call. "
        "Be respectful, give a reason that matters to her boss, and get a slot on the calendar.",
        "language": "en",
        "difficulty": "easy",
        "persona_name": "Dana Brooks",
        "persona_title": "Executive Assistant to the VP of Sales",
        "company": "Brightline Software",
        "industry": "Software",
        "personality": "Friendly but protective of her boss's time, fast, dislikes being pushed.",
        "background": "Mark is hiring 20 new reps this quarter. He said in our last staff meeting that onboarding "
        "takes too long. I get about ten vendor calls a day.",
        "concerns": "Protecting the VP's calendar\nNot passing on generic sales pitches\n"
        "Knowing exactly why the meeting matters",
        "opening_line": "Good morning, this is Dana in Mark Lewis's office. How can I help you?",
        "voice": "en-us+f2",
        "goals": "Treat the gatekeeper as an ally\nGive a specific, relevant reason for the meeting\n"
        "Secure a 20-minute slot or a direct referral",
        "buying_signals": "He did say onboarding is his biggest headache this quarter.\n"
        "If you can keep it to twenty minutes, I might find a slot.",
        "next_step_conditions": "objections_handled:1\nasked_questions:1\nproposed_next_step",
        "max_turns": 10,
        "time_limit_seconds": 600,
        "objections": [
            (
                "Mark's calendar is completely full. Can you just send an email?",
                "meeting, talk to mark, speak with, call with, calendar",
                "twenty minutes, 20 minutes, onboarding, new reps, hiring, specific, brief",
            ),
            (
                "We get a lot of these calls. What makes this different?",
                "product, solution, platform, we offer, software",
                "onboarding, ramp, new reps, quota, hiring, his goal",
            ),
        ],
    },
    {
        "slug": "zh-procurement-manager",
        "title": "制造企业采购经理：价格敏感",
        "summary": "你在销售一套工业设备预测性维护系统。王经理只关心价格和交付，"
        "先了解停机带来的损失，再谈价值，争取一次现场演示。",
        "language": "zh-CN",
        "difficulty": "medium",
        "persona_name": "王建国",
        "persona_title": "采购经理",
        "company": "华东精密制造有限公司",
        "industry": "制造业",
        "personality": "务实、谨慎、对价格非常敏感，喜欢听具体数字。",
        "background": "我们工厂有三条产线。去年因为设备突发故障停机了六次，每次损失大约二十万元。"
        "我们现在的维护靠人工巡检，预算每年年初确定。",
        "concerns": "价格太高\n实施周期影响生产\n数据安全\n供应商的售后服务",
        "opening_line": "你好，我是王建国。我时间不多，你直接说吧。",
        "voice": "cmn",
        "goals": "了解停机损失\n用投资回报回应价格异议\n争取一次现场演示",
        "buying_signals": "停机的损失确实不小。\n如果一年内能回本，可以考虑。",
        "next_step_conditions": "objections_handled:1\nasked_questions:2\nproposed_next_step",
        "max_turns": 12,
        "time_limit_seconds": 900,
        "objections": [
            (
                "你们的价格比别家高太多了，我们今年预算很紧。",
                "价格, 多少钱, 报价, 费用, 预算, 贵",
                "回报, 回本, 节省, 停机损失, 投资回报, 试点",
            ),
            (
                "安装调试会不会影响我们的生产？停一天线都不行。",
                "安装, 实施, 部署, 上线, 调试",
                "不停产, 周末, 分批, 两周, 不影响生产",
            ),
        ],
    },
]

_USERS = [
    ("admin", "admin", True),
    ("manager", "manager", False),
    ("trainee", "trainee", False),
    ("trainee2", "trainee", False),
]
PUBLISHED_PASSWORD = "lingecho-demo"  # printed in the README: anyone knows it


@dataclass(frozen=True)
class DemoDataResult:
    users: int  # demo users created or refreshed (0 when no demo password is configured)
    scenarios: int
    published_password_users: list[str]  # existing users still signing in with the README's password


@transaction.atomic
def demo_data_load() -> DemoDataResult:
    """Scenarios and the team always; the demo users only when ``settings.LINGECHO_DEMO_PASSWORD``
    is set, which by default it is only in the embedded default (no DATABASE_URL). A production
    database never gets an ``admin`` whose password is printed in the README."""
    password = settings.LINGECHO_DEMO_PASSWORD
    users = _demo_users_load(password) if password else {}
    team, _ = Team.objects.get_or_create(name="Inside Sales")
    if users:
        team.managers.add(users["manager"])
        team.members.add(users["trainee"], users["trainee2"])
    for spec in SCENARIOS:
        _scenario_load(spec)
    return DemoDataResult(
        users=len(users),
        scenarios=len(SCENARIOS),
        published_password_users=[] if password == PUBLISHED_PASSWORD else _published_password_users(),
    )


def _demo_users_load(password: str) -> dict[str, User]:
    users = {}
    for username, role, superuser in _USERS:
        user, created = User.objects.get_or_create(username=username, defaults={"role": role})
        if created:
            user.set_password(password)
        user.role = role
        user.is_staff = superuser
        user.is_superuser = superuser
        user.save()
        users[username] = user
    return users


def _published_password_users() -> list[str]:
    """Demo accounts left from an earlier run that still accept the published password."""
    usernames = [username for username, _, _ in _USERS]
    return [u.username for u in User.objects.filter(username__in=usernames) if u.check_password(PUBLISHED_PASSWORD)]


def _scenario_load(spec: dict) -> None:
    spec = dict(spec)
    objections = spec.pop("objections")
    scenario, _ = Scenario.objects.update_or_create(slug=spec["slug"], defaults=spec)
    scenario.objections.all().delete()
    for order, (statement, triggers, handling) in enumerate(objections, start=1):
        Objection.objects.create(
            scenario=scenario, order=order, statement=statement, triggers=triggers, handling=handling
        )
    for order, (key, name, kind, weight, params) in enumerate(_STANDARD_RUBRIC, start=1):
        RubricCriterion.objects.update_or_create(
            scenario=scenario,
            key=key,
            defaults={"order": order, "name": name, "kind": kind, "weight": weight, "params": params},
        )
