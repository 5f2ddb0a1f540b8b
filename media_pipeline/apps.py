from django.apps import AppConfig


class MediaPipelineConfig(AppConfig):
    name = "media_pipeline"

    def ready(self) -> None:
        # The after-call job (roleplay.after_call) re-transcribes recordings through this port, in
        # whichever process runs it (Celery worker or the embedded server): roleplay never imports us.
        from media_pipeline.retranscribe import FasterWhisperRetranscriber
        from roleplay.transcription import register_retranscriber

        register_retranscriber(FasterWhisperRetranscriber())
