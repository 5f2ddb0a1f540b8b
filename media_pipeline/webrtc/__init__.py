"""The WebRTC transport's adapter around the shared core, held by the media worker.

``call`` (``CallSession``: one per WebRTC call, its plumbing, negotiation, recording and ending),
``peer`` (aiortc peer connection and SDP), ``inbound`` (the trainee's RTP → 16 kHz → the shared
listening stage, interims, speculative finals), ``turns`` (``VoiceTurns``: the call's turn stage:
one turn is one turn, yields, barge-in on words), ``speaking`` (``Speaker``: streamed reply → TTS
sentence by sentence → the paced ``outbound`` track). The chunk path's counterpart is
``media_pipeline.chunked``.
"""
