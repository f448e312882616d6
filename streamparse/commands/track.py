"""`streamparse track`: re-run person tracking on a store's stored people and candidates (no model, no video).

Offline by default: the tracker may look both ways (a backward pass, tentative frames given their
track's id, masks interpolated over short gaps; ``streamparse.tracking.offline``). ``--online`` replays the
causal tracker of ``streamparse run`` instead (the same ids and recovered rows as the run, with the same
``track.*``). Rewrites ``inst_track``, the rows the tracker adds (recovered, interpolated) and their
pixels; the detected people's rows and pixels never change.
"""

from __future__ import annotations

from pathlib import Path

HELP = ("re-run person tracking on a schema-v2 store's stored people (offline: both ways, interpolation; --online: "
        "as `run` does); rewrites inst_track and the rows a tracker adds, never the detected people")


def add_arguments(p) -> None:
    p.add_argument("store", type=Path, help="schema-v2 store (OUT.zarr)")
    p.add_argument("--set", action="append", default=[], metavar="track.KEY=VALUE",
                   help="tracker parameter (repeatable); defaults: the store's recorded tracker params, else config defaults")
    p.add_argument("--source", action="append", default=None, help="only this source (repeatable; default all)")
    p.add_argument("--online", action="store_true", help="the causal tracker of `streamparse run` (default: offline)")


def run(args) -> int:
    import json

    from streamparse.cli import CLIError
    from streamparse.config import ConfigError, TrackConfig, from_dict, to_dict
    from streamparse.engine.interrupts import Interrupts
    from streamparse.plan import track_kwargs as tracker_kwargs
    from streamparse.tracking.offline import offline_plan, online_plan
    from streamparse.tracking.store import StoreError, iter_frames, open_store, read_tables, source_ids, writer_busy
    from streamparse.tracking.tracker import NAME
    from streamparse.tracking.write import roll_forward, write_plan

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
    import zarr

    from streamparse.store.lock import WriterLock
    from streamparse.store.outputs import OutputError

    try:  # the one writer of the store while it is rewritten
        lock = WriterLock(path).acquire()
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    tracker = {"name": NAME, "params": json.loads(json.dumps(kwargs)), "mode": "online" if args.online else "offline"}
    try:
        root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        for sid in sids:  # an earlier rewrite cut short is finished first
            if roll_forward(path / sid, root[sid]):
                print(f"{sid}: finished an interrupted `streamparse track`")
        plans = {}
        for sid in sids:  # compute everything first: nothing is rewritten if a source fails
            g = root[sid]
            frames = list(iter_frames(g, read_tables(g), grid=kwargs["grid"]))
            plans[sid] = (online_plan if args.online else offline_plan)(frames, kwargs)
        with Interrupts() as intr, intr.critical():  # Ctrl-C / SIGTERM wait for the rewrite to end
            for sid, plan in plans.items():
                g = root[sid]
                res = write_plan(g, path / sid, plan)
                g.attrs["tracker"] = tracker
                print(f"{sid}: {res['instances']} rows ({res['recovered']} recovered, {res['interpolated']} interpolated), "
                      f"{res['tracks']} tracks")
            root.attrs["tracker"] = tracker
    finally:
        lock.release()
    return 0
