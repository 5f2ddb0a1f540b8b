"""ASGI entry point: HTTP, WebSockets (Origin + auth checked before accept) and the media worker channel."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")
django_asgi_app = get_asgi_application()

# daphne serves static files itself (no separate web server in the two-command set-up).
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

http_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from media_pipeline.embedded import EmbeddedMediaWorker  # noqa: E402
from media_pipeline.routing import channel_routes  # noqa: E402
from signaling.auth import websocket_stack  # noqa: E402
from signaling.routing import websocket_urlpatterns  # noqa: E402

# EmbeddedMediaWorker starts the in-process media worker on the first request (embedded mode only).
application = EmbeddedMediaWorker(
    ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": websocket_stack(URLRouter(websocket_urlpatterns)),
            "channel": ChannelNameRouter(channel_routes),
        }
    )
)

from lingecho.gc_pauses import freeze_loaded_objects  # noqa: E402

freeze_loaded_objects()
