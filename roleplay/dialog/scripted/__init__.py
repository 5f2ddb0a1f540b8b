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
- it agrees to a next step only when the scenario's next-step conditions are met
  (`conditions`), and otherwise defers naming what is missing (an open worry, a new objection,
  too few questions);
- it ends the call politely at `max_turns` trainee turns or when the trainee says goodbye.

Difficulty sets patience: easy buyers are chatty and tolerate four off-role attempts, medium
three, hard two; hard buyers answer in one short sentence, never volunteer extras and need
more handled objections.

The rooms: `phrasebook` reads the words per language from `phrases/<language>.toml` (edited by
translators), `reading` tells what a trainee turn does, `wording` picks and fills in the
buyer's words, `conversation` is the state machine replayed over the history, `brain` is the
`BuyerBrain` the pipeline talks to.
"""

from roleplay.dialog.scripted.brain import ScriptedBrain
from roleplay.dialog.scripted.conditions import parse_conditions

__all__ = ["ScriptedBrain", "parse_conditions"]
