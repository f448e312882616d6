"""URIs of sources: credential redaction, the secret keys, live vs file, sanitized source ids.

The leaves of the sources package: everything that logs, stores or raises about a source names it
through ``redact_uri`` (or scrubs free text with ``scrub``), so credentials never reach logs,
exceptions, metrics labels or stores.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

LIVE_SCHEMES = {"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "hls", "srt", "udp", "tcp"}
# query keys whose values are secrets (matched case-insensitively)
SECRET_KEYS = frozenset({"password", "pass", "passwd", "pwd", "token", "access_token", "auth", "key", "apikey", "api_key",
                         "secret", "signature", "sig", "credential", "credentials"})


def redact_uri(uri: str) -> str:
    """Remove credentials: ``user:pass@`` becomes ``***@`` and secret query values become ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", uri)
    if not parts.scheme or len(parts.scheme) == 1:  # a plain path (or a Windows drive letter)
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in SECRET_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secrets_of(uri: str) -> list[str]:
    """Substrings of ``uri`` that must never be shown (raw and percent-decoded), longest first."""
    out: list[str] = []
    try:
        parts = urlsplit(uri)
    except ValueError:
        return [uri]
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        out += [userinfo, unquote(userinfo)]
        user, _, pw = userinfo.partition(":")
        out += [s for s in (pw, unquote(pw)) if s]
        out += [s for s in (user, unquote(user)) if len(s) >= 3]
    for item in parts.query.split("&") if parts.query else []:
        k, eq, v = item.partition("=")
        if eq and v and k.lower() in SECRET_KEYS:
            out += [v, unquote(v)]
    return sorted({s for s in out if s}, key=len, reverse=True)


def scrub(text: str, uri: str) -> str:
    """``text`` (an error message, a log line) with ``uri`` and every secret of it replaced."""
    text = text.replace(uri, redact_uri(uri))
    for s in secrets_of(uri):
        text = text.replace(s, "***")
    return text


def is_live(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    return scheme in LIVE_SCHEMES


def source_id(uri: str, taken: set[str] | None = None) -> str:
    """A sanitized, unique id ([A-Za-z0-9_.-]) for a source: the file stem or host+path."""
    red = redact_uri(uri)
    if "://" in red and not red.startswith("file://"):
        p = urlsplit(red)
        base = (p.hostname or "stream") + ("_" + p.path.strip("/") if p.path.strip("/") else "")
    else:
        base = Path(red.replace("file://", "")).stem or "video"
    sid = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "source"
    sid = sid[:64]
    taken = taken if taken is not None else set()
    out, n = sid, 2
    while out in taken:
        out, n = f"{sid}_{n}", n + 1
    taken.add(out)
    return out
