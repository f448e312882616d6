"""ZarrSink: writes schema v1 (see README "Output") -- one zarr v3 group per run, one subgroup per source.

Writes are chunk-aligned along time: results are buffered (and reordered by their frame sequence
number) until ``chunk_frames`` consecutive frames are ready, then written as whole chunks; only
after the data is written is the source's ``status.frames_written`` attribute advanced (the commit
marker). A crashed run therefore leaves at most one uncommitted partial chunk, which ``resume``
truncates away before continuing from the committed frame.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
PER_FRAME = {"frame_index": "int64", "pts": "int64", "time": "float64", "segment": "uint16", "wallclock": "float64",
             "inst_offset": "int64"}
PER_INSTANCE = {"inst_id": "uint16", "inst_score": "float32", "inst_bbox": "int32", "inst_area": "int64"}


class SinkError(RuntimeError):
    pass


def _compressors(name: str):
    from zarr.codecs import BloscCodec, ZstdCodec

    if name == "zstd":
        return [ZstdCodec(level=3)]
    if name == "blosc":
        return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]
    if name in ("none", ""):
        return None
    raise ValueError(f"unknown compressor {name!r} (zstd, blosc, none)")


class SourceWriter:
    """Writes one source's arrays. Results come in as (seq, dict) -- seq = 0, 1, 2, ... per frame in
    emission order (frame_index may have gaps for live drops)."""

    def __init__(self, group, chunk_frames: int):
        self.g = group
        self.chunk = int(chunk_frames)
        self.pending: dict[int, dict] = {}
        st = dict(self.g.attrs.get("status", {}))
        self.committed = int(st.get("frames_written", 0))
        self.n_inst = int(st.get("instances_written", 0))
        self.next_seq = self.committed
        self._truncate(self.committed, self.n_inst)

    def _truncate(self, t: int, n: int) -> None:
        for name in ("part", "instance", *PER_FRAME):
            a = self.g[name]
            if a.shape[0] != t:
                a.resize((t, *a.shape[1:]))
        for name in PER_INSTANCE:
            a = self.g[name]
            if a.shape[0] != n:
                a.resize((n, *a.shape[1:]))

    def add(self, seq: int, frame: dict) -> None:
        if seq < self.next_seq or seq in self.pending:
            raise SinkError(f"frame sequence {seq} delivered twice (next expected {self.next_seq})")
        self.pending[seq] = frame
        while self._ready() >= self.chunk:
            self._write(self.chunk)

    def _ready(self) -> int:
        n = 0
        while self.next_seq + n in self.pending:
            n += 1
        return n

    def flush(self) -> None:
        n = self._ready()
        if n:
            self._write(n)

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def _write(self, n: int) -> None:
        frames = [self.pending.pop(self.next_seq + i) for i in range(n)]
        t0, t1 = self.committed, self.committed + n
        g = self.g
        counts = [len(f["inst_score"]) for f in frames]
        i0, i1 = self.n_inst, self.n_inst + sum(counts)
        for name in ("part", "instance", *PER_FRAME):
            a = g[name]
            a.resize((t1, *a.shape[1:]))
        g["part"][t0:t1] = np.stack([f["part"] for f in frames])
        g["instance"][t0:t1] = np.stack([f["instance"] for f in frames])
        for name in ("frame_index", "pts", "time", "segment", "wallclock"):
            g[name][t0:t1] = np.asarray([f[name] for f in frames], dtype=PER_FRAME[name])
        g["inst_offset"][t0:t1] = i0 + np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        if i1 > i0:
            for name in PER_INSTANCE:
                a = g[name]
                a.resize((i1, *a.shape[1:]))
            g["inst_id"][i0:i1] = np.concatenate([np.arange(1, c + 1) for c in counts if c]).astype(np.uint16)
            g["inst_score"][i0:i1] = np.concatenate([f["inst_score"] for f in frames]).astype(np.float32)
            g["inst_bbox"][i0:i1] = np.concatenate([f["inst_bbox"] for f in frames]).reshape(-1, 4).astype(np.int32)
            g["inst_area"][i0:i1] = np.concatenate([f["inst_area"] for f in frames]).astype(np.int64)
        self.committed, self.n_inst, self.next_seq = t1, i1, self.next_seq + n
        self.set_status(frames_written=t1, instances_written=i1)  # the commit marker, after the data

    def set_status(self, **kw) -> None:
        st = dict(self.g.attrs.get("status", {}))
        st.update(kw)
        st["updated"] = time.time()
        self.g.attrs["status"] = st


class ZarrSink:
    """The output store. ``mode``: 'create' (fails if it exists), 'overwrite', 'resume'.

    Usage::

        with ZarrSink(path, mode="create", root_attrs={...}) as sink:
            w = sink.source(source_id, info, (H, W))
            w.add(seq, result_dict) ...
    """

    def __init__(self, path: str | Path, *, mode: str = "create", root_attrs: dict | None = None,
                 chunk_frames: int = 16, compressor: str = "zstd"):
        import zarr

        self.path = Path(path)
        self.chunk_frames = int(chunk_frames)
        self.compressor = compressor
        if mode not in ("create", "overwrite", "resume"):
            raise ValueError(f"mode must be create, overwrite or resume, got {mode!r}")
        exists = self.path.exists()
        if mode == "create" and exists:
            raise SinkError(f"output {self.path} exists: pass --resume to continue it or --overwrite to replace it")
        if mode == "resume" and exists:
            self.root = zarr.open_group(str(self.path), mode="r+")
            ver = self.root.attrs.get("streamparse_schema_version")
            if ver != SCHEMA_VERSION:
                raise SinkError(f"{self.path} is not a streamparse schema v{SCHEMA_VERSION} store (found {ver!r})")
        else:
            self.root = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        self.resumed = mode == "resume" and exists
        if root_attrs:
            old = dict(self.root.attrs)
            if self.resumed:
                for key in ("model_name", "checkpoint_sha256"):
                    if key in old and key in root_attrs and old[key] != root_attrs[key]:
                        raise SinkError(f"cannot resume {self.path}: it was written with {key}={old[key]!r}, now {root_attrs[key]!r}")
            self.root.attrs.update(json.loads(json.dumps({**root_attrs, "streamparse_schema_version": SCHEMA_VERSION})))
        self.writers: dict[str, SourceWriter] = {}

    def __enter__(self) -> "ZarrSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def committed(self, source_id: str) -> int:
        """Frames committed for a source (0 if unknown)."""
        if source_id in self.root:
            return int(dict(self.root[source_id].attrs.get("status", {})).get("frames_written", 0))
        return 0

    def source(self, source_id: str, info: dict, size: tuple[int, int], class_names: list[str],
               palette: np.ndarray | None = None) -> SourceWriter:
        H, W = int(size[0]), int(size[1])
        if source_id not in self.root:
            g = self.root.create_group(source_id)
            comp = _compressors(self.compressor)
            ch = self.chunk_frames
            flag_values = list(range(len(class_names)))
            g.create_array("part", shape=(0, H, W), chunks=(ch, H, W), dtype="uint8", fill_value=0, compressors=comp,
                           dimension_names=("time", "y", "x"),
                           attributes={"flag_values": flag_values, "flag_meanings": " ".join(n.replace(" ", "_") for n in class_names),
                                       "class_names": list(class_names),
                                       "palette": (np.asarray(palette).tolist() if palette is not None else None),
                                       "long_name": "part category per pixel (0 = background)"})
            g.create_array("instance", shape=(0, H, W), chunks=(ch, H, W), dtype="uint16", fill_value=0, compressors=comp,
                           dimension_names=("time", "y", "x"),
                           attributes={"long_name": "person id per pixel (0 = background, 1..K)"})
            for name, dt in PER_FRAME.items():
                g.create_array(name, shape=(0,), chunks=(max(1024, ch),), dtype=dt, fill_value=0, dimension_names=("time",))
            for name, dt in PER_INSTANCE.items():
                shape, chunks, dims = ((0, 4), (4096, 4), ("inst", "corner")) if name == "inst_bbox" else ((0,), (4096,), ("inst",))
                g.create_array(name, shape=shape, chunks=chunks, dtype=dt, fill_value=0, dimension_names=dims)
            g.attrs["source"] = json.loads(json.dumps(info))
            g.attrs["status"] = {"state": "running", "complete": False, "frames_written": 0, "instances_written": 0,
                                 "dropped": 0, "errors": []}
        else:
            g = self.root[source_id]
            part = g["part"]
            if part.shape[1:] != (H, W):
                raise SinkError(f"cannot resume source {source_id}: stored size {part.shape[1:]} != {(H, W)}")
        w = SourceWriter(g, self.chunk_frames)
        self.writers[source_id] = w
        return w

    def close(self) -> None:
        for w in self.writers.values():
            w.flush()
        self.writers.clear()
