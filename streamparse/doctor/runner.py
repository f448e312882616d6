"""Running every check of ``streamparse doctor`` in the order shown; a check that raises becomes a
failure naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from streamparse.doctor.cluster import check_ray, check_ray_address, check_ray_auth
from streamparse.doctor.common import Check, _first_line
from streamparse.doctor.install import (check_cache_dir, check_dependencies, check_kornia, check_object_storage,
                                        check_python, check_runtimes, check_streamparse, check_torch,
                                        check_torchvision, check_weights, check_zarr)
from streamparse.doctor.media import check_av


def run_checks(*, weights: str | Path | None = None, codecs: Iterable[str] = (), ray_address: str | None = None,
               require_gpu: bool = False, timeout: float = 2.0) -> list[Check]:
    """Every check, in the order shown. A check that raises becomes a failure naming it."""
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("streamparse", check_streamparse),
        ("python", check_python),
        ("dependencies", check_dependencies),
        ("torch", lambda: check_torch(require_gpu)),
        ("torchvision", check_torchvision),
        ("kornia", check_kornia),
        ("pyav", lambda: check_av(codecs)),
        ("ray", check_ray),
        ("ray address", lambda: check_ray_address(ray_address, timeout)),
        ("ray auth", lambda: check_ray_auth(ray_address)),
        ("zarr", check_zarr),
        ("object storage", check_object_storage),
        ("runtimes", check_runtimes),
        ("weights", lambda: check_weights(weights)),
        ("cache dir", check_cache_dir),
    ]
    out: list[Check] = []
    for name, fn in steps:
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 - the doctor itself must not crash on a broken install
            res = Check(name, False, f"the check failed: {_first_line(exc)}", "report this with `streamparse doctor --json`")
        out.extend(res if isinstance(res, list) else [res])
    return out
