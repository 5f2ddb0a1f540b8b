from django.contrib.auth import views as auth_views
from django.urls import path

from roleplay.pages import views
from roleplay.pages.login import ThrottledLoginView

urlpatterns = [
    path("login/", ThrottledLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.scenario_list, name="home"),
    path("practice/result/<str:session_id>/", views.result, name="result"),
    path("practice/<int:scenario_id>/", views.practice, name="practice"),
    path("history/", views.history, name="history"),
    path("review/", views.review_list, name="review_list"),
    path("review/leaderboard/", views.leaderboard, name="leaderboard"),
    path("review/<str:session_id>/", views.review_detail, name="review_detail"),
    path("review/<str:session_id>/recording/", views.recording, name="recording"),
]
