"""Checks of the Python install: streamparse itself, the interpreter, the pinned dependencies, torch
(and CUDA), torchvision, kornia, zarr, the optional object-storage and runtime packages, the weights
and the cache folder. Heavy packages are imported inside the checks that need them."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import sys
import tempfile
from pathlib import Path

from streamparse.doctor.common import Check, _dist_version, _first_line, _import_check, _pin_note, _pins


def check_streamparse() -> Check:
    import streamparse

    where = str(Path(streamparse.__file__).resolve().parent)
    dist = _dist_version("streamparse")
    if dist is None:
        return Check("streamparse", True, f"{streamparse.__version__} imported from {where} (not an installed distribution)",
                     "pip install . (or the wheel) so that the `streamparse` command and its metadata exist")
    how = "installed"
    try:
        raw = md.distribution("streamparse").read_text("direct_url.json")
        if raw and json.loads(raw).get("dir_info", {}).get("editable"):
            how = "editable install"
    except (OSError, ValueError):
        pass
    if dist != streamparse.__version__:
        return Check("streamparse", True, f"{streamparse.__version__} imported from {where}, but the installed metadata says {dist}",
                     "reinstall streamparse (pip install --force-reinstall the wheel, or pip install -e . in the checkout)")
    return Check("streamparse", True, f"{dist} imported from {where} ({how})")


def check_python() -> Check:
    v = sys.version_info
    detail = f"{v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) != (3, 11):
        return Check("python", False, detail + ": streamparse needs Python 3.11",
                     "create the environment with Python 3.11: python3.11 -m venv .venv")
    return Check("python", True, detail)


def check_dependencies() -> Check:
    """Every exact pin of streamparse's requirements present, at the pinned version."""
    pins = _pins()
    if not pins:
        return Check("dependencies", True, "no streamparse metadata: pins not checked")
    missing, other = [], []
    for dist, want in sorted(pins.items()):
        have = _dist_version(dist)
        if have is None:
            missing.append(f"{dist}=={want}")
        elif have.split("+")[0] != want:
            other.append(f"{dist} {have} (pinned {want})")
    if missing:
        return Check("dependencies", False, "missing: " + ", ".join(missing),
                     "pip install " + " ".join(f"'{m}'" for m in missing))
    if other:
        return Check("dependencies", True, f"{len(pins)} pinned packages; other versions: " + ", ".join(other),
                     "pip install " + " ".join(f"'{d}=={pins[d]}'" for d in sorted(pins) if any(o.startswith(d + " ") for o in other)))
    return Check("dependencies", True, f"{len(pins)} pinned packages at their pinned versions")


def check_torch(require_gpu: bool = False) -> list[Check]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return [Check("torch", False, f"cannot import torch: {_first_line(exc)}", "pip install 'torch==2.14.1'")]
    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build"
    out = [Check("torch", True, f"{torch.__version__} ({build}, {torch.get_num_threads()} CPU threads)",
                 _pin_note("torch", torch.__version__))]
    try:
        available = torch.cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - a broken driver raises here
        available, why = False, _first_line(exc)
    else:
        why = "no CUDA device" if torch.version.cuda else "torch is a CPU build"
    if available:
        names = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            names.append(f"{p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
        bf16 = "yes" if torch.cuda.is_bf16_supported() else "no (use pipeline.amp float16)"
        out.append(Check("cuda", True, f"{len(names)} device(s): {'; '.join(names)}; bf16: {bf16}"))
    elif require_gpu:
        out.append(Check("cuda", False, f"not available: {why}",
                         "install an NVIDIA driver and the CUDA build of torch==2.14.1 (in a container: docker run --gpus all)"))
    else:
        out.append(Check("cuda", True, f"not available ({why}): inference runs on the CPU"))
    return out


def check_torchvision() -> Check:
    return _import_check("torchvision", "torchvision", "torchvision",
                         "pip install 'torch==2.14.1' 'torchvision==0.29.1' (they must be a matching pair)")


def check_kornia() -> Check:
    return _import_check("kornia", "kornia", "kornia", "pip install 'kornia==0.9.0'")


def check_zarr() -> Check:
    return _import_check("zarr", "zarr", "zarr", "pip install 'zarr==3.1.6' 'numcodecs==0.16.6'",
                         extra=lambda m: f"numcodecs {_dist_version('numcodecs') or 'missing'}")


def check_object_storage() -> list[Check]:
    out = []
    for dist, fix in (("fsspec", "pip install 'streamparse[s3]'"), ("s3fs", "pip install 'streamparse[s3]'")):
        if _dist_version(dist) is None:
            out.append(Check(dist, True, "not installed (optional: s3:// inputs and outputs need pip install 'streamparse[s3]')"))
        else:
            out.append(_import_check(dist, dist, dist, fix))
    return out


def check_runtimes() -> list[Check]:
    """Optional inference runtimes: reported, never required."""
    out = []
    version = _dist_version("onnxruntime") or _dist_version("onnxruntime-gpu")
    if version is None:
        out.append(Check("onnxruntime", True, "not installed (optional)"))
    else:
        try:
            import onnxruntime

            out.append(Check("onnxruntime", True, f"{version} (providers: {', '.join(onnxruntime.get_available_providers())})"))
        except Exception as exc:  # noqa: BLE001
            out.append(Check("onnxruntime", False, f"{version} installed but cannot import: {_first_line(exc)}",
                             "pip install --force-reinstall onnxruntime, or uninstall it"))
    version = _dist_version("openvino")
    out.append(Check("openvino", True, version if version else "not installed (optional)"))
    return out


def check_weights(path: str | Path | None = None) -> Check:
    from streamparse.checkpoint import DEFAULT_WEIGHTS, build_from_checkpoint, sha256_file

    shipped = path is None
    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    fix = ("reinstall streamparse: the wheel ships streamparse/weights/" + DEFAULT_WEIGHTS.name if shipped
           else f"replace {path} with a good copy (a streamparse checkpoint: `streamparse export`, "
                f"or `streamparse convert-official` for the authors' files)")
    if not path.is_file():
        return Check("weights", False, f"{'shipped weights' if shipped else 'weights'} not found: {path}", fix)
    try:
        digest = sha256_file(path)
        _, ck = build_from_checkpoint(path)  # torch.load(weights_only=True), then built into its model
    except Exception as exc:  # noqa: BLE001 - CheckpointError, OSError, anything from the build
        why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return Check("weights", False, why if str(path) in why else f"cannot load {path}: {why}", fix)
    return Check("weights", True, f"{path} ({path.stat().st_size / 2**20:.1f} MiB, {ck['model_name']}, "
                 f"{len(ck['class_names'])} classes) sha256 {digest}")


def check_cache_dir() -> Check:
    from streamparse.cache import ENV_VAR, cache_dir_source

    path, source = cache_dir_source()
    fix = f"export {ENV_VAR}=A_WRITABLE_FOLDER (or fix the permissions of {path})"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as f:
            f.write(b"ok")
            f.flush()
        free = os.statvfs(path)
        free_gib = free.f_bavail * free.f_frsize / 2**30
    except OSError as exc:
        return Check("cache dir", False, f"{path} (from {source}) cannot be created or written: {exc.strerror or _first_line(exc)}", fix)
    return Check("cache dir", True, f"{path} (from {source}), writable, {free_gib:.1f} GiB free")
