"""Live streams: ``LiveSource`` (source.py) over a decode thread (connection.py), a bounded queue
(queue.py) and a monotonic timeline (timeline.py)."""

from streamparse.sources.base import LiveSourceError
from streamparse.sources.live.connection import backoff_delay
from streamparse.sources.live.source import LiveSource

__all__ = ["LiveSource", "LiveSourceError", "backoff_delay"]
