"""The domain: people, teams, scenarios with their buyer persona, live sessions and their record.

Business rules live in ``roleplay.services`` (writes) and ``roleplay.selectors`` (reads); models
only hold data and tiny derived properties.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


def new_session_id() -> str:
    """128 bits of randomness: a session id doubles as a capability in URLs, so it must be unguessable."""
    return "sess_" + secrets.token_urlsafe(16)


def split_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_phrases(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").replace("，", ",").split(",") if part.strip()]


class User(AbstractUser):
    class Role(models.TextChoices):
        TRAINEE = "trainee", _("Trainee")
        MANAGER = "manager", _("Manager")
        ADMIN = "admin", _("Admin")

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.TRAINEE)
    preferred_language = models.CharField(max_length=16, default="en", blank=True)

    @property
    def is_admin_role(self) -> bool:
        return self.role == self.Role.ADMIN or self.is_superuser

    @property
    def is_manager_role(self) -> bool:
        return self.role == self.Role.MANAGER


class Team(models.Model):
    name = models.CharField(max_length=120, unique=True)
    managers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="managed_teams", blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="teams", blank=True)

    def __str__(self) -> str:
        return self.name


class Scenario(models.Model):
    class Difficulty(models.TextChoices):
        EASY = "easy", _("Easy")
        MEDIUM = "medium", _("Medium")
        HARD = "hard", _("Hard")

    class Language(models.TextChoices):
        EN = "en", "English"
        ZH_CN = "zh-CN", "简体中文"

    slug = models.SlugField(max_length=80, unique=True)
    title = models.CharField(max_length=160)
    summary = models.TextField(blank=True, help_text="What the trainee is told before the call.")
    language = models.CharField(max_length=8, choices=Language.choices, default=Language.EN)
    difficulty = models.CharField(max_length=8, choices=Difficulty.choices, default=Difficulty.MEDIUM)
    is_active = models.BooleanField(default=True)

    persona_name = models.CharField(max_length=120)
    persona_title = models.CharField(max_length=120)
    company = models.CharField(max_length=160)
    industry = models.CharField(max_length=120)
    personality = models.TextField(help_text="How the buyer behaves: tone, patience, style.")
    background = models.TextField(help_text="What the buyer knows and what their situation is.")
    concerns = models.TextField(blank=True, help_text="One concern per line.")
    opening_line = models.TextField()
    voice = models.CharField(
        max_length=64, blank=True, help_text="TTS voice, e.g. en-us+m3 or cmn. Empty = language default."
    )
    avatar_image = models.FileField(upload_to="avatars/", blank=True)
    avatar_video = models.FileField(upload_to="avatars/", blank=True)

    goals = models.TextField(blank=True, help_text="The trainee's goals, one per line. Never shown to the buyer.")
    buying_signals = models.TextField(blank=True, help_text="Things the buyer may say when warming up, one per line.")
    next_step_conditions = models.TextField(
        blank=True,
        help_text="One per line: objections_handled:N, asked_questions:N, proposed_next_step.",
    )
    asr_engine = models.CharField(max_length=40, blank=True, help_text="Override the ASR engine; empty = settings.")
    tts_engine = models.CharField(max_length=40, blank=True, help_text="Override the TTS engine; empty = settings.")
    brain_engine = models.CharField(max_length=40, blank=True, help_text="Override the buyer brain; empty = settings.")
    max_turns = models.PositiveIntegerField(default=12)
    time_limit_seconds = models.PositiveIntegerField(default=900)
    turn_patience_ms = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(300), MaxValueValidator(10000)],
        help_text="Longest pause inside a trainee's turn before it ends anyway (ms); empty = TURN_PATIENCE_MS. "
                  "Longer for a pitch rehearsal, shorter for a brisk cold call.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]

    def __str__(self) -> str:
        return self.title

    @property
    def concern_list(self) -> list[str]:
        return split_lines(self.concerns)

    @property
    def goal_list(self) -> list[str]:
        return split_lines(self.goals)


class Objection(models.Model):
    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="objections")
    order = models.PositiveIntegerField(default=0)
    statement = models.TextField(help_text="What the buyer says.")
    triggers = models.TextField(help_text="Comma-separated words or phrases from the trainee that provoke it.")
    handling = models.TextField(help_text="Comma-separated words or phrases that count as handling it.")

    class Meta:
        ordering = ["scenario", "order", "id"]

    def __str__(self) -> str:
        return self.statement[:60]


class RubricCriterion(models.Model):
    class Kind(models.TextChoices):
        TALK_RATIO = "talk_ratio", _("Talk ratio")
        QUESTIONS = "questions", _("Questions asked")
        OBJECTION_HANDLING = "objection_handling", _("Objection handling")
        NEXT_STEP = "next_step", _("Next step secured")
        DISCOVERY = "discovery", _("Discovery before pitch")
        FILLERS = "fillers", _("Filler words")
        LISTENING = "listening", _("Listening")
        KEYWORDS = "keywords", _("Keyword coverage")

    scenario = models.ForeignKey(Scenario, on_delete=models.CASCADE, related_name="rubric")
    order = models.PositiveIntegerField(default=0)
    key = models.SlugField(max_length=60)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    weight = models.FloatField(default=1.0)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    params = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["scenario", "order", "id"]
        constraints = [models.UniqueConstraint(fields=["scenario", "key"], name="unique_criterion_key")]

    def __str__(self) -> str:
        return self.name


class RealtimeSession(models.Model):
    class Transport(models.TextChoices):
        WEBRTC = "webrtc", "WebRTC"
        CHUNK = "chunk", _("Audio chunks")
        TEXT = "text", _("Text")

    class State(models.TextChoices):
        LIVE = "live", _("Live")
        DROPPED = "dropped", _("Dropped (resumable)")
        ENDED = "ended", _("Ended")

    class EndReason(models.TextChoices):
        USER_REQUESTED = "user_requested", _("Ended by trainee")
        TIMEOUT = "timeout", _("Timed out")
        ERROR = "error", _("Error")
        MAX_TURNS = "max_turns", _("Turn limit reached")
        TIME_LIMIT = "time_limit", _("Time limit reached")
        BUYER_ENDED = "buyer_ended", _("Ended by the buyer")
        DROPPED = "dropped", _("Connection lost")
        ABANDONED = "abandoned", _("Never joined")
        SERVER_SHUTDOWN = "server_shutdown", _("Server shut down")

    class Processing(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("Processing")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    id = models.CharField(primary_key=True, max_length=40, default=new_session_id, editable=False)
    trainee = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sessions")
    scenario = models.ForeignKey(Scenario, on_delete=models.PROTECT, related_name="sessions")
    transport = models.CharField(max_length=8, choices=Transport.choices, default=Transport.TEXT)
    state = models.CharField(max_length=8, choices=State.choices, default=State.LIVE, db_index=True)
    started_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    turn_count = models.PositiveIntegerField(default=0)
    seed = models.PositiveIntegerField(default=0)
    audio_metadata = models.JSONField(default=dict, blank=True)
    recording = models.FileField(upload_to="recordings/", blank=True)
    # Lifecycle (roleplay/lifecycle.py): a session created over REST is not joined until a socket
    # attaches (``joined_at``); ``owner`` is the server process holding its socket, which publishes a
    # heartbeat, so a session whose process died can be told from one whose trainee is just quiet.
    joined_at = models.DateTimeField(null=True, blank=True)
    owner = models.CharField(max_length=100, blank=True)
    processing = models.CharField(
        max_length=8, choices=Processing.choices, default=Processing.PENDING, db_index=True
    )
    # A run marked RUNNING holds this lease and renews it at every step; a lease that ran out means
    # its worker died, and the sweeper dispatches the job again.
    processing_lease_until = models.DateTimeField(null=True, blank=True)
    processing_progress = models.PositiveSmallIntegerField(default=0)
    processing_detail = models.CharField(max_length=200, blank=True)
    archive_prefix = models.CharField(max_length=200, blank=True)
    # The recording arrives after the session ends (the media worker stores it once the peer is
    # closed), so after-call processing may already have run. Every attached recording bumps
    # ``recording_version``; processing remembers the version it archived, and a newer one is
    # processed again. ``recording_saving_since`` is set while a recording is being written, so
    # processing never deletes a raw WAV that is being replaced under it.
    recording_version = models.PositiveIntegerField(default=0)
    processed_recording_version = models.PositiveIntegerField(default=0)
    recording_saving_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return self.id

    @property
    def duration_seconds(self) -> float | None:
        if self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


class Utterance(models.Model):
    class Speaker(models.TextChoices):
        TRAINEE = "trainee", _("Trainee")
        BUYER = "buyer", _("Buyer")

    class Source(models.TextChoices):
        VOICE = "voice", _("Voice")
        TEXT = "text", _("Typed")

    session = models.ForeignKey(RealtimeSession, on_delete=models.CASCADE, related_name="utterances")
    seq = models.PositiveIntegerField()
    speaker = models.CharField(max_length=8, choices=Speaker.choices)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.VOICE)
    text = models.TextField()
    language = models.CharField(max_length=8, blank=True)
    start_ms = models.PositiveIntegerField(default=0, help_text="Milliseconds since the session started.")
    end_ms = models.PositiveIntegerField(default=0)
    confidence = models.FloatField(null=True, blank=True)
    interim_count = models.PositiveIntegerField(default=0)
    interrupted = models.BooleanField(default=False, help_text="A buyer reply cut short by barge-in.")
    endpointing_ms = models.FloatField(null=True, blank=True)
    asr_final_ms = models.FloatField(null=True, blank=True)
    brain_first_token_ms = models.FloatField(null=True, blank=True)
    tts_first_audio_ms = models.FloatField(null=True, blank=True)
    turn_latency_ms = models.FloatField(null=True, blank=True)
    turn_end = models.JSONField(
        default=dict, blank=True,
        help_text="How the end of a spoken trainee turn was decided: detector, decision (complete / "
                  "patience_expired / stream_end), probability, inference_ms, waited_ms, cue.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="unique_utterance_seq")]

    def __str__(self) -> str:
        return f"{self.speaker}: {self.text[:40]}"


class SessionAnalytics(models.Model):
    session = models.OneToOneField(RealtimeSession, on_delete=models.CASCADE, related_name="analytics")
    metrics = models.JSONField(default=dict)
    rubric = models.JSONField(default=list, help_text="Per-criterion scores with evidence.")
    total_score = models.FloatField(null=True, blank=True)
    override_rubric = models.JSONField(default=dict, blank=True, help_text="criterion key -> manager score.")
    override_total = models.FloatField(null=True, blank=True)
    overridden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    retranscript = models.JSONField(default=dict, blank=True)
    computed_at = models.DateTimeField(auto_now=True)

    @property
    def effective_total(self) -> float | None:
        return self.override_total if self.override_total is not None else self.total_score


class ReviewComment(models.Model):
    session = models.ForeignKey(RealtimeSession, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    offset_ms = models.PositiveIntegerField(default=0)
    text = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "offset_ms", "id"]
