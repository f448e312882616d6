"""`streamparse track`: re-run person association offline on a store's tables (no model, no video)."""

from __future__ import annotations

from pathlib import Path

HELP = "re-run person tracking on a schema-v2 store's stored detections; rewrites only inst_track"


def add_arguments(p) -> None:
    p.add_argument("store", type=Path, help="schema-v2 store (OUT.zarr)")
    p.add_argument("--set", action="append", default=[], metavar="track.KEY=VALUE",
                   help="tracker parameter (repeatable); defaults: the store's recorded tracker params, else config defaults")
    p.add_argument("--source", action="append", default=None, help="only this source (repeatable; default all)")


def run(args) -> int:
    import json

    from streamparse.cli import CLIError
    from streamparse.config import ConfigError, TrackConfig, from_dict, to_dict
    from streamparse.plan import track_kwargs as tracker_kwargs
    from streamparse.tracking.tracker import NAME, Tracker
    from streamparse.tracking.store import StoreError, committed, open_store, read_tables, run_tracker, source_ids, writer_busy

    path = args.store
    if not path.exists():
        raise CLIError(f"store not found: {path}")
    holder = writer_busy(path)
    if holder is not None:
        raise CLIError(f"{path} is being written ({holder}); rerun when that run ends")
    try:
        root = open_store(path, mode="r")
    except StoreError as exc:
        raise CLIError(str(exc)) from None
    base = to_dict(TrackConfig())
    stored = (root.attrs.get("tracker") or {}).get("params") or {}
    base.update({k: v for k, v in stored.items() if k in base})
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("track."):
            raise CLIError(f"--set expects track.KEY=VALUE, got {item!r}")
        name = key[len("track."):]
        if name not in base or name == "enabled":
            raise CLIError(f"unknown tracker key {key} (known: {', '.join('track.' + k for k in base if k != 'enabled')})")
        import yaml

        base[name] = yaml.safe_load(value)
    try:
        cfg = from_dict(base, TrackConfig)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    sids = source_ids(root)
    if args.source:
        missing = [s for s in args.source if s not in sids]
        if missing:
            raise CLIError(f"source {missing[0]!r} not in {path} (sources: {', '.join(sids)})")
        sids = list(args.source)
    kwargs = tracker_kwargs(cfg)
    results = {}
    for sid in sids:  # compute everything first: nothing is rewritten if a source fails
        g = root[sid]
        results[sid] = run_tracker(g, Tracker(**kwargs), read_tables(g))
    import zarr

    from streamparse.store.lock import WriterLock
    from streamparse.store.outputs import OutputError

    try:  # the one writer of the store while inst_track is rewritten
        lock = WriterLock(path).acquire()
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    try:
        root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        for sid, track in results.items():
            g = root[sid]
            _, n = committed(g)
            if n:
                g["inst_track"][:n] = track
            g.attrs["tracker"] = {"name": NAME, "params": json.loads(json.dumps(kwargs))}
            print(f"{sid}: {n} instances, {int(track.max(initial=0))} tracks")
        root.attrs["tracker"] = {"name": NAME, "params": json.loads(json.dumps(kwargs))}
    finally:
        lock.release()
    return 0
