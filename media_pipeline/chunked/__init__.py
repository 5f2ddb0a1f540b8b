"""The audio-chunk transport's adapter around the shared core, served by the media worker.

``webm_stream`` decodes what MediaRecorder sends (WebM/Opus, or raw PCM16) to 16 kHz mono;
``turns`` runs the shared listening stage and conversation turn on it and delivers each reply as a
stored WAV with a signed URL (the chunk path's speaker); ``call`` is what the media worker holds
for one chunked session, driven over the channel layer by signaling's chunk session
(``media_pipeline.contract``: ``media.chunk_*``).
"""
