from django.urls import path
from rest_framework_simplejwt.views import TokenRefreshView

from roleplay.api import views
from roleplay.api.auth import TokenObtainApi

urlpatterns = [
    path("auth/token/", TokenObtainApi.as_view(), name="token_obtain"),
    path("auth/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    path("scenarios/", views.ScenarioListApi.as_view(), name="scenario_list"),
    path("scenarios/<int:scenario_id>/", views.ScenarioDetailApi.as_view(), name="scenario_detail"),
    path("sessions/", views.SessionListApi.as_view(), name="session_list"),
    path("sessions/<str:session_id>/", views.SessionDetailApi.as_view(), name="session_detail"),
    path("sessions/<str:session_id>/comments/", views.CommentCreateApi.as_view(), name="session_comment"),
    path("sessions/<str:session_id>/score-override/", views.ScoreOverrideApi.as_view(), name="session_override"),
]
