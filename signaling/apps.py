from django.apps import AppConfig


class SignalingConfig(AppConfig):
    name = "signaling"
