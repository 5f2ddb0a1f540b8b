"""Django admin: where admins author scenarios and look at sessions (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.html import format_html, format_html_join

from roleplay.models import (
    Objection,
    RealtimeSession,
    ReviewComment,
    RubricCriterion,
    Scenario,
    SessionAnalytics,
    Team,
    User,
    Utterance,
)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    fieldsets = (*BaseUserAdmin.fieldsets, ("LingEcho", {"fields": ("role", "preferred_language")}))
    add_fieldsets = (*BaseUserAdmin.add_fieldsets, ("LingEcho", {"fields": ("role",)}))
    list_display = ("username", "email", "role", "is_active", "last_login")
    list_filter = ("role", "is_active", "teams")


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ("name", "manager_names", "member_count")
    search_fields = ("name", "members__username")
    filter_horizontal = ("managers", "members")

    @admin.display(description="Managers")
    def manager_names(self, obj: Team) -> str:
        return ", ".join(m.username for m in obj.managers.all())

    @admin.display(description="Members")
    def member_count(self, obj: Team) -> int:
        return obj.members.count()


class ObjectionInline(admin.StackedInline):
    model = Objection
    extra = 1
    fields = ("order", "statement", "triggers", "handling")


class RubricInline(admin.TabularInline):
    model = RubricCriterion
    extra = 1
    fields = ("order", "key", "name", "kind", "weight", "params", "description")


@admin.register(Scenario)
class ScenarioAdmin(admin.ModelAdmin):
    list_display = ("title", "persona_name", "persona_title", "language", "difficulty", "max_turns", "is_active")
    list_filter = ("language", "difficulty", "is_active", "industry")
    list_editable = ("is_active",)
    search_fields = ("title", "persona_name", "company", "industry", "summary")
    prepopulated_fields = {"slug": ("title",)}
    inlines = [ObjectionInline, RubricInline]
    save_on_top = True
    fieldsets = (
        (None, {"fields": ("title", "slug", "summary", "language", "difficulty", "is_active")}),
        (
            "Buyer persona",
            {
                "fields": (
                    ("persona_name", "persona_title"),
                    ("company", "industry"),
                    "personality",
                    "background",
                    "concerns",
                    "opening_line",
                    "voice",
                    ("avatar_image", "avatar_video"),
                )
            },
        ),
        ("Trainee goals and closing rules", {"fields": ("goals", "buying_signals", "next_step_conditions")}),
        ("Limits", {"fields": (("max_turns", "time_limit_seconds"), "turn_patience_ms")}),
        ("Engines (optional overrides)", {"fields": (("asr_engine", "tts_engine", "brain_engine"),)}),
    )


class UtteranceInline(admin.TabularInline):
    model = Utterance
    extra = 0
    can_delete = False
    fields = ("seq", "speaker", "source", "text", "start_ms", "end_ms", "confidence", "turn_latency_ms", "interrupted")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class CommentInline(admin.TabularInline):
    model = ReviewComment
    extra = 0
    fields = ("author", "offset_ms", "text", "created_at")
    readonly_fields = ("created_at",)


@admin.register(RealtimeSession)
class RealtimeSessionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "trainee",
        "scenario",
        "transport",
        "state",
        "turn_count",
        "started_at",
        "end_reason",
        "processing",
    )
    list_filter = ("state", "transport", "end_reason", "processing", "scenario", "started_at")
    search_fields = ("id", "trainee__username", "scenario__title", "utterances__text")
    date_hierarchy = "started_at"
    inlines = [UtteranceInline, CommentInline]
    readonly_fields = (
        "id",
        "trainee",
        "scenario",
        "transport",
        "state",
        "started_at",
        "last_seen_at",
        "ended_at",
        "end_reason",
        "turn_count",
        "seed",
        "audio_metadata",
        "recording",
        "processing",
        "processing_progress",
        "processing_detail",
        "archive_prefix",
        "transcript",
    )
    fields = readonly_fields

    @admin.display(description="Transcript")
    def transcript(self, obj: RealtimeSession) -> str:
        rows = format_html_join(
            "\n",
            "<p><strong>{}</strong> <small>{} ms</small><br>{}</p>",
            ((u.get_speaker_display(), u.start_ms, u.text) for u in obj.utterances.order_by("seq")),
        )
        return format_html('<div style="max-width:60em">{}</div>', rows) if rows else "—"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SessionAnalytics)
class SessionAnalyticsAdmin(admin.ModelAdmin):
    list_display = ("session", "total_score", "override_total", "computed_at")
    readonly_fields = ("session", "metrics", "rubric", "total_score", "retranscript", "computed_at")
