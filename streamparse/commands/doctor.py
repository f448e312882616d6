"""`streamparse doctor [--json]`: one screen that says whether this install can do its job.

Exit 0 when every item is fine (warnings included), 1 when some item is broken: then one line per
broken item on stderr, naming the item and its fix. The checks are in ``streamparse.doctor``.
"""

from __future__ import annotations

import sys

HELP = "check this install: Python, torch/CUDA, PyAV codecs, Ray (address, token auth), zarr, weights, cache dir"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="check this checkpoint instead of the shipped weights (loaded with weights_only=True)")
    p.add_argument("--codec", action="append", default=[], metavar="NAME",
                   help="also require this FFmpeg decoder (repeatable), beyond H.264, HEVC, AV1 and VP9")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="probe this Ray address instead of $RAY_ADDRESS (one TCP connection; Ray is not started)")
    p.add_argument("--require-gpu", action="store_true", help="a missing CUDA device is a failure (GPU nodes)")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="network probe timeout in seconds (default 2)")


def _line(text: str) -> str:
    return " ".join(str(text).split())  # every item stays on one line, whatever an exception said


def format_checks(checks) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {_line(c.detail)}")
        if c.fix:
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {_line(c.fix)}")
    return "\n".join(lines)


def run(args) -> int:
    import json
    import time

    from streamparse.doctor import run_checks

    t0 = time.monotonic()
    checks = run_checks(weights=args.weights, codecs=args.codec, ray_address=args.ray_address,
                        require_gpu=args.require_gpu, timeout=max(0.1, args.timeout))
    broken = [c for c in checks if not c.ok]
    warned = [c for c in checks if c.ok and c.fix]
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({"ok": not broken, "failures": len(broken), "warnings": len(warned),
                          "seconds": round(elapsed, 2), "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print("streamparse doctor")
        print(format_checks(checks))
        verdict = "all good" if not broken else f"{len(broken)} broken"
        print(f"{verdict}, {len(warned)} warning(s), {len(checks)} items checked in {elapsed:.1f} s", flush=True)
    for c in broken:
        print(f"streamparse doctor: {c.name}: {_line(c.detail)} -- fix: {_line(c.fix)}", file=sys.stderr)
    return 1 if broken else 0
