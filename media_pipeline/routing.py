"""Channel-layer routes served by the media worker (``runworker media``)."""

import sys

from media_pipeline.worker import MediaWorkerConsumer, boot_runworker_process

channel_routes: dict = {
    "media": MediaWorkerConsumer.as_asgi(),
}


def _is_media_runworker(argv: list[str]) -> bool:
    return "runworker" in argv and "media" in argv[argv.index("runworker") + 1:]


if _is_media_runworker(sys.argv):
    # Channels only builds a consumer when the first message arrives, but the signaling side
    # refuses offers while no worker has a heartbeat: start beating as the process boots.
    boot_runworker_process()
