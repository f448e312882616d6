"""Checks of an install: can this machine do streamparse's job? (``streamparse doctor``)

Every check is a small function returning one :class:`Check` (or a list of them): a name, ``ok``,
a one-line detail and, when something should change, a one-line fix. ``ok`` with a fix is a
warning (it works, but should change); not ``ok`` is a failure, and the command exits non-zero.

Heavy packages are imported inside the checks that need them (torch, torchvision, kornia, av,
zarr); Ray is never imported or started: its version comes from the package metadata and a
``RAY_ADDRESS`` is probed with one TCP connection under a timeout. Nothing here prints or logs a
Ray token: only where it comes from and whether it is there.

The checks live by subject: ``common`` (:class:`Check` and the metadata helpers), ``install`` (the
Python packages, the weights, the cache folder), ``media`` (PyAV and FFmpeg's codecs), ``cluster``
(Ray, its address and token auth) and ``runner`` (:func:`run_checks`, every check in order). Every
name is importable from ``streamparse.doctor`` as before.
"""

from __future__ import annotations

from streamparse.doctor.cluster import RAY_DEFAULT_PORT, _ray_target, check_ray, check_ray_address, check_ray_auth
from streamparse.doctor.common import Check
from streamparse.doctor.install import (check_cache_dir, check_dependencies, check_kornia, check_object_storage,
                                        check_python, check_runtimes, check_streamparse, check_torch,
                                        check_torchvision, check_weights, check_zarr)
from streamparse.doctor.media import AV_FIX, DECODERS, RENDER_ENCODER, _codec, check_av
from streamparse.doctor.runner import run_checks

# _codec and _ray_target: the small rules the tests check in-process
__all__ = ["AV_FIX", "DECODERS", "RAY_DEFAULT_PORT", "RENDER_ENCODER", "Check", "check_av", "check_cache_dir",
           "check_dependencies", "check_kornia", "check_object_storage", "check_python", "check_ray",
           "check_ray_address", "check_ray_auth", "check_runtimes", "check_streamparse", "check_torch",
           "check_torchvision", "check_weights", "check_zarr", "run_checks", "_codec", "_ray_target"]
