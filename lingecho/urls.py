from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from lingecho import ops

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("roleplay.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", ops.healthz, name="healthz"),
    path("readyz", ops.readyz, name="readyz"),
    path("metrics", ops.metrics, name="metrics"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("signaling.urls")),
    path("", include("roleplay.pages.urls")),
]

if settings.LINGECHO_STORAGE == "local":
    from roleplay.pages.media import protected_media

    urlpatterns.append(path("media/<path:path>", protected_media, name="media"))
