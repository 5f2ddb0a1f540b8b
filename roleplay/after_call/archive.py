"""Where a session's artefacts are stored and how: fixed names, one writer, and the manifest.

Everything goes through Django's default storage (local files or S3) under
``sessions/<id>/archive/`` with fixed names: fixed names are what make a re-run overwrite instead of
adding a second copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from roleplay.models import RealtimeSession

# The manifest's format version; bump it when a reader would misread the new shape.
ARCHIVE_VERSION = 1

CONTENT_TYPES = {
    ".webm": "audio/webm",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
}


def archive_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/archive/"


def archive_names(session_id: str) -> dict[str, str]:
    """Every artefact's fixed storage name: fixed names are what make a re-run overwrite, not add."""
    p = archive_prefix(session_id)
    return {
        "recording": p + "recording.webm",
        "transcript_json": p + "transcript.json",
        "transcript_txt": p + "transcript.txt",
        "transcript_vtt": p + "transcript.vtt",
        "retranscript": p + "retranscript.json",
        "analytics": p + "analytics.json",
        "manifest": p + "manifest.json",
    }


def archive_json(data: object) -> str:
    """The one JSON spelling of every archived document (stable key order, so re-runs diff cleanly)."""
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def storage_put(name: str, content: bytes | str, *, path: str | None = None) -> dict[str, Any]:
    """Write one artefact under its fixed name, replacing any earlier version; returns its manifest entry.

    Local storage would otherwise save a second copy under a suffixed name; if a concurrent run
    wins the race for the name anyway, our copy (identical content) is removed again.
    """
    storage = default_storage
    content_type = CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
    if storage.exists(name):
        storage.delete(name)
    if path is not None:
        digest, size = _file_digest(path)
        with open(path, "rb") as handle:
            upload = File(handle, name=os.path.basename(name))
            upload.content_type = content_type  # S3 would guess video/webm from the name
            saved = storage.save(name, upload)
    else:
        data = content.encode("utf-8") if isinstance(content, str) else content
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        upload = ContentFile(data, name=os.path.basename(name))
        upload.content_type = content_type
        saved = storage.save(name, upload)
    if saved != name:
        storage.delete(saved)
    return {"name": name, "bytes": size, "sha256": digest, "content_type": content_type}


def stored_recording_describe(name: str) -> dict[str, Any]:
    """The manifest entry of an archived recording already in storage (a re-run does not re-encode it)."""
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": CONTENT_TYPES[".webm"]}


def _file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def manifest_document(session: RealtimeSession, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the archive holds and about which call: the one file a reader opens first."""
    return {
        "version": ARCHIVE_VERSION,
        "session_id": session.pk,
        "scenario": {"id": session.scenario_id, "slug": session.scenario.slug, "title": session.scenario.title},
        "trainee": session.trainee.username,
        "transport": session.transport,
        "started_at": session.started_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "end_reason": session.end_reason,
        "duration_seconds": session.duration_seconds,
        "turn_count": session.turn_count,
        "generated_at": timezone.now().isoformat(),
        "recording_purged_at": None,
        "files": files,
    }


def manifest_mark_purged(session_id: str) -> None:
    """Record in the manifest that the audio went (retention), and drop its file entry."""
    name = archive_names(session_id)["manifest"]
    if not default_storage.exists(name):
        return
    with default_storage.open(name, "rb") as handle:
        manifest = json.loads(handle.read().decode("utf-8"))
    manifest["recording_purged_at"] = timezone.now().isoformat()
    manifest.get("files", {}).pop("recording", None)
    storage_put(name, archive_json(manifest))
