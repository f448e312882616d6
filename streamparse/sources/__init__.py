"""Video sources behind one protocol (``base.Source``): files through PyAV (``file.py``) and live
streams (``live/``). ``open_source`` picks the implementation from the URI; the URI helpers
(redaction, ids) are the leaves in ``uri.py``. Decoder stacks churn: nothing else in the package
touches PyAV's decode API."""

from __future__ import annotations

from urllib.parse import urlsplit

from streamparse.sources.base import LiveSourceError, Source, SourceError
from streamparse.sources.file import FileSource
from streamparse.sources.uri import LIVE_SCHEMES, is_live, redact_uri, source_id

__all__ = ["FileSource", "LIVE_SCHEMES", "LiveSourceError", "Source", "SourceError", "is_live", "open_source",
           "redact_uri", "source_id"]


def open_source(uri: str, *, source_id: str = "", start_frame: int = 0, max_frames: int = 0, live: dict | None = None) -> Source:
    """A FileSource for paths and file:// URIs, a LiveSource for rtsp/rtmp/http(s)/hls URIs.

    ``live``: the LiveSource keyword arguments (``streamparse.plan.live_kwargs(cfg.live)``), needed for
    live URIs. ``start_frame`` (resume) applies to files; live streams always start now."""
    from streamparse.sources.uri import redact_uri as _redact, source_id as _sid

    if "://" in uri and not uri.startswith("file://"):
        scheme = urlsplit(uri).scheme.lower()
        if scheme not in LIVE_SCHEMES:
            raise SourceError(f"unknown URI scheme {scheme!r} in {_redact(uri)} (known: file paths, {', '.join(sorted(LIVE_SCHEMES))})")
        if live is None:
            raise ValueError("a live source needs its settings (live=live_kwargs(cfg.live))")
        from streamparse.sources.live import LiveSource

        return LiveSource(uri, source_id=source_id or _sid(uri), **live)
    return FileSource(uri, source_id=source_id, start_frame=start_frame, max_frames=max_frames)
