"""Every sentence the browser scripts show, translated on the server and handed to them as JSON.

The scripts never carry their own English: they read ``strings[key]`` (placeholders are ``{name}``),
so one ``.po`` file translates the whole app and the page test can check that nothing is missing.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

STRINGS = {
    # call states
    "state_idle": _("Not started"),
    "state_connecting": _("Connecting…"),
    "state_listening": _("Listening: speak now"),
    "state_thinking": _("The buyer is thinking…"),
    "state_buyer": _("Buyer speaking"),
    "state_reconnecting": _("Reconnecting…"),
    "state_ended": _("Call ended"),
    "muted": _("Muted: the buyer cannot hear you"),
    "mute": _("Mute"),
    "unmute": _("Unmute"),
    # pre-call check
    "mic_checking": _("Asking the browser for your microphone…"),
    "mic_ok": _("Microphone works. Say something and watch the meter move."),
    "mic_denied": _(
        "Your browser blocked the microphone. Click the lock or camera icon in the address bar, allow the "
        "microphone, then press “Check microphone” again. You can still type your turns."
    ),
    "mic_missing": _("No microphone was found. Plug one in and press “Check microphone” again, or type your turns."),
    "mic_unsupported": _(
        "This browser cannot record audio on this page. Use a current Chrome, Edge or Firefox over https, "
        "or type your turns."
    ),
    "conn_testing": _("Testing the connection…"),
    "conn_ok": _("Connection works. You are ready to start."),
    "conn_fail": _("Cannot reach the server. Check your internet connection, then reload the page."),
    "conn_no_worker": _(
        "The voice engine is not running right now. You can still practise by typing; ask your admin to "
        "start the media worker."
    ),
    "conn_no_ws": _(
        "Your network blocks live connections (WebSockets). Try another network or ask IT to allow this site."
    ),
    # transports and failures
    "fallback_notice": _(
        "Your network blocked the direct audio connection, so the call switched to compatible mode. "
        "It works the same; replies may take a second longer."
    ),
    "forced_chunk": _("Compatible audio mode is on for this call (audio is uploaded in short pieces)."),
    "reconnecting": _("Connection lost. Reconnecting in {seconds} s (attempt {attempt} of {max})…"),
    "reconnected": _("Reconnected. Your call continues where it stopped."),
    "reconnect_failed": _(
        "We could not reconnect. What you said so far is saved. Press “Start call” to try again, or “End call” "
        "to see your results."
    ),
    "session_gone": _("This call can no longer be resumed. Go back to the scenario list and start a new call."),
    "rate_limit": _("Too many messages at once. Wait {seconds} s, then try again."),
    "lines_busy": _("All lines are busy: every practice line on this server is in a call. Try again in {seconds} s."),
    "asr_failed": _("We could not make out what you said. Say it again a little closer to the microphone, or type it."),
    "tts_failed": _("The buyer's voice could not be played. Read the reply in the transcript and carry on."),
    "webrtc_failed": _("The direct audio connection failed."),
    "no_socketio": _("Compatible mode could not load. Reload the page; if it keeps failing, type your turns."),
    "recorder_unsupported": _(
        "This browser cannot record audio in compatible mode. Use a current Chrome, Edge or Firefox, or type "
        "your turns."
    ),
    "generic_error": _("Something went wrong ({detail}). Try again; if it keeps happening, reload the page."),
    "audio_blocked": _("Your browser paused the buyer's voice. Click anywhere on the page to hear it."),
    "ended_opening_results": _("The call has ended. Opening your results…"),
    "typed_needs_connection": _("Start the call first, then type your turn."),
    "max_turns": _("You reached the turn limit for this scenario."),
    # transcript
    "you": _("You"),
    "buyer": _("Buyer"),
    "typed": _("typed"),
    "turn_of": _("Turn {n} of {max}"),
    # results and review
    "processing": _("Scoring your call… {percent}%"),
    "processing_queued": _(
        "Your call is waiting to be scored. You can leave this page: the score will appear in your history."
    ),
    "processing_failed": _("Scoring failed. Your transcript is saved; a manager can still review the call."),
    "comment_saved": _("Comment saved. The trainee will see it on their copy of this session."),
    "comment_failed": _("The comment was not saved: {detail}. Check your connection and try again."),
    "override_saved": _("Scores saved."),
    "override_failed": _("The scores were not saved: {detail}. Use numbers from 0 to 100."),
    "score": _("Score"),
    "trainee_lane": _("Trainee"),
    "buyer_lane": _("Buyer"),
    "seconds_short": _("{n} s"),
    "top_range": _("top performers"),
    "you_marker": _("you"),
}


def js_strings() -> dict[str, str]:
    return {key: str(value) for key, value in STRINGS.items()}
