"""Every Prometheus metric of the media pipeline, defined once so any module can import them.

All live in prometheus_client's default registry, which ``/metrics`` exports. Labels are kept
to small fixed sets (engine kind, engine name, loop name): never a call or session id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Turn-taking latencies: from ~20 ms (endpointing step) to a few seconds (a slow cloud engine).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
TASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)

# --- engine executor (label kind: asr / tts / vad / brain ...) ---------------------------------
ENGINE_QUEUE_DEPTH = Gauge(
    "lingecho_engine_queue_depth", "Engine tasks admitted but not yet started", ["kind"]
)
ENGINE_IN_FLIGHT = Gauge("lingecho_engine_in_flight", "Engine tasks running now", ["kind"])
ENGINE_TASK_SECONDS = Histogram(
    "lingecho_engine_task_seconds", "Time an engine task ran on a worker thread", ["kind"],
    buckets=TASK_BUCKETS,
)
ENGINE_QUEUE_WAIT_SECONDS = Histogram(
    "lingecho_engine_queue_wait_seconds", "Time an engine task waited for a worker thread", ["kind"],
    buckets=TASK_BUCKETS,
)
ENGINE_REJECTED_TOTAL = Counter(
    "lingecho_engine_rejected_total", "Engine tasks refused because the queue was full", ["kind"]
)
ENGINE_FAILED_TOTAL = Counter(
    "lingecho_engine_failed_total", "Engine tasks that raised", ["kind"]
)

# --- event loop ------------------------------------------------------------------------------
EVENT_LOOP_LAG_SECONDS = Gauge(
    "lingecho_event_loop_lag_seconds", "Latest lateness of a timer on the event loop", ["loop"]
)
EVENT_LOOP_LAG_HIST = Histogram(
    "lingecho_event_loop_lag_hist_seconds", "Lateness of event-loop timers", ["loop"], buckets=LAG_BUCKETS
)

# --- turn latencies (observe in seconds) -----------------------------------------------------
ENDPOINTING_DELAY_SECONDS = Histogram(
    "lingecho_endpointing_delay_seconds", "End of user speech to the VAD deciding the turn is over",
    buckets=LATENCY_BUCKETS,
)
ASR_FINAL_LATENCY_SECONDS = Histogram(
    "lingecho_asr_final_latency_seconds", "Turn end decided to final transcript available", ["engine"],
    buckets=LATENCY_BUCKETS,
)
BRAIN_FIRST_TOKEN_SECONDS = Histogram(
    "lingecho_brain_first_token_seconds", "Brain request to its first reply token", ["engine"],
    buckets=LATENCY_BUCKETS,
)
TTS_FIRST_AUDIO_SECONDS = Histogram(
    "lingecho_tts_first_audio_seconds", "TTS request to its first audio chunk", ["engine"],
    buckets=LATENCY_BUCKETS,
)
# End of turn (media_pipeline.turns): one Smart Turn inference (~0.1-0.2 s on one core here), and
# what was decided: at each question complete/incomplete, and incomplete pauses that ran out.
TURN_DETECTOR_SECONDS = Histogram(
    "lingecho_turn_detector_seconds", "One end-of-turn model inference (features + model)",
    buckets=TASK_BUCKETS,
)
TURN_DECISIONS_TOTAL = Counter(
    "lingecho_turn_decisions_total",
    "End-of-turn decisions: complete / incomplete at a pause, patience_expired when an incomplete pause ran out",
    ["decision"],
)
# One turn is one turn (media_pipeline.joining): replies withdrawn because the trainee went on within
# the grace window, and backchannels heard while the buyer spoke (no turn, no interruption).
TURN_YIELDS = Counter("lingecho_turn_yields_total", "Buyer replies withdrawn: the trainee went on within the grace")
BACKCHANNELS = Counter("lingecho_backchannels_total", "Backchannels heard over the buyer (not turns, not barge-ins)")
TURN_LATENCY_SECONDS = Histogram(
    "lingecho_turn_latency_seconds", "End of user speech to the first reply audio sent (end to end)",
    buckets=LATENCY_BUCKETS,
)

# --- calls and outbound audio ----------------------------------------------------------------
OUTBOUND_UNDERRUNS_TOTAL = Counter(
    "lingecho_outbound_underruns_total", "Outbound 20 ms frames sent as silence because TTS audio was late"
)
ACTIVE_CALLS = Gauge("lingecho_active_calls", "Calls with a live media pipeline in this process")
PEER_CONNECTIONS = Gauge("lingecho_peer_connections", "aiortc peer connections of this process not yet closed")
CALLS_LIMIT = Gauge(
    "lingecho_calls_limit", "WebRTC calls this worker takes (MAX_CALLS_PER_WORKER, or sized to the host; 0 = no limit)"
)
CALLS_REFUSED_TOTAL = Counter(
    "lingecho_calls_refused_total", "Offers refused at capacity (MAX_CALLS_PER_WORKER; all lines busy)"
)
CALLS_PASSED_ON_TOTAL = Counter(
    "lingecho_calls_passed_on_total", "Offers a full worker passed to a worker with room"
)
CALLS_BALANCED_TOTAL = Counter(
    "lingecho_calls_balanced_total", "New offers a worker passed to a live worker holding fewer calls"
)
OFFERS_DUPLICATED_TOTAL = Counter(
    "lingecho_offers_duplicated_total", "Offers delivered to a second worker after another had taken them (dropped)"
)
INTERIMS_SKIPPED_TOTAL = Counter(
    "lingecho_interims_skipped_total", "Interim decodes skipped: ASR busy or interim budget spent"
)
SPECULATIVE_FINALS_TOTAL = Counter(
    "lingecho_speculative_finals_total",
    "Pauses inside a WebRTC turn, by what became of the final decode started when each began: used (the "
    "pause ended the turn) or stale (speech resumed: a decode thrown away)",
    ["outcome"],
)
VAD_HOPS_TOTAL = Counter(
    "lingecho_vad_hops_total",
    "WebRTC 32 ms hops by how they were scored: scored (on the VAD thread) or idle (a quiet line "
    "between turns, under the VAD's level gate: scored 0 on the event loop, no model run)",
    ["how"],
)
ASR_BATCH_SIZE = Histogram(
    "lingecho_asr_batch_size", "Live ASR decodes run together in one batch (1: alone, as with a free thread)",
    buckets=(1, 2, 3, 4, 6, 8),
)
