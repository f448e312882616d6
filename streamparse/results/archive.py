"""Reading an archive OUTDIR (issue 18 layout: archive.json, index.jsonl, <video_id>.zarr): ``open_archive``.

Re-exported by ``streamparse.results``.
"""

from __future__ import annotations

import json
import logging
import posixpath
from pathlib import Path

from streamparse.store.index import parse_index
from streamparse.results.store import Result, _is_url, open_result

log = logging.getLogger(__name__)

def _join(base: str, name: str) -> str:
    return posixpath.join(base.rstrip("/"), name) if _is_url(base) else str(Path(base) / name)


def _read_text(path: str, storage_options: dict | None) -> str:
    if _is_url(path):
        import fsspec

        with fsspec.open(path, "rt", **(storage_options or {})) as f:
            return f.read()
    return Path(path).read_text()


class Archive:
    """An archive OUTDIR: ``index`` (pandas DataFrame, the last index line of each video), ``attrs``
    (archive.json), ``result(video_id)`` / ``archive[video_id]`` -> ``Result`` of that video's store."""

    def __init__(self, path: str, index, attrs: dict, storage_options: dict | None):
        self.path, self.index, self.attrs, self._so = path, index, attrs, storage_options
        self._results: dict[str, Result] = {}

    def __repr__(self) -> str:
        return f"<Archive {self.path}: {len(self.index)} videos>"

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        return iter(self.index["video_id"].tolist())

    def __getitem__(self, video_id: str) -> Result:
        return self.result(video_id)

    def result(self, video_id: str) -> Result:
        if video_id not in self._results:
            rows = self.index[self.index["video_id"] == video_id]
            if rows.empty:
                raise KeyError(f"{self.path}: no video {video_id!r} in index.jsonl")
            row = rows.iloc[0]
            self._results[video_id] = open_result(_join(self.path, str(row["store"])), storage_options=self._so)
        return self._results[video_id]


def open_archive(outdir, *, storage_options: dict | None = None) -> Archive:
    """Open an archive OUTDIR (local or fsspec URL): index.jsonl is read line by line; the last line of
    each video_id wins; a truncated last line (a writer killed mid-line) is skipped."""
    import pandas as pd

    base = str(outdir)
    text = _read_text(_join(base, "index.jsonl"), storage_options)
    last = parse_index(text).last  # the first appearance keeps its place, the last line its values
    try:
        attrs = json.loads(_read_text(_join(base, "archive.json"), storage_options))
    except (OSError, ValueError):
        attrs = {}
    cols = ["video_id", "state", "frames", "fps", "wall_s", "attempt", "time", "store", "uri", "errors"]
    index = pd.DataFrame(list(last.values()))
    index = index.reindex(columns=cols + [c for c in index.columns if c not in cols])
    return Archive(base, index, attrs, storage_options)
