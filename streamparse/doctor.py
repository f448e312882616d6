"""Checks of an install: can this machine do streamparse's job? (``streamparse doctor``)

Every check is a small function returning one :class:`Check` (or a list of them): a name, ``ok``,
a one-line detail and, when something should change, a one-line fix. ``ok`` with a fix is a
warning (it works, but should change); not ``ok`` is a failure, and the command exits non-zero.

Heavy packages are imported inside the checks that need them (torch, torchvision, kornia, av,
zarr); Ray is never imported or started: its version comes from the package metadata and a
``RAY_ADDRESS`` is probed with one TCP connection under a timeout. Nothing here prints or logs a
Ray token: only where it comes from and whether it is there.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import io
import json
import os
import socket
import stat
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, NamedTuple
from urllib.parse import urlsplit

# Decoders that a video archive needs. AV1: FFmpeg's own "av1" decoder only drives hardware
# decoders, so a software one (dav1d or libaom) must be there.
DECODERS: list[tuple[str, tuple[str, ...]]] = [
    ("H.264", ("h264",)),
    ("HEVC", ("hevc",)),
    ("AV1", ("libdav1d", "libaom-av1")),
    ("VP9", ("vp9", "libvpx-vp9")),
]
RENDER_ENCODER = "libx264"  # what `streamparse render` encodes with (streamparse.results.video)
AV_FIX = "pip install --force-reinstall 'av==18.1.0' (the PyPI wheel bundles an FFmpeg with these codecs)"
RAY_DEFAULT_PORT = 6379


class Check(NamedTuple):
    name: str
    ok: bool
    detail: str
    fix: str = ""  # empty: nothing to do; set on an ok check: a warning

    @property
    def status(self) -> str:
        return "FAIL" if not self.ok else ("warn" if self.fix else "ok")

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240]}" if text else type(exc).__name__


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _pins() -> dict[str, str]:
    """``name -> version`` of streamparse's exact (``==``) requirements, extras excluded."""
    try:
        reqs = md.requires("streamparse") or []
    except md.PackageNotFoundError:
        return {}
    pins = {}
    for req in reqs:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name, eq, ver = spec.partition("==")
        if eq:
            pins[name.split("[")[0].strip().lower()] = ver.strip()
    return pins


def _pin_note(dist: str, installed: str | None) -> str:
    want = _pins().get(dist)
    if want and installed and installed.split("+")[0] != want:
        return f"pip install '{dist}=={want}' (streamparse is tested with {want})"
    return ""


def _import_check(name: str, module: str, dist: str, fix: str, extra: Callable[[object], str] | None = None) -> Check:
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Check(name, False, f"cannot import {module}: {_first_line(exc)}", fix)
    version = getattr(mod, "__version__", None) or _dist_version(dist) or "?"
    detail = str(version)
    if extra:
        detail += f" ({extra(mod)})"
    return Check(name, True, detail, _pin_note(dist, _dist_version(dist)))


# --- the checks ------------------------------------------------------------------------------


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


def _codec(name: str, mode: str):
    """FFmpeg's codec ``name`` (``"r"`` decoder, ``"w"`` encoder) through PyAV, or None when absent."""
    import av

    try:
        return av.Codec(name, mode)
    except Exception:  # noqa: BLE001 - UnknownCodecError, or a build that lacks it
        return None


def _h264_roundtrip() -> str:
    """Encode 4 small frames with libx264 into an in-memory MP4 and decode them back; '' when fine."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as oc:
        st = oc.add_stream(RENDER_ENCODER, rate=25)
        st.width, st.height, st.pix_fmt = 64, 64, "yuv420p"
        for i in range(4):
            img = np.full((64, 64, 3), 40 * i, np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                oc.mux(pkt)
        for pkt in st.encode():
            oc.mux(pkt)
    buf.seek(0)
    with av.open(buf, "r") as ic:
        n = sum(1 for _ in ic.decode(video=0))
    return "" if n == 4 else f"decoded {n} of 4 frames"


def check_av(extra_decoders: Iterable[str] = ()) -> list[Check]:
    try:
        import av
    except Exception as exc:  # noqa: BLE001
        return [Check("pyav", False, f"cannot import av: {_first_line(exc)}", "pip install 'av==18.1.0'")]
    ffmpeg = getattr(av, "ffmpeg_version_info", "?")
    out = [Check("pyav", True, f"{av.__version__} (FFmpeg {ffmpeg})", _pin_note("av", av.__version__))]
    for label, names in DECODERS:
        found = [n for n in names if _codec(n, "r") is not None]
        if found:
            out.append(Check(f"decode {label}", True, f"decoder {found[0]}"))
        else:
            out.append(Check(f"decode {label}", False, f"FFmpeg has no {label} decoder ({' / '.join(names)})", AV_FIX))
    for name in extra_decoders:
        ok = _codec(name, "r") is not None
        out.append(Check(f"decode {name}", ok, f"decoder {name}" if ok else f"FFmpeg has no decoder named {name!r}",
                         "" if ok else f"install a PyAV/FFmpeg build with the {name} decoder"))
    name = "encode H.264 (render)"
    if _codec(RENDER_ENCODER, "w") is None:
        out.append(Check(name, False, f"FFmpeg has no {RENDER_ENCODER} encoder: `streamparse render` cannot write MP4s", AV_FIX))
    else:
        try:
            why = _h264_roundtrip()
        except Exception as exc:  # noqa: BLE001
            why = _first_line(exc)
        out.append(Check(name, not why, f"{RENDER_ENCODER}: 4 frames encoded and decoded back" if not why
                         else f"{RENDER_ENCODER} round trip failed: {why}", AV_FIX if why else ""))
    return out


def check_ray() -> Check:
    version = _dist_version("ray")
    if version is None:
        return Check("ray", False, "not installed", "pip install 'ray[default]==2.60.0'")
    import importlib.util

    jobs = all(importlib.util.find_spec(m) is not None for m in ("aiohttp", "aiohttp_cors"))
    detail = f"{version} (job submission: {'yes' if jobs else 'no'})"
    fix = _pin_note("ray", version)
    if not jobs:
        fix = "pip install 'ray[default]==2.60.0' (`streamparse submit` and the job server need ray[default])"
    return Check("ray", True, detail, fix)


def _ray_target(address: str) -> tuple[str, int] | str:
    """(host, port) to probe for a Ray address, or a message when there is nothing to probe."""
    addr = address.strip()
    if addr == "local":
        return "local: a new local Ray is started"
    if addr == "auto":
        f = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            addr = f.read_text().strip()
        except OSError:
            addr = ""
        if not addr:
            raise ValueError(f"'auto' but no local Ray cluster is running (no {f})")
    parts = urlsplit(addr if "://" in addr else "tcp://" + addr)
    default = {"http": 80, "https": 443}.get(parts.scheme, RAY_DEFAULT_PORT if parts.scheme == "tcp" else 10001)
    try:
        port = parts.port or default
    except ValueError as exc:
        raise ValueError(f"bad address {address!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"bad address {address!r}: no host")
    return parts.hostname, port


def _tcp_probe(host: str, port: int, timeout: float) -> str:
    """Connect once; '' when something accepted, else why not. Never waits much past ``timeout``
    (the name lookup too runs under it)."""
    result = ["timed out after %.1f s" % timeout]

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = ""
        except OSError as exc:
            result[0] = exc.strerror or _first_line(exc)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0]


def check_ray_address(address: str | None = None, timeout: float = 2.0) -> Check:
    src = "--ray-address" if address else "$RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address:
        return Check("ray address", True, "RAY_ADDRESS not set: each run starts a local Ray")
    fix = "start the cluster (ray start --head, ray up), check the address and firewall, or unset RAY_ADDRESS"
    try:
        target = _ray_target(address)
    except ValueError as exc:
        return Check("ray address", False, f"{src}: {exc}", fix)
    if isinstance(target, str):
        return Check("ray address", True, f"{src}={address}: {target}")
    host, port = target
    t0 = time.monotonic()
    why = _tcp_probe(host, port, timeout)
    if why:
        return Check("ray address", False, f"{src}={address}: {host}:{port} not reachable ({why})", fix)
    return Check("ray address", True, f"{src}={address}: {host}:{port} accepts connections ({(time.monotonic() - t0) * 1000:.0f} ms)")


def check_ray_auth(address: str | None = None) -> Check:
    """Ray's token authentication as this environment sets it up (RAY_AUTH_MODE, the token's
    source). The token itself is never read into the report."""
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    remote = bool(address or os.environ.get("RAY_ADDRESS", "") not in ("", "local"))
    if mode not in ("", "token", "disabled"):
        return Check("ray auth", False, f"RAY_AUTH_MODE={mode!r} is not a mode Ray knows (token, disabled)",
                     "export RAY_AUTH_MODE=token")
    if os.environ.get("RAY_AUTH_TOKEN"):
        source, where = "$RAY_AUTH_TOKEN", None
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source, where = "$RAY_AUTH_TOKEN_PATH", Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser()
    else:
        source, where = "~/.ray/auth_token", Path.home() / ".ray" / "auth_token"
    token_ok, token_note, loose = True, "", False
    if where is not None:
        try:
            st = where.stat()
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(f"{where} is not a file")
            with open(where, "rb") as f:
                empty = not f.read(4096).strip()
            loose = bool(st.st_mode & 0o077)
            token_ok, token_note = (not empty), (f"token file {where} is empty" if empty else f"token file {where} ({source})")
        except OSError as exc:
            token_ok, token_note = False, f"no readable token file at {where} ({source}: {exc.strerror or exc})"
    else:
        token_note = "token from $RAY_AUTH_TOKEN (environment)"
    if mode == "disabled":
        return Check("ray auth", True, "RAY_AUTH_MODE=disabled: token authentication is off",
                     "unset RAY_AUTH_MODE or export RAY_AUTH_MODE=token: without it anyone who reaches the "
                     "cluster's ports can run code on it")
    if mode == "token":
        if not token_ok:
            return Check("ray auth", False, f"RAY_AUTH_MODE=token but {token_note}",
                         "put the cluster's token in a file readable only by you (chmod 600) and export "
                         "RAY_AUTH_TOKEN_PATH=FILE; for a new local cluster: ray get-auth-token --generate")
        if loose:
            return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}, readable by others", f"chmod 600 {where}")
        if where is None:
            return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}",
                         "prefer a file: export RAY_AUTH_TOKEN_PATH=FILE and unset RAY_AUTH_TOKEN "
                         "(environment variables reach child processes and logs)")
        return Check("ray auth", True, f"RAY_AUTH_MODE=token, {token_note}")
    # unset: Ray (>= 2.59) turns token auth on for clusters it starts itself
    have = token_note if token_ok else "no token yet (a local Ray makes one in ~/.ray/auth_token)"
    if token_ok and loose:
        return Check("ray auth", True, f"RAY_AUTH_MODE not set; {have}, readable by others", f"chmod 600 {where}")
    if remote:
        return Check("ray auth", True, f"RAY_AUTH_MODE not set; {have}",
                     "for a cluster with token auth: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=FILE")
    return Check("ray auth", True, f"RAY_AUTH_MODE not set (local Ray starts with token auth); {have}")


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


# --- running them ----------------------------------------------------------------------------


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
