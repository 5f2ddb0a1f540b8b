"""REST API: one class per operation with its own input/output serializers (HackSoft style)."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from roleplay import selectors, services
from roleplay.models import RealtimeSession, Scenario, SessionAnalytics


class ObjectionOut(serializers.Serializer):
    order = serializers.IntegerField()
    statement = serializers.CharField()


class CriterionOut(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    weight = serializers.FloatField()
    kind = serializers.CharField()


class ScenarioOut(serializers.ModelSerializer):
    goals = serializers.ListField(source="goal_list", child=serializers.CharField())
    concerns = serializers.ListField(source="concern_list", child=serializers.CharField())

    class Meta:
        model = Scenario
        fields = [
            "id",
            "slug",
            "title",
            "summary",
            "language",
            "difficulty",
            "persona_name",
            "persona_title",
            "company",
            "industry",
            "personality",
            "concerns",
            "opening_line",
            "voice",
            "avatar_image",
            "avatar_video",
            "goals",
            "max_turns",
            "time_limit_seconds",
        ]


class ScenarioDetailOut(ScenarioOut):
    objections = ObjectionOut(many=True)
    rubric = CriterionOut(many=True)

    class Meta(ScenarioOut.Meta):
        fields = [*ScenarioOut.Meta.fields, "background", "objections", "rubric"]


class ScenarioListApi(APIView):
    @extend_schema(responses=ScenarioOut(many=True))
    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.scenario_list(), request, view=self)
        return paginator.get_paginated_response(ScenarioOut(page, many=True, context={"request": request}).data)


class ScenarioDetailApi(APIView):
    @extend_schema(responses=ScenarioDetailOut)
    def get(self, request, scenario_id: int):
        scenario = selectors.scenario_get(scenario_id=scenario_id)
        return Response(ScenarioDetailOut(scenario, context={"request": request}).data)


class UtteranceOut(serializers.Serializer):
    seq = serializers.IntegerField()
    speaker = serializers.CharField()
    source = serializers.CharField()
    text = serializers.CharField()
    language = serializers.CharField()
    start_ms = serializers.IntegerField()
    end_ms = serializers.IntegerField()
    confidence = serializers.FloatField(allow_null=True)
    interim_count = serializers.IntegerField()
    interrupted = serializers.BooleanField()
    endpointing_ms = serializers.FloatField(allow_null=True)
    asr_final_ms = serializers.FloatField(allow_null=True)
    brain_first_token_ms = serializers.FloatField(allow_null=True)
    tts_first_audio_ms = serializers.FloatField(allow_null=True)
    turn_latency_ms = serializers.FloatField(allow_null=True)
    turn_end = serializers.JSONField()


class AnalyticsOut(serializers.Serializer):
    metrics = serializers.JSONField()
    rubric = serializers.JSONField()
    total_score = serializers.FloatField(allow_null=True)
    override_rubric = serializers.JSONField()
    override_total = serializers.FloatField(allow_null=True)
    effective_total = serializers.FloatField(allow_null=True)
    retranscript = serializers.JSONField()


class CommentOut(serializers.Serializer):
    id = serializers.IntegerField()
    author = serializers.CharField(source="author.username")
    offset_ms = serializers.IntegerField()
    text = serializers.CharField()
    created_at = serializers.DateTimeField()


def _analytics_of(session: RealtimeSession) -> SessionAnalytics | None:
    try:
        return session.analytics
    except SessionAnalytics.DoesNotExist:
        return None


class SessionOut(serializers.Serializer):
    id = serializers.CharField()
    trainee = serializers.CharField(source="trainee.username")
    scenario = serializers.IntegerField(source="scenario_id")
    scenario_title = serializers.CharField(source="scenario.title")
    transport = serializers.CharField()
    state = serializers.CharField()
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.CharField()
    turn_count = serializers.IntegerField()
    duration_seconds = serializers.FloatField(allow_null=True)
    processing = serializers.CharField()
    processing_progress = serializers.IntegerField()
    score = serializers.SerializerMethodField()

    def get_score(self, obj: RealtimeSession) -> float | None:
        analytics = _analytics_of(obj)
        return analytics.effective_total if analytics else None


class SessionDetailOut(SessionOut):
    audio_metadata = serializers.JSONField()
    recording = serializers.SerializerMethodField()
    utterances = serializers.SerializerMethodField()
    analytics = serializers.SerializerMethodField()
    comments = CommentOut(many=True)

    def get_recording(self, obj: RealtimeSession) -> str | None:
        return f"/review/{obj.pk}/recording/" if obj.recording else None

    def get_utterances(self, obj: RealtimeSession) -> list[dict]:
        return UtteranceOut(selectors.session_utterances(session=obj), many=True).data

    def get_analytics(self, obj: RealtimeSession) -> dict | None:
        analytics = _analytics_of(obj)
        return AnalyticsOut(analytics).data if analytics else None


class SessionListApi(APIView):
    class FilterIn(serializers.Serializer):
        trainee = serializers.CharField(required=False)
        scenario = serializers.IntegerField(required=False)
        state = serializers.ChoiceField(choices=RealtimeSession.State.choices, required=False)
        since = serializers.DateField(required=False)
        until = serializers.DateField(required=False)

    class CreateIn(serializers.Serializer):
        scenario = serializers.IntegerField()
        transport = serializers.ChoiceField(choices=RealtimeSession.Transport.choices, default="text")

    @extend_schema(
        parameters=[
            OpenApiParameter("trainee", str),
            OpenApiParameter("scenario", int),
            OpenApiParameter("state", str),
            OpenApiParameter("since", str, description="YYYY-MM-DD"),
            OpenApiParameter("until", str),
        ],
        responses=SessionOut(many=True),
    )
    def get(self, request):
        filters = self.FilterIn(data=request.query_params)
        filters.is_valid(raise_exception=True)
        data = dict(filters.validated_data)
        qs = selectors.session_list(user=request.user, **_date_bounds(data))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(SessionOut(page, many=True).data)

    @extend_schema(request=CreateIn, responses={201: SessionOut})
    def post(self, request):
        payload = self.CreateIn(data=request.data)
        payload.is_valid(raise_exception=True)
        scenario = selectors.scenario_get(scenario_id=payload.validated_data["scenario"])
        session = services.session_create(  # joined when a socket attaches with ?session=
            trainee=request.user, scenario=scenario, transport=payload.validated_data["transport"], joined=False
        )
        return Response(SessionOut(session).data, status=status.HTTP_201_CREATED)


def _date_bounds(data: dict) -> dict:
    out = {k: v for k, v in data.items() if k not in ("since", "until")}
    if data.get("since"):
        out["since"] = timezone.make_aware(datetime.combine(data["since"], time.min))
    if data.get("until"):
        out["until"] = timezone.make_aware(datetime.combine(data["until"] + timedelta(days=1), time.min))
    return out


class SessionDetailApi(APIView):
    @extend_schema(responses=SessionDetailOut)
    def get(self, request, session_id: str):
        session = selectors.session_get(user=request.user, session_id=session_id)
        return Response(SessionDetailOut(session).data)


class CommentCreateApi(APIView):
    class CreateIn(serializers.Serializer):
        offset_ms = serializers.IntegerField(min_value=0)
        text = serializers.CharField(max_length=4000)

    @extend_schema(request=CreateIn, responses={201: CommentOut})
    def post(self, request, session_id: str):
        payload = self.CreateIn(data=request.data)
        payload.is_valid(raise_exception=True)
        session = selectors.session_get(user=request.user, session_id=session_id)
        comment = services.comment_create(author=request.user, session=session, **payload.validated_data)
        return Response(CommentOut(comment).data, status=status.HTTP_201_CREATED)


class ScoreOverrideApi(APIView):
    class OverrideIn(serializers.Serializer):
        scores = serializers.DictField(child=serializers.FloatField(min_value=0, max_value=100), required=False)
        total = serializers.FloatField(min_value=0, max_value=100, allow_null=True, required=False)

    @extend_schema(request=OverrideIn, responses=AnalyticsOut)
    def post(self, request, session_id: str):
        payload = self.OverrideIn(data=request.data)
        payload.is_valid(raise_exception=True)
        session = selectors.session_get(user=request.user, session_id=session_id)
        analytics = services.analytics_override(
            manager=request.user,
            session=session,
            scores=payload.validated_data.get("scores", {}),
            total=payload.validated_data.get("total"),
        )
        return Response(AnalyticsOut(analytics).data)
