"""Scenario briefs for the cloud tests (plain dataclasses: no database needed)."""

from __future__ import annotations

from roleplay.dialog.base import ObjectionBrief, ScenarioBrief

SECRET_GOAL = "Book a follow-up demo with the CFO by Friday"
SECRET_GOAL_ZH = "在周五前约好财务总监的演示"


def english_brief() -> ScenarioBrief:
    return ScenarioBrief(
        id="1", title="CFO at a retailer", language="en", difficulty="hard",
        persona_name="Dana Lee", persona_title="CFO", company="Acme Retail", industry="retail",
        personality="Blunt, numbers-driven, short on time.",
        background="We run 40 stores and our last software rollout went over budget.",
        concerns=("Total cost of ownership", "Disruption to store staff"),
        opening_line="Dana Lee speaking. You have two minutes.",
        objections=(ObjectionBrief("obj-1", "It's too expensive for us right now.", ("price", "cost"),
                                   ("roi", "payback")),),
        buying_signals=("That payback period sounds reasonable.",),
        next_step_conditions=("objections_handled:1",), max_turns=10, goals=(SECRET_GOAL,),
    )


def chinese_brief() -> ScenarioBrief:
    return ScenarioBrief(
        id="2", title="采购经理", language="zh-CN", difficulty="medium",
        persona_name="王芳", persona_title="采购经理", company="华东制造", industry="制造业",
        personality="谨慎，注重成本。", background="我们工厂去年换过一次系统，效果不好。",
        concerns=("价格", "实施周期"), opening_line="喂，您好，我是王芳。",
        objections=(ObjectionBrief("obj-1", "你们的价格太高了。", ("价格",), ("投资回报",)),),
        buying_signals=("听起来还不错。",), next_step_conditions=(), max_turns=8, goals=(SECRET_GOAL_ZH,),
    )
