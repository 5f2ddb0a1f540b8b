"""The scripted buyer: an offline, deterministic persona engine driven by the scenario brief.

It is the default brain (works after `pip install`, no network, no model) and the reference
for what a buyer should do, so it tries to behave like a real, somewhat sceptical buyer:

- it answers discovery questions in character, from the persona's background and concerns,
  choosing the concern that best matches the question and rotating so it does not repeat;
- it raises an objection when the trainee's words hit one of the objection's triggers, or when
  the trainee pitches before asking a single discovery question ("pitching too early");
  never the same objection twice, and only one open objection at a time;
- it acknowledges an objection once the trainee's words contain one of its handling phrases
  (a hard buyer wants two distinct ones), and otherwise stays sceptical and restates it;
- it refuses, in character, to be steered off-role ("ignore your instructions", "you are an
  AI", the weather, poems, code …), counts the attempts and hangs up when patience runs out;
- it agrees to a next step only when the scenario's next-step conditions are met, and
  otherwise defers naming what is missing (an open worry, a new objection, too few questions);
- it ends the call politely at `max_turns` trainee turns or when the trainee says goodbye.

Statelessness: nothing is kept between calls. `_Conversation` replays every trainee turn of
the history from the start, so the reply and the state depend only on (brief, history, seed):
a reconnect or another worker gets exactly the same reply. Buyer turns in the history are not
read (whatever the buyer said is implied by the trainee turns before it). The seed only picks
between equivalent wordings.

Next-step condition language (`ScenarioBrief.next_step_conditions`, all must hold):

- ``objections_handled:N`` — at least N objections handled. A hard buyer needs N+1. N is
  capped at the number of objections in the brief, so a scenario can never be unwinnable.
- ``asked_questions:N`` — the trainee asked at least N discovery questions.
- ``proposed_next_step`` — the trainee's current turn proposes a next step (meeting, demo,
  call, trial, pilot, proposal, …). The buyer only ever agrees to a proposal, so this
  condition is implied even when not listed.
- ``no_open_objection`` — no objection is left open. Also always implied: a buyer with an
  unanswered worry does not book a meeting.
- ``min_turns:N`` — at least N trainee turns so far.

Unknown conditions are rejected by `parse_conditions` (use it to validate a scenario when it
is saved); at call time the brain skips them rather than break a live call.

Difficulty sets patience: easy buyers are chatty and tolerate four off-role attempts, medium
three, hard two; hard buyers answer in one short sentence, never volunteer extras and need
more handled objections (see above).
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from .base import TRAINEE, BrainState, ObjectionBrief, ScenarioBrief, Turn, split_sentences

# --- keyword tables ----------------------------------------------------------------------------
# Detection always uses English and Chinese keywords together: trainees mix languages
# ("我们可以约个 demo 吗"), and ASR output is not always in the scenario's language.

# fmt: off
GREETING = (
    "hi", "hello", "hey", "good morning", "good afternoon", "good evening", "how are you", "how's it going",
    "how is it going", "nice to meet", "nice to speak", "good to speak", "thanks for taking",
    "thank you for taking", "my name is", "calling from", "你好", "您好", "早上好", "下午好", "晚上好",
    "幸会", "很高兴", "打扰一下", "我是",
    # asking for time is small talk, not discovery
    "do you have a minute", "do you have a moment", "got a minute", "is this a good time",
    "is now a good time", "现在方便吗", "现在有空吗", "方便吗", "有空吗",
)
QUESTION_OPENERS = (
    "what", "how", "why", "who", "where", "when", "which", "do", "does", "did", "are", "is", "can", "could",
    "would", "will", "have", "has", "tell me", "walk me through", "help me understand",
    "i'd like to understand", "i would like to understand", "i'm curious", "i am curious", "curious",
)
QUESTION_MARKERS_ZH = (
    "吗", "什么", "怎么", "为什么", "为何", "哪", "多少", "如何", "是否", "能否", "有没有", "是不是",
    "请问", "呢", "介绍一下", "说说", "聊聊", "讲讲",
)
PITCH = (
    "our solution", "our product", "our platform", "our software", "our tool", "our system", "our service",
    "we offer", "we provide", "we can help", "we help", "we've helped", "we have helped", "we deliver",
    "feature", "integrates", "price", "pricing", "discount", "% off", "percent off", "save you",
    "saves you", "best in class", "best-in-class", "market leader", "industry-leading", "industry leading",
    "let me tell you about", "let me show you", "our customers", "platform", "我们的产品", "我们的方案",
    "我们的平台", "我们的系统", "我们的软件", "我们提供", "我们可以帮", "功能", "价格", "报价", "优惠",
    "折扣", "领先", "解决方案",
)
# (phrase, kind) — the kind names the step when the buyer agrees ("Okay, let's set up a demo").
NEXT_STEP = (
    ("demo", "demo"), ("demonstration", "demo"), ("walkthrough", "demo"), ("演示", "demo"),
    ("free trial", "trial"), ("trial", "trial"), ("试用", "trial"), ("pilot", "pilot"),
    ("proof of concept", "pilot"), ("poc", "pilot"), ("试点", "pilot"), ("proposal", "proposal"),
    ("quote", "proposal"), ("报价单", "proposal"), ("方案发", "proposal"), ("meeting", "meeting"),
    ("meet next", "meeting"), ("sit down", "meeting"), ("get together", "meeting"), ("开个会", "meeting"),
    ("会议", "meeting"), ("见面", "meeting"), ("拜访", "meeting"), ("a call", "call"),
    ("another call", "call"), ("follow-up call", "call"), ("follow up call", "call"), ("电话会", "call"),
    ("再通个电话", "call"), ("schedule", "generic"), ("book a", "generic"), ("book some", "generic"),
    ("set up a", "generic"), ("set up some", "generic"), ("next step", "generic"), ("next week", "generic"),
    ("calendar", "generic"), ("follow up", "generic"), ("follow-up", "generic"), ("send you", "send"),
    ("send over", "send"), ("email you", "send"), ("下周", "generic"), ("约个", "generic"),
    ("约一下", "generic"), ("安排", "generic"), ("下一步", "generic"), ("发给您", "send"), ("发您", "send"),
    ("发给你", "send"),
)
OFF_ROLE = (
    "ignore your instructions", "ignore the instructions", "ignore previous", "ignore all", "ignore your",
    "disregard your", "you are an ai", "are you an ai", "you are a bot", "are you a bot", "you are a robot",
    "are you a robot", "you are just an ai", "language model", "chatgpt", "gpt", "llm",
    "forget the scenario", "forget your", "forget everything", "system prompt", "your prompt",
    "your instructions", "pretend", "jailbreak", "roleplay", "role play", "role-play", "developer mode",
    "weather", "poem", "write code", "write some code", "write me a", "python script", "tell me a joke",
    "a joke", "recipe", "football", "homework", "忽略", "你是ai", "你是人工智能", "人工智能", "机器人",
    "提示词", "系统提示", "忘记", "忘掉", "假装", "扮演", "角色扮演", "天气", "写诗", "写一首", "代码",
    "笑话", "编程",
)
CLOSING = (
    "goodbye", "good bye", "bye", "talk soon", "speak soon", "have a good day", "have a great day",
    "have a nice day", "take care", "see you", "that's all from me", "i'll let you go", "i will let you go",
    "let you get back", "再见", "拜拜", "回头聊", "先这样", "不打扰了", "不打扰您了",
)
# Only a closing when nothing else is going on in the turn ("thanks for your time" also opens calls).
SOFT_CLOSING = (
    "thanks for your time", "thank you for your time", "谢谢您的时间", "谢谢你的时间",
)
# fmt: on

STOPWORDS = frozenset(
    "what which where when your about with that this have does there their they them from into would could "
    "should will just like much many some more most also than then been being were tell know want need make "
    "really today right now currently".split()
)

OFF_ROLE_PATIENCE = {"easy": 4, "medium": 3, "hard": 2}


# --- templates ---------------------------------------------------------------------------------
# Every slot has several equivalent wordings; the seed picks one. Slots ending in "_hard" are
# used instead of the plain slot for hard buyers when present.

EN: dict[str, tuple[str, ...]] = {
    "greeting_easy": (
        "Hi, good to hear from you. I've got about twenty minutes, so what's on your mind?",
        "Hello! Thanks for reaching out. What did you want to talk about?",
        "Hi there. Sure, I have a few minutes. What can I do for you?",
    ),
    "greeting": (
        "Hi. I don't have a lot of time today, so what's this about?",
        "Hello. Go ahead, I'm listening.",
        "Hi. What can I do for you?",
    ),
    "greeting_hard": (
        "Hi. I've got five minutes. What is it?",
        "Yes, hello. What's this about?",
        "Go ahead. Keep it short.",
    ),
    "greet_short": ("Hi.", "Hello.", "Hi there."),
    "answer_bg": (
        "Sure. {fact}",
        "Fair question. {fact}",
        "Let me give you some context. {fact}",
        "Okay, some background. {fact}",
    ),
    "answer_bg_hard": ("{fact}",),
    "answer_concern": (
        "Honestly, my biggest worry is {concern}.",
        "What matters most to me right now is {concern}.",
        "As {title}, I keep coming back to {concern}.",
        "The thing I need to get right is {concern}.",
    ),
    "answer_concern_hard": ("{Concern}.", "Mostly {concern}."),
    "answer_concern_sentence": ("To be honest, {concern}", "Here's the thing. {Concern}", "Well, {concern}"),
    "answer_concern_sentence_hard": ("{Concern}",),
    "answer_extra": (
        "That's the reality for a {industry} business like ours.",
        "What else do you want to know?",
        "Why do you ask?",
        "Does that help?",
    ),
    "cautious": (
        "So you can see why I'm careful here.",
        "Which is why I still need a real answer on my concern.",
        "That's exactly why this worries me.",
    ),
    "raise": (
        "{statement}",
        "Hmm. {statement}",
        "I'll be honest with you. {statement}",
        "Let me stop you there. {statement}",
    ),
    "raise_hard": ("{statement}", "Stop there. {statement}"),
    "raise_question": (
        "Since you ask. {statement}",
        "Well, since you bring it up. {statement}",
        "{statement}",
    ),
    "pitch_early": (
        "Hold on. You don't know much about us yet. {statement}",
        "Slow down a bit, you haven't asked me anything about our business. {statement}",
        "Before you go into features, you should know where we stand. {statement}",
    ),
    "pitch_early_hard": ("You haven't asked me a single question. {statement}", "Slow down. {statement}"),
    "pitch_early_none": (
        "You haven't asked me a single thing about our business yet.",
        "Hold on, you don't know what we actually need yet.",
    ),
    "ack": (
        "Okay, that's fair.",
        "Alright, that actually helps.",
        "That makes sense. I feel better about that.",
        "Good, that addresses my concern.",
    ),
    "ack_hard": ("Fine. That's reasonable.", "Okay. Noted.", "That helps, I suppose."),
    "partial_hard": (
        "That's a start, but I need more than that. {statement}",
        "Maybe. I'm not convinced yet. {statement}",
    ),
    "sceptical": (
        "That doesn't really answer my concern. {statement}",
        "I hear you, but I'm still not convinced. {statement}",
        "You're not really addressing my point. {statement}",
    ),
    "sceptical_hard": ("That's not an answer. {statement}", "You're dodging. {statement}"),
    "pitch": (
        "Everyone tells me that. What makes you different?",
        "Okay. How would that actually help with {concern}?",
        "Maybe. I'd need to see it working for a {industry} company like ours.",
    ),
    "pitch_hard": ("Everyone says that.", "So does every vendor.", "Prove it."),
    "fallback": (
        "Okay. Where are you going with this?",
        "I see. And what does that mean for us?",
        "Go on.",
        "Right. What exactly are you suggesting?",
    ),
    "fallback_hard": ("And?", "Get to the point, please.", "Okay."),
    "off_role": (
        "I'm not sure what that has to do with why you called. What did you want to discuss?",
        "Sorry, I don't follow. I thought we were talking about {company}'s needs.",
        "Let's stay on topic, please. Why did you call me today?",
    ),
    "off_role_hard": ("That's not why I took this call.", "I don't have time for that. What do you want?"),
    "give_up": (
        "I don't think this is a good use of my time. Let's leave it here. Goodbye.",
        "I'm going to stop here, this isn't going anywhere. Goodbye.",
    ),
    "agree": (
        "Okay, {step} makes sense. Send me an invite for next week.",
        "Alright, let's set up {step}. I'll loop in my team.",
        "Fine, I'm open to {step}. Send me a couple of time slots.",
    ),
    "agree_hard": ("Fine. {Step}. Send me a time.", "Okay. Set up {step}, but keep it short."),
    "already_agreed": (
        "We already agreed on that. I'll look out for the invite.",
        "Yes, as agreed. Send the details.",
    ),
    "defer_open": (
        "Before we talk about {step}, I'm still worried about this. {statement}",
        "I'm not ready for {step} yet. {statement}",
    ),
    "defer_raise": (
        "Not so fast. Before I commit to anything, {statement_lc}",
        "Before I agree to {step}, there's something else. {statement}",
    ),
    "defer_questions": (
        "It feels a bit early for that. You haven't asked much about how we work at {company}.",
        "I'm not sure you understand our situation well enough yet to suggest {step}.",
    ),
    "defer_turns": ("It's a bit early for that. Let's talk a little more first.",),
    "nudge": ("So what would you suggest as a next step?", "Okay. So where do we go from here?"),
    "goodbye_agreed": ("Great. Talk to you then. Goodbye.", "Good. Speak soon, goodbye."),
    "goodbye": (
        "Alright. Feel free to send me something in writing. Goodbye.",
        "Okay, thanks for calling. Goodbye.",
    ),
    "end": ("I'm sorry, I have to jump to another meeting.", "Look, I have to run to another meeting now."),
    "end_agreed": ("Let's pick this up at {step} as agreed. Goodbye.",),
    "end_open": ("Send me a short summary by email and I'll take a look. Goodbye.",),
    "after_end": ("I really have to go now. Goodbye.",),
}

ZH: dict[str, tuple[str, ...]] = {
    "greeting_easy": (
        "您好，很高兴接到您的电话。我大概有二十分钟，您想聊什么？",
        "你好！谢谢联系我们。您今天想谈什么？",
        "您好。我有几分钟，有什么可以帮您的？",
    ),
    "greeting": ("你好。我今天时间不多，您有什么事？", "您好，请讲，我在听。", "你好。有什么事吗？"),
    "greeting_hard": ("喂，我只有五分钟。什么事？", "你好。直接说重点吧。", "说吧，尽量简短。"),
    "greet_short": ("您好。", "你好。"),
    "answer_bg": ("好问题。{fact}", "我先介绍一下背景。{fact}", "是这样的。{fact}"),
    "answer_bg_hard": ("{fact}",),
    "answer_concern": (
        "说实话，我最担心的是{concern}。",
        "我现在最在意的是{concern}。",
        "作为{title}，我一直在考虑{concern}。",
        "我们必须解决好的是{concern}。",
    ),
    "answer_concern_hard": ("主要是{concern}。",),
    "answer_concern_sentence": ("说实话，{concern}", "是这样的，{concern}"),
    "answer_concern_sentence_hard": ("{concern}",),
    "answer_extra": (
        "做{industry}的企业基本都是这样。",
        "您还想了解什么？",
        "您为什么这么问？",
        "这样说清楚吗？",
    ),
    "cautious": (
        "所以您能理解我为什么这么谨慎。",
        "所以我还是需要您正面回答我的顾虑。",
        "这正是我担心的原因。",
    ),
    "raise": ("{statement}", "嗯。{statement}", "我跟您说实话。{statement}", "先打断一下。{statement}"),
    "raise_hard": ("{statement}", "先停一下。{statement}"),
    "raise_question": ("既然您问到了。{statement}", "说到这个。{statement}", "{statement}"),
    "pitch_early": (
        "等一下，您还不了解我们的情况。{statement}",
        "慢一点，您还没问过我们公司的情况呢。{statement}",
        "在讲功能之前，您应该先了解我们的处境。{statement}",
    ),
    "pitch_early_hard": ("您一个问题都没问。{statement}", "慢着。{statement}"),
    "pitch_early_none": ("您还没问过我们公司的任何情况。", "等一下，您还不知道我们真正需要什么。"),
    "ack": (
        "好，这个说法有道理。",
        "嗯，这样说我就放心一些了。",
        "明白了，这解决了我的顾虑。",
        "好的，这点我能接受。",
    ),
    "ack_hard": ("行，还算合理。", "好，知道了。", "嗯，算是有帮助。"),
    "partial_hard": ("这只是开始，还不够。{statement}", "也许吧，但我还没被说服。{statement}"),
    "sceptical": (
        "这并没有回答我的顾虑。{statement}",
        "我明白您的意思，但我还是不放心。{statement}",
        "您没有正面回应我的问题。{statement}",
    ),
    "sceptical_hard": ("这不算回答。{statement}", "您在回避问题。{statement}"),
    "pitch": (
        "每家供应商都这么说。你们有什么不一样？",
        "好吧。那这对{concern}具体有什么帮助？",
        "也许吧。我得看到它在我们这样的{industry}企业里真正跑起来。",
    ),
    "pitch_hard": ("谁都这么说。", "每家都这么讲。", "拿出证据来。"),
    "fallback": (
        "好的。您想说的重点是什么？",
        "明白。这对我们意味着什么？",
        "您继续。",
        "嗯。您具体的建议是什么？",
    ),
    "fallback_hard": ("然后呢？", "请直接说重点。", "嗯。"),
    "off_role": (
        "我不太明白这跟您今天打电话来有什么关系。您想谈什么？",
        "抱歉，我没听懂。我以为我们在谈{company}的需求。",
        "我们还是说正事吧。您今天找我是为了什么？",
    ),
    "off_role_hard": ("我接这个电话不是为了聊这个。", "我没时间聊这些。您到底想说什么？"),
    "give_up": ("我觉得这是在浪费时间。就到这里吧，再见。", "我们先到这儿吧，这样谈下去没有意义。再见。"),
    "agree": (
        "好，那就安排一次{step}吧。您把时间发给我。",
        "可以，我们约一次{step}，我会叫上我的团队。",
        "行，我愿意做一次{step}。您发几个时间给我选。",
    ),
    "agree_hard": ("行。{step}可以，发个时间给我。", "好，安排{step}吧，但要简短。"),
    "already_agreed": ("这个我们已经说好了，我等您的邀请。", "对，按说好的来，把细节发给我。"),
    "defer_open": ("在谈{step}之前，我还是有顾虑。{statement}", "我现在还没准备好做{step}。{statement}"),
    "defer_raise": ("别急。在答应任何事之前，{statement}", "在同意{step}之前，还有一个问题。{statement}"),
    "defer_questions": (
        "现在谈这个有点早。您还没怎么了解{company}的情况。",
        "我觉得您还不够了解我们的情况，现在谈{step}有点早。",
    ),
    "defer_turns": ("现在说这个还有点早，我们再聊聊吧。",),
    "nudge": ("那您建议下一步怎么做？", "好。那接下来怎么推进？"),
    "goodbye_agreed": ("好，到时候再聊。再见。", "好的，回头联系，再见。"),
    "goodbye": ("好吧。您可以把资料发给我看看。再见。", "好的，谢谢您的电话。再见。"),
    "end": ("不好意思，我得去参加另一个会了。", "我得赶去开下一个会了。"),
    "end_agreed": ("我们按约定的{step}再继续。再见。",),
    "end_open": ("您把要点发邮件给我，我看一下。再见。",),
    "after_end": ("我真的得走了。再见。",),
}

STEP_NAMES = {
    "en": {
        "demo": "a demo",
        "trial": "a trial",
        "pilot": "a pilot",
        "proposal": "a proposal",
        "meeting": "a meeting",
        "call": "a follow-up call",
        "send": "a follow-up",
        "generic": "a next step",
    },
    "zh": {
        "demo": "演示",
        "trial": "试用",
        "pilot": "试点",
        "proposal": "方案讲解",
        "meeting": "会议",
        "call": "电话沟通",
        "send": "跟进",
        "generic": "跟进",
    },
}


# --- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    name: str
    count: int = 0


_COUNTED = frozenset({"objections_handled", "asked_questions", "min_turns"})
_FLAGS = frozenset({"proposed_next_step", "no_open_objection"})


def parse_condition(text: str) -> Condition:
    """Parse one condition (``name`` or ``name:N``); raise ValueError on anything else."""
    name, _, number = text.strip().partition(":")
    name = name.strip().lower()
    if name in _FLAGS and not number:
        return Condition(name)
    if name in _COUNTED and number.strip().isdigit():
        return Condition(name, int(number))
    raise ValueError(f"unknown next-step condition {text!r}")


def parse_conditions(texts: Sequence[str], *, strict: bool = True) -> tuple[Condition, ...]:
    """Parse a brief's conditions; with strict=False, skip invalid ones (used during a live call)."""
    parsed = []
    for text in texts:
        try:
            parsed.append(parse_condition(text))
        except ValueError:
            if strict:
                raise
    return tuple(parsed)


# --- reading the trainee's turn ----------------------------------------------------------------


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"\byou're\b", "you are", text)
    text = re.sub(r"\bi'm\b", "i am", text)
    return re.sub(r"\s+", " ", text).strip()


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Latin phrases match at a word start (so "ai" is not found in "said", but "price" is
    found in "pricing"); Chinese phrases match anywhere."""
    phrase = _normalise(phrase)
    body = re.escape(phrase)
    if phrase[:1].isascii() and phrase[:1].isalnum():
        body = r"(?<![a-z0-9])" + body
    if len(phrase) <= 3 and phrase.isascii() and phrase.isalpha():
        body += r"(?![a-z])"  # short words ("hi", "bye", "poc") must be whole words
    return re.compile(body)


@functools.lru_cache(maxsize=4096)
def _pattern(phrase: str) -> re.Pattern[str]:
    return _phrase_pattern(phrase)


def _has(text: str, phrase: str) -> bool:
    return _pattern(phrase).search(text) is not None


def _has_any(text: str, phrases: Sequence[str]) -> bool:
    return any(_has(text, p) for p in phrases if p.strip())


# A greeting phrase standing on its own ("hi, how are you?"), not "how are you handling returns".
_SMALL_TALK = re.compile(
    r"(?<![a-z0-9])(?:" + "|".join(re.escape(p) for p in sorted(GREETING, key=len, reverse=True)) + ")"
    r"(?=\s*(?:[,.!?，。！？]|$|today|doing))"
)


def _is_question(sentence: str) -> bool:
    """A question by punctuation, by its opening words (ASR often drops the '?'), or by a
    Chinese question particle — looked at clause by clause once small talk ("hi margaret,
    how are you?") is removed, so a greeting is not taken for discovery."""
    for clause in re.split(r"[,，;；:：]", sentence):
        rest = _SMALL_TALK.sub(" ", clause).strip(" .。!！?？")
        if len(re.findall(r"[a-z0-9']+|[\u4e00-\u9fff]", rest)) < 2:
            continue
        if "?" in clause or "？" in clause or any(marker in rest for marker in QUESTION_MARKERS_ZH):
            return True
        if any(re.match(re.escape(opener) + r"(?![a-z])", rest) for opener in QUESTION_OPENERS):
            return True
    return False


@dataclass(frozen=True)
class Reading:
    """What a trainee turn does, as far as a buyer can tell from the words."""

    greeting: bool
    discovery_question: bool
    pitch: bool
    proposal: str | None  # the kind of next step proposed ("demo", "meeting", …), or None
    off_role: bool
    closing: bool
    triggered: tuple[str, ...]  # keys of objections whose triggers appear
    handling: dict[str, frozenset[str]]  # objection key -> handling phrases found


def read_turn(brief: ScenarioBrief, text: str) -> Reading:
    norm = _normalise(text)
    sentences = [s.strip() for s in split_sentences(norm, "zh") if s.strip()] or [norm]
    proposal = next((kind for phrase, kind in NEXT_STEP if _has(norm, phrase)), None)
    off_role = _has_any(norm, OFF_ROLE)
    question = any(_is_question(s) for s in sentences if not _has_any(s, [p for p, _ in NEXT_STEP]))
    pitch = _has_any(norm, PITCH)
    closing = _has_any(norm, CLOSING) or (
        _has_any(norm, SOFT_CLOSING) and not (question or pitch or proposal)
    )
    return Reading(
        greeting=_has_any(norm, GREETING),
        discovery_question=question and not off_role,
        pitch=pitch,
        proposal=proposal,
        off_role=off_role,
        closing=closing and not (question or proposal),
        triggered=tuple(o.key for o in brief.objections if _has_any(norm, o.triggers)),
        handling={
            o.key: frozenset(h for h in o.handling if h.strip() and _has(norm, h)) for o in brief.objections
        },
    )


# --- facts the buyer can talk about ------------------------------------------------------------


def _tokens(text: str) -> set[str]:
    """Content words (English) and character bigrams (Chinese), for matching a question to a fact."""
    norm = _normalise(text)
    words = {w.rstrip("s") for w in re.findall(r"[a-z][a-z'-]{3,}", norm) if w not in STOPWORDS}
    for run in re.findall(r"[\u4e00-\u9fff]+", norm):
        words.update(run[i : i + 2] for i in range(len(run) - 1))
    return words


@dataclass(frozen=True)
class _Fact:
    kind: str  # "bg" or "concern"
    text: str


def _facts(brief: ScenarioBrief) -> list[_Fact]:
    """Background sentences and concerns, in the order a buyer would bring them up."""
    lang = "zh" if _is_zh(brief) else "en"
    background = [s.strip() for s in split_sentences(brief.background, lang) if s.strip()]
    concerns = [c.strip() for c in brief.concerns if c.strip()]
    ordered = background[:1] + concerns + background[1:]
    return [_Fact("bg" if t in background else "concern", t) for t in ordered]


def _is_zh(brief: ScenarioBrief) -> bool:
    return brief.language.lower().startswith("zh")


# --- the conversation replay -------------------------------------------------------------------


@dataclass
class _Memory:
    raised: list[str] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)
    open: str | None = None
    progress: set[str] = field(default_factory=set)  # handling phrases heard for the open objection
    questions: int = 0
    off_role: int = 0
    turns: int = 0
    agreed: str | None = None  # kind of the agreed next step
    ended: bool = False
    nudged: bool = False
    used_facts: list[int] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)  # buying signals already said


class _Voice:
    """Picks wordings: deterministic per (seed, scenario, turn, slot)."""

    def __init__(self, brief: ScenarioBrief, seed: int, turn: int) -> None:
        self.brief = brief
        self.zh = _is_zh(brief)
        self.table = ZH if self.zh else EN
        self.hard = brief.difficulty.lower() == "hard"
        self.easy = brief.difficulty.lower() == "easy"
        self.seed = seed
        self.turn = turn

    def rng(self, slot: str) -> random.Random:
        return random.Random(f"{self.seed}|{self.brief.id}|{self.turn}|{slot}")

    def say(self, slot: str, **values: str) -> str:
        if self.hard and f"{slot}_hard" in self.table:
            slot = f"{slot}_hard"
        template = self.rng(slot).choice(self.table[slot])
        values = {
            "company": self.brief.company,
            "industry": self.brief.industry,
            "title": self.brief.persona_title,
            "name": self.brief.persona_name,
            **values,
        }
        for key, value in list(values.items()):
            values[key[:1].upper() + key[1:]] = _capitalise(value)
        return template.format(**values)

    def extra(self, slot: str, **values: str) -> str | None:
        """Volunteered extras: always for easy buyers, sometimes for medium, never for hard."""
        if self.hard:
            return None
        if self.easy or self.rng(f"extra-{slot}").random() < 0.5:
            return self.say(slot, **values)
        return None

    def step(self, kind: str | None) -> str:
        return STEP_NAMES["zh" if self.zh else "en"][kind or "generic"]

    def statement(self, objection: ObjectionBrief) -> str:
        return _terminated(objection.statement.strip(), self.zh)


_SUBJECTS = frozenset(
    {"i", "i'm", "we", "we're", "we've", "they", "there", "nobody", "everyone", "my", "our"}
)


def _is_sentence(text: str) -> bool:
    """A concern written as a sentence ("We overspent last year.") rather than a noun phrase."""
    words = text.split()
    return text[-1:] in ".!?" or (len(words) > 3 and words[0].lower() in _SUBJECTS)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _lower_first(text: str) -> str:
    """Lower-case a sentence's first letter for use inside a sentence, unless it is "I" or an acronym."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or (len(first) > 1 and first[1:2].isupper()):
        return text
    return text[:1].lower() + text[1:]


def _terminated(text: str, zh: bool) -> str:
    if not text or text[-1] in ".!?。！？":
        return text
    return text + ("。" if zh else ".")


class _Conversation:
    """Replays the trainee turns of a history; `step` is one trainee turn."""

    def __init__(self, brief: ScenarioBrief, seed: int) -> None:
        self.brief = brief
        self.seed = seed
        self.memory = _Memory()
        self.objections = {o.key: o for o in brief.objections}
        self.conditions = parse_conditions(brief.next_step_conditions, strict=False)
        self.facts = _facts(brief)
        self.hard = brief.difficulty.lower() == "hard"
        self.patience = OFF_ROLE_PATIENCE.get(brief.difficulty.lower(), 3)

    # -- conditions --

    def missing(self, *, proposing: bool) -> list[str]:
        """What stands between the buyer and a next step, most important first."""
        m = self.memory
        missing = []
        if m.open is not None:
            missing.append("no_open_objection")
        counts = {c.name: c.count for c in self.conditions if c.name in _COUNTED}
        # Order matters: the buyer names the first gap. Not knowing the buyer comes before
        # objections, because a buyer asked for a demo in the first minute says "you don't know us".
        if m.questions < counts.get("asked_questions", 0):
            missing.append("asked_questions")
        if "objections_handled" in counts:
            need = min(counts["objections_handled"] + (1 if self.hard else 0), len(self.brief.objections))
            if len(m.handled) < need:
                missing.append("objections_handled")
        if m.turns < counts.get("min_turns", 0):
            missing.append("min_turns")
        if not proposing:
            missing.append("proposed_next_step")
        return list(dict.fromkeys(missing))

    # -- building blocks --

    def unraised(self) -> list[ObjectionBrief]:
        return [o for o in self.brief.objections if o.key not in self.memory.raised]

    def raise_objection(self, objection: ObjectionBrief) -> None:
        self.memory.raised.append(objection.key)
        self.memory.open = objection.key
        self.memory.progress = set()

    def pick_fact(self, text: str) -> _Fact | None:
        """The fact that best matches the question; ties go to the next one not yet told."""
        if not self.facts:
            return None
        used = self.memory.used_facts
        if len(used) >= len(self.facts):
            used.clear()
        candidates = [i for i in range(len(self.facts)) if i not in used]
        asked = _tokens(text)
        best = max(candidates, key=lambda i: (len(asked & _tokens(self.facts[i].text)), -candidates.index(i)))
        used.append(best)
        return self.facts[best]

    def answer(self, voice: _Voice, text: str) -> list[str]:
        fact = self.pick_fact(text)
        if fact is None:
            return [voice.say("fallback")]
        if fact.kind == "bg":
            parts = [voice.say("answer_bg", fact=_terminated(fact.text, voice.zh))]
        elif voice.zh or not _is_sentence(fact.text):
            concern = fact.text.rstrip("。.!！") if voice.zh else _lower_first(fact.text.rstrip("."))
            parts = [voice.say("answer_concern", concern=concern)]
        else:
            sentence = _terminated(fact.text, voice.zh)
            parts = [
                voice.say("answer_concern_sentence", concern=sentence if voice.zh else _lower_first(sentence))
            ]
        extra = voice.extra("answer_extra")
        return parts + ([extra] if extra else [])

    def signal(self, voice: _Voice) -> str | None:
        """A buying signal the buyer has not said yet (a real buyer does not repeat them)."""
        signals = [s.strip() for s in self.brief.buying_signals if s.strip()]
        fresh = [s for s in signals if s not in self.memory.signals]
        if not fresh:
            return None
        chosen = fresh[voice.rng("signal").randrange(len(fresh))]
        self.memory.signals.append(chosen)
        return _terminated(chosen, voice.zh)

    def concern(self, voice: _Voice) -> str:
        concerns = [c.strip().rstrip(".。") for c in self.brief.concerns if c.strip()]
        if not concerns:
            return "这个问题" if voice.zh else "our situation"
        chosen = concerns[self.memory.turns % len(concerns)]
        return chosen if voice.zh else _lower_first(chosen)

    def ending(self, voice: _Voice) -> list[str]:
        self.memory.ended = True
        if self.memory.agreed:
            tail = voice.say("end_agreed", step=voice.step(self.memory.agreed))
        else:
            tail = voice.say("end_open")
        return [voice.say("end"), tail]

    # -- one trainee turn --

    def step(self, text: str) -> list[str]:
        m = self.memory
        m.turns += 1
        voice = _Voice(self.brief, self.seed, m.turns)
        final = self.brief.max_turns > 0 and m.turns >= self.brief.max_turns
        if m.ended:
            return [voice.say("after_end")]
        r = read_turn(self.brief, text)

        if r.off_role:
            m.off_role += 1
            if final:
                return self.ending(voice)
            if m.off_role >= self.patience:
                m.ended = True
                return [voice.say("give_up")]
            return [voice.say("off_role")]
        if r.discovery_question:
            m.questions += 1
        if r.closing:
            m.ended = True
            return [voice.say("goodbye_agreed" if m.agreed else "goodbye")]

        parts: list[str] = []
        signalled = False
        heard_handling = False
        # 1. Did the trainee answer the open objection?
        if m.open is not None:
            objection = self.objections[m.open]
            hits = r.handling.get(m.open, frozenset())
            heard_handling = bool(hits)
            m.progress |= hits
            need = 2 if self.hard and len(objection.handling) > 1 else 1
            if len(m.progress) >= need:
                m.handled.append(m.open)
                m.open = None
                parts.append(voice.say("ack"))
                everything_handled = len(m.handled) == len(self.brief.objections)
                warming = everything_handled or (not self.hard and voice.rng("sig").random() < 0.6)
                signal = self.signal(voice) if warming and not final else None
                if signal:
                    parts.append(signal)
                    signalled = True
            elif hits and not final and not r.proposal:
                return [voice.say("partial_hard", statement=voice.statement(objection))]

        # 2. A proposed next step: agree only when the conditions hold.
        if r.proposal:
            if m.agreed:
                parts.append(voice.say("already_agreed"))
            else:
                missing = self.missing(proposing=True)
                step = voice.step(r.proposal)
                if not missing:
                    m.agreed = r.proposal
                    parts.append(voice.say("agree", step=step))
                elif not final:
                    parts.append(self.defer(voice, missing[0], step))
            return parts + (self.ending(voice) if final else [])
        if final:
            return parts + self.ending(voice)

        # 3. Raise an objection: a trigger, or a pitch before any discovery.
        if m.open is None:
            triggered = [self.objections[k] for k in r.triggered if k not in m.raised]
            if triggered:
                self.raise_objection(triggered[0])
                slot = "raise_question" if r.discovery_question else "raise"
                return parts + [voice.say(slot, statement=voice.statement(triggered[0]))]
            if r.pitch and m.questions == 0:
                if self.unraised():
                    objection = self.unraised()[0]
                    self.raise_objection(objection)
                    return parts + [voice.say("pitch_early", statement=voice.statement(objection))]
                return parts + [voice.say("pitch_early_none")]

        # 4. An objection is still open and was not answered: stay sceptical.
        if m.open is not None and not heard_handling:
            objection = self.objections[m.open]
            if r.discovery_question:
                return self.answer(voice, text)[:1] + [voice.say("cautious")]
            return [voice.say("sceptical", statement=voice.statement(objection))]

        # 5. Otherwise talk: answer, react to the pitch, greet.
        if r.discovery_question:
            if r.greeting and m.turns == 1:
                parts.append(voice.say("greet_short"))
            parts += self.answer(voice, text)
        elif r.pitch:
            parts.append(voice.say("pitch", concern=self.concern(voice)))
        elif not parts and r.greeting:
            parts.append(voice.say("greeting_easy" if voice.easy else "greeting"))
        elif not parts:
            parts.append(voice.say("fallback"))

        # 6. Warming up: hint that a next step would be welcome, once.
        warmed_up = m.questions >= 1 and m.turns >= 2
        if (
            warmed_up
            and not m.agreed
            and not m.nudged
            and self.missing(proposing=False) == ["proposed_next_step"]
        ):
            m.nudged = True
            if not signalled:
                parts.append(self.signal(voice) or voice.say("nudge"))
        return parts

    def defer(self, voice: _Voice, missing: str, step: str) -> str:
        m = self.memory
        if missing == "no_open_objection" and m.open is not None:
            return voice.say("defer_open", step=step, statement=voice.statement(self.objections[m.open]))
        if missing == "objections_handled" and self.unraised():
            objection = self.unraised()[0]
            self.raise_objection(objection)
            statement = voice.statement(objection)
            return voice.say(
                "defer_raise", step=step, statement=statement, statement_lc=_lower_first(statement)
            )
        if missing == "asked_questions":
            return voice.say("defer_questions", step=step)
        return voice.say("defer_turns")

    def state(self) -> BrainState:
        m = self.memory
        return BrainState(
            raised=list(m.raised),
            handled=list(m.handled),
            next_step_agreed=m.agreed is not None,
            ended=m.ended,
            off_role_attempts=m.off_role,
            questions_asked=m.questions,
            open_objection=m.open,
            trainee_turns=m.turns,
            extra={"agreed_step": m.agreed} if m.agreed else {},
        )


def _replay(
    brief: ScenarioBrief, history: Sequence[Turn], seed: int
) -> tuple[_Conversation, list[str] | None]:
    conversation = _Conversation(brief, seed)
    reply: list[str] | None = None
    for turn in history:
        if turn.speaker == TRAINEE:
            reply = conversation.step(turn.text)
    return conversation, reply


class ScriptedBrain:
    """The offline buyer brain (see the module docstring for how it behaves)."""

    name = "scripted"

    def reply(self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0) -> str:
        """The whole reply as one string (handy for tests, logs and the text-only fallback)."""
        return "".join(self._chunks(brief, history, seed)).strip()

    async def stream_reply(
        self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0
    ) -> AsyncIterator[str]:
        for chunk in self._chunks(brief, history, seed):
            yield chunk
            await asyncio.sleep(0)  # let TTS start on this chunk before the next one is produced

    def state(self, brief: ScenarioBrief, history: Sequence[Turn]) -> BrainState:
        conversation, _ = _replay(brief, history, 0)
        return conversation.state()

    def _chunks(self, brief: ScenarioBrief, history: Sequence[Turn], seed: int) -> list[str]:
        zh = _is_zh(brief)
        conversation, parts = _replay(brief, history, seed)
        if parts is None:  # nobody has spoken yet (or only the buyer has): the opening line
            parts = [_terminated(brief.opening_line.strip(), zh) or ("喂，您好？" if zh else "Hello?")]
        text = ("" if zh else " ").join(p for p in parts if p)
        return split_sentences(text, "zh-CN" if zh else "en")
