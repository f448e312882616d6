"""The inputs of an archive run: ``expand_inputs(items) -> [VideoInput]`` and ``input_identity(path)``.

An item is a video file, a directory (searched recursively for ``VIDEO_EXTENSIONS``), a glob pattern
(``*``, ``?``, ``[``; ``**`` recursive) or a manifest: ``.txt`` (one path or ``file://`` URI a line;
blank lines and ``#`` comments skipped) or ``.jsonl`` (one object a line: ``uri`` and an optional
``id``). Relative paths in a manifest are relative to the manifest's folder. The same file named twice
is taken once. Every video gets a unique, sanitized id ([A-Za-z0-9_.-], at most 64 characters): the
manifest's ``id`` if given (sanitized; two equal ids are an error), else the file stem, numbered
``_2``, ``_3``, ... on collisions in input order.

The identity of an input (what ``--resume`` compares) is its size, its mtime (ns) and the sha256 of
its first MiB.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from streamparse.sources.uri import redact_uri, source_id

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                              ".wmv", ".flv", ".3gp", ".ogv", ".mxf", ".y4m"})
MANIFEST_EXTENSIONS = (".txt", ".jsonl")
HEAD_BYTES = 1 << 20


class InputError(ValueError):
    """An input that cannot be expanded (missing file, bad manifest line); one line naming it."""


@dataclass(frozen=True)
class VideoInput:
    """One video of an archive: ``uri`` (an absolute local path), its ``video_id`` (the store is
    ``<video_id>.zarr``) and where it came from (``origin``: the item or the manifest line)."""

    uri: str
    video_id: str
    origin: str

    @property
    def redacted(self) -> str:
        return redact_uri(self.uri)


def _sanitize(text: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "video"
    return sid[:64]


def _is_glob(item: str) -> bool:
    return any(c in item for c in "*?[")


def _local(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        raise InputError(f"{redact_uri(uri)}: archives read local (or shared-storage) files; URLs are not supported")
    return uri


def _scan_dir(d: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(x for x in dirnames if not x.startswith("."))
        for f in sorted(filenames):
            if Path(f).suffix.lower() in VIDEO_EXTENSIONS and not f.startswith("."):
                out.append(Path(dirpath) / f)
    return out


def _manifest(path: Path) -> list[tuple[str, str | None, str]]:
    """(uri, id or None, origin) of each line of a manifest."""
    rows = []
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read manifest {path}: {exc.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        vid = None
        if path.suffix == ".jsonl":
            try:
                rec = json.loads(line)
            except ValueError:
                raise InputError(f"{path}:{n}: not a JSON object") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("uri"), str) or not rec["uri"]:
                raise InputError(f"{path}:{n}: a manifest line needs a \"uri\" string")
            uri, vid = rec["uri"], rec.get("id")
            if vid is not None and not isinstance(vid, str):
                raise InputError(f"{path}:{n}: \"id\" must be a string")
        else:
            uri = line
        p = Path(_local(uri))
        if not p.is_absolute():
            p = path.parent / p
        rows.append((str(p), vid, f"{path}:{n}"))
    return rows


def expand_inputs(items: list[str]) -> list[VideoInput]:
    """Every video named by ``items`` (see the module docstring), in order, once each, with unique ids.
    Raises ``InputError`` for a path that does not exist, a glob that matches nothing, a manifest line
    naming a missing file, or two manifest ids that collide."""
    found: list[tuple[str, str | None, str]] = []
    for item in items:
        if _is_glob(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            vids = [m for m in matches if Path(m).is_file() and Path(m).suffix.lower() in VIDEO_EXTENSIONS]
            for m in matches:
                if Path(m).is_dir():
                    vids += [str(p) for p in _scan_dir(Path(m))]
            if not vids:
                raise InputError(f"no video matches {item!r}")
            found += [(v, None, item) for v in vids]
            continue
        p = Path(_local(item))
        if p.is_dir():
            vids = _scan_dir(p)
            if not vids:
                raise InputError(f"{p}: no video files in this folder (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
            found += [(str(v), None, item) for v in vids]
        elif p.suffix.lower() in MANIFEST_EXTENSIONS and p.is_file():
            rows = _manifest(p)
            for uri, _, origin in rows:
                if not Path(uri).is_file():
                    raise InputError(f"{origin}: file not found: {uri}")
            found += rows
        elif p.exists() or p.is_symlink():
            found.append((str(p), None, item))  # any file (an unreadable one fails as that video)
        else:
            raise InputError(f"input not found: {redact_uri(item)}")
    return _assign_ids(found)


def _assign_ids(found: list[tuple[str, str | None, str]]) -> list[VideoInput]:
    seen: set[str] = set()
    rows = []
    for uri, vid, origin in found:
        key = os.path.realpath(os.path.abspath(uri))
        if key in seen:
            continue
        seen.add(key)
        rows.append((os.path.abspath(uri), vid, origin))
    taken: set[str] = set()
    explicit: dict[str, str] = {}
    for uri, vid, origin in rows:  # manifest ids first: they are what the user asked for
        if vid is not None:
            sid = _sanitize(vid)
            if sid in explicit:
                raise InputError(f"{origin}: video id {vid!r} is also used by {explicit[sid]}")
            explicit[sid] = origin
            taken.add(sid)
    out = []
    for uri, vid, origin in rows:
        sid = _sanitize(vid) if vid is not None else source_id(uri, taken)
        out.append(VideoInput(uri=uri, video_id=sid, origin=origin))
    return out


def stat_identity(path: str) -> dict:
    """Size and mtime (ns) of a file; ``{}`` when it cannot be stat'ed (the video then fails alone)."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return {"size": int(st.st_size), "mtime": int(st.st_mtime_ns)}


def input_identity(path: str) -> dict:
    """``{"size", "mtime", "sha256_1mb"}`` of a file (see the module docstring); ``{}`` when unreadable."""
    ident = stat_identity(path)
    if not ident:
        return {}
    try:
        with open(path, "rb") as f:
            ident["sha256_1mb"] = hashlib.sha256(f.read(HEAD_BYTES)).hexdigest()
    except OSError:
        return {}
    return ident


def same_input(a: dict | None, b: dict | None, *, head: bool = True) -> bool:
    """Whether two identities name the same content (``head``: the first-MiB hashes must match too)."""
    if not a or not b:
        return False
    keys = ("size", "mtime", "sha256_1mb") if head else ("size", "mtime")
    return all(a.get(k) is not None and a.get(k) == b.get(k) for k in keys)
