"""Calling a cloud service from a live call without letting it take the call down.

Engine-neutral, so the buyer brains (``roleplay.dialog``) and the speech engines
(``media_pipeline.engines``) share one implementation without importing each other:

- :mod:`.errors` — how an adapter's failure is classified (retryable? a timeout?) and the
  provider's own explanation of an HTTP error;
- :mod:`.redaction` — configured keys and credential-shaped text never reach logs or clients;
- :mod:`.retry` — exponential backoff, only for failures worth repeating;
- :mod:`.breaker` — a per-engine circuit breaker shared by every call of the process;
- :mod:`.failures` — the report of one failure a call survived, for whoever must tell the client.

The wrappers that hand work to an offline engine live beside the engines they wrap
(``media_pipeline.engines.fallback`` for ASR/TTS, ``roleplay.dialog.fallback`` for the brain).
"""
