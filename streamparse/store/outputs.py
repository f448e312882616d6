"""Safety of outputs: what a writing command may create, replace or continue, and one writer per store.

Every command that writes an output calls ``prepare_output`` first; nothing else in the package decides
whether an existing path may be touched. The rule (README "Safety of outputs"):

- ``create``: the path must not exist.
- ``overwrite``: the path may be replaced only if it does not exist, is an empty directory, or is
  something streamparse wrote (``is_ours``); anything else — a directory with other files, a regular
  file, a zarr store of another program, any symlink — is refused with one line and nothing is touched.
- ``resume``: the path must be a streamparse zarr store (or not exist yet).
- ``update`` (folders that a command adds files to, e.g. a dataset's second split, a training work
  dir): the folder must not exist, be empty, or be ours; nothing is removed.

What "ours" means, per kind of output:

- a zarr store: ``zarr.json`` at its root whose attributes hold ``streamparse_schema_version``, and no
  file in it other than zarr metadata, chunks, ``*.partial`` files of interrupted zarr writes and our
  lock/reserve files;
- a directory output (datasets, exports): a marker file ``.streamparse-output.json`` listing every
  file the command wrote, and no file beyond that list; a folder of stores (an archive OUTDIR) lists
  its own top-level files and names its stores by a pattern (``"stores": "*.zarr"``): every entry
  matching it must be a streamparse store (by its root metadata), every other entry must be listed;
- a single file: the generator mark in the file's own metadata (``generator_mark``): JSON top-level
  ``"generator"``, HTML ``<meta name="generator">``, PNG text chunk ``Software``, MP4/MKV/MOV container
  metadata ``comment``, or a streamparse checkpoint's ``format``.

One writer per store: ``streamparse.store.lock.WriterLock``.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODES = ("create", "overwrite", "resume", "update")
KINDS = ("store", "dir", "file")
DIR_MARKER = ".streamparse-output.json"
LOCK_NAME = ".streamparse.lock"  # streamparse.store.lock.WriterLock's file inside a store
RESERVE_NAME = ".streamparse.reserve"
_STORE_OWN_FILES = {LOCK_NAME, RESERVE_NAME}
_VIDEO_EXT = {".mp4", ".mkv", ".mov", ".m4v", ".webm"}


class OutputError(ValueError):
    """An output path that may not be written as asked; the message is one line naming the path and why."""


def generator_mark() -> str:
    """The string streamparse writes into the metadata of every file it creates."""
    from streamparse import __version__

    return f"streamparse {__version__}"


@dataclass(frozen=True)
class PathState:
    """What is at an output path now. ``what``: absent | empty-dir | store | foreign-store | dir | file |
    symlink; ``ours``: streamparse made it (and nothing else is in it); ``why``: a phrase for messages."""

    path: Path
    what: str
    ours: bool
    why: str


def _store_version(path: Path):
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes") or {} if isinstance(meta, dict) else {}
    return attrs.get("streamparse_schema_version") if isinstance(attrs, dict) else None


def _foreign_store_files(path: Path) -> list[str]:
    """Files inside a zarr store that neither zarr nor streamparse wrote (relative paths)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = Path(dirpath).relative_to(path)
        for name in filenames:
            r = rel / name
            parts = r.parts
            if name == "zarr.json" or name.endswith(".partial"):
                continue
            if len(parts) == 1 and name in _STORE_OWN_FILES:
                continue
            if "c" in parts[:-1]:  # chunk keys: <array>/c/<i>/<j>/...
                continue
            bad.append(str(r))
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                bad.append(str(rel / d))
                dirnames.remove(d)
    return bad


def _dir_manifest(path: Path) -> dict | None:
    try:
        data = json.loads((path / DIR_MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not str(data.get("generator", "")).startswith("streamparse"):
        return None
    return data


def _store_glob(manifest: dict) -> str | None:
    g = manifest.get("stores")
    return g if isinstance(g, str) and g else None


def _shallow_store_ok(p: Path) -> bool:
    """A sub-store of a folder output (an archive's ``<video_id>.zarr``): a streamparse store by its root
    metadata, or one whose creation had only begun. (Its own files are checked in full when a writer
    opens it: ``prepare_output(kind="store")``.)"""
    if p.is_symlink() or not p.is_dir():
        return False
    if (p / "zarr.json").is_file():
        return _store_version(p) is not None
    try:
        return {e.name for e in p.iterdir()} <= _STORE_OWN_FILES
    except OSError:
        return False


def _foreign_dir_files(path: Path, manifest: dict) -> list[str]:
    listed = set(manifest.get("files") or [])
    stores = _store_glob(manifest)
    if stores:  # a folder of stores (an archive OUTDIR): its top level only, each store shallowly
        bad = []
        for e in sorted(path.iterdir(), key=lambda x: x.name):
            n = e.name
            if n in (DIR_MARKER, LOCK_NAME) or (n in listed and e.is_file() and not e.is_symlink()):
                continue
            if n.endswith(".tmp") and n[:-4] in listed | {DIR_MARKER}:
                continue  # a replacement cut short by a kill (write_json / finish_dir write via .tmp)
            if fnmatch.fnmatch(n, stores) and _shallow_store_ok(e):
                continue
            bad.append(n)
        return bad
    bad = []
    for dirpath, dirnames, filenames in os.walk(path):
        rel = Path(dirpath).relative_to(path)
        for name in filenames:
            r = str(rel / name) if str(rel) != "." else name
            if r != DIR_MARKER and r not in listed:
                bad.append(r)
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                bad.append(str(rel / d))
                dirnames.remove(d)
    return bad


def file_is_ours(path: Path) -> bool:
    """Whether a regular file carries streamparse's generator mark (by its kind, read cheaply)."""
    ext = path.suffix.lower()
    mark = "streamparse"
    try:
        if ext == ".json":
            with open(path) as f:
                data = json.load(f)
            return isinstance(data, dict) and str(data.get("generator", "")).startswith(mark)
        if ext in (".html", ".htm"):
            with open(path, "rb") as f:
                head = f.read(8192).decode("utf-8", "replace")
            return f'<meta name="generator" content="{mark}' in head
        if ext == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return str(im.info.get("Software", "")).startswith(mark)
        if ext in _VIDEO_EXT:
            import av

            with av.open(str(path)) as c:
                return str(c.metadata.get("comment", "")).startswith(mark)
        if ext in (".pt", ".pth"):
            import torch

            from streamparse.checkpoint import FORMAT

            ck = torch.load(path, map_location="cpu", weights_only=True)
            return isinstance(ck, dict) and ck.get("format") == FORMAT
    except Exception:  # noqa: BLE001 - unreadable means: not provably ours
        return False
    return False


def inspect_path(path: str | Path) -> PathState:
    """Classify what is at ``path`` (never modifies anything)."""
    p = Path(path)
    if p.is_symlink():
        return PathState(p, "symlink", False, f"it is a symlink (to {os.readlink(p)}); give the real path")
    if not p.exists():
        return PathState(p, "absent", False, "it does not exist")
    if p.is_dir():
        try:
            entries = list(p.iterdir())
        except OSError as exc:
            return PathState(p, "dir", False, f"it cannot be listed ({exc.strerror})")
        if not entries:
            return PathState(p, "empty-dir", False, "it is an empty directory")
        if {e.name for e in entries} <= _STORE_OWN_FILES:  # a store whose creation had only begun
            return PathState(p, "empty-dir", True, "it holds only streamparse's lock file (a store being created)")
        if (p / "zarr.json").is_file():
            ver = _store_version(p)
            if ver is None:
                return PathState(p, "foreign-store", False, "it is a zarr store that streamparse did not write")
            extra = _foreign_store_files(p)
            if extra:
                return PathState(p, "store", False, f"it is a streamparse store but holds {len(extra)} file(s) "
                                                    f"streamparse did not write (e.g. {extra[0]})")
            return PathState(p, "store", True, f"it is a streamparse store (schema v{ver})")
        manifest = _dir_manifest(p)
        if manifest is None:
            return PathState(p, "dir", False, f"it is a directory with {len(entries)} entries that streamparse did not create")
        extra = _foreign_dir_files(p, manifest)
        if extra:
            return PathState(p, "dir", False, f"it holds {len(extra)} file(s) streamparse did not write (e.g. {extra[0]})")
        return PathState(p, "dir", True, f"it is a streamparse {manifest.get('kind', 'output')} folder")
    if p.is_file():
        if file_is_ours(p):
            return PathState(p, "file", True, "it is a file streamparse wrote")
        return PathState(p, "file", False, "it is a file that streamparse did not write")
    return PathState(p, "file", False, "it is not a regular file or directory")


def prepare_output(path: str | Path, *, mode: str = "create", kind: str = "store", remove: bool = True) -> PathState:
    """Check (and, for ``overwrite`` with ``remove``, clear) an output path before a command writes it.

    ``kind``: store (a zarr store), dir (a folder of files) or file. Returns the state found.
    Raises ``OutputError`` (one line) when the path may not be used; then nothing was touched.
    A store being overwritten is cleared by ``clear_store`` under its writer lock, not here
    (``ZarrSink`` does it), so ``remove`` has no effect for stores.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    st = inspect_path(path)
    p = st.path
    flag_hint = "pass --resume to continue it or --overwrite to replace it" if kind == "store" else "pass --overwrite to replace it"
    if st.what == "symlink":
        raise OutputError(f"refusing to write {p}: {st.why}")
    if mode == "create":
        if st.what != "absent":
            if st.ours or st.what == "empty-dir":
                raise OutputError(f"output {p} exists: {flag_hint}")
            raise OutputError(f"output {p} exists and {st.why}: choose another path")
        return st
    if mode == "update":
        if kind != "dir":
            raise ValueError("update applies to folders only")
        if st.what in ("absent", "empty-dir") or (st.what == "dir" and st.ours):
            return st
        raise OutputError(f"refusing to write into {p}: {st.why}")
    if mode == "resume":
        if kind != "store":
            raise ValueError("resume applies to stores only")
        if st.what == "absent" or (st.what == "empty-dir" and st.ours):
            return st
        if st.what == "store" and st.ours:
            return st
        raise OutputError(f"cannot resume {p}: {st.why}")
    # overwrite
    if st.what in ("absent", "empty-dir"):
        return st
    wrong_kind = (kind == "store" and st.what != "store") or (kind == "dir" and st.what not in ("dir",)) or \
                 (kind == "file" and st.what != "file")
    if not st.ours or wrong_kind:
        why = st.why if not st.ours else f"{st.why}, not a {kind}"
        raise OutputError(f"refusing to overwrite {p}: {why}")
    if remove and kind != "store":
        _remove_ours(st)
    return st


def _remove_ours(st: PathState) -> None:
    p = st.path
    if st.what == "file":
        p.unlink()
        return
    manifest = _dir_manifest(p) or {}
    for rel in manifest.get("files") or []:
        (p / rel).unlink(missing_ok=True)
    (p / DIR_MARKER).unlink(missing_ok=True)
    for dirpath, _, _ in sorted(os.walk(p, topdown=False), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    p.mkdir(parents=True, exist_ok=True)


def clear_store(path: str | Path) -> None:
    """Delete a streamparse store's zarr content, keeping its lock file (the caller holds the lock).
    Refuses (``OutputError``) if the store is not ours or holds files it did not write."""
    p = Path(path)
    st = inspect_path(p)
    if not (st.what == "store" and st.ours):
        raise OutputError(f"refusing to overwrite {p}: {st.why}")
    for entry in p.iterdir():
        if entry.name in _STORE_OWN_FILES:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def finish_dir(path: str | Path, kind: str, extra: dict | None = None) -> Path:
    """Mark a directory output as ours: write ``.streamparse-output.json`` listing every file in it (the
    command has just written them: before it started the folder was absent, empty or ours and cleared).
    ``extra={"stores": "*.zarr"}``: a folder of stores; only its top-level files are listed."""
    p = Path(path)
    stores = _store_glob(extra or {})
    if stores:  # a folder of stores: list its own files; the stores are recognised by the pattern
        files = sorted(e.name for e in p.iterdir() if e.is_file() and e.name not in (DIR_MARKER, LOCK_NAME)
                       and not e.name.endswith(".tmp"))
    else:
        files = sorted(str(Path(dp, f).relative_to(p)) for dp, _, fs in os.walk(p) for f in fs if f != DIR_MARKER)
    data = {"generator": generator_mark(), "kind": kind, "created": time.time(), "files": files, **(extra or {})}
    tmp = p / (DIR_MARKER + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(p / DIR_MARKER)
    return p / DIR_MARKER


def write_json(path: str | Path, data: dict) -> Path:
    """Write a JSON output file carrying the generator mark (atomically)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps({"generator": generator_mark(), **data}, indent=2, default=str))
    tmp.replace(p)
    return p
