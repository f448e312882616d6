"""`streamparse doctor`: a healthy install exits 0 and lists every item; each broken item (weights,
a codec, RAY_ADDRESS, the cache dir, Ray token auth) exits non-zero with one line naming it and its fix.

The CLI runs as a subprocess (the real entry point); the small rules (address parsing, token
sources, the cache folder) are also checked in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamparse import doctor
from streamparse.cache import cache_dir, cache_dir_source
from streamparse.checkpoint import DEFAULT_WEIGHTS, sha256_file

RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
ITEMS = ["streamparse", "python", "dependencies", "torch", "cuda", "torchvision", "kornia", "pyav", "decode H.264",
         "decode HEVC", "decode AV1", "decode VP9", "encode H.264 (render)", "ray", "ray address", "ray auth", "zarr",
         "fsspec", "s3fs", "onnxruntime", "openvino", "weights", "cache dir"]
TOKEN = "sp-test-token-4f1d9a0c7e2b"


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARS and k != "STREAMPARSE_CACHE_DIR"}
    env.update({"HOME": str(tmp_path / "home"), "STREAMPARSE_CACHE_DIR": str(tmp_path / "cache"), **extra})
    return env


def _doctor(args: list[str], env: dict, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "streamparse", "doctor", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_decoder() -> str:
    """A real FFmpeg decoder name that this PyAV build lacks (hardware and optional library decoders)."""
    for name in ("h264_cuvid", "hevc_cuvid", "h264_qsv", "libaom-av1", "libopenh264"):
        if doctor._codec(name, "r") is None:
            return name
    pytest.skip("this FFmpeg build has every candidate decoder")


def test_healthy_install_exits_0_and_lists_every_item(tmp_path):
    token = tmp_path / "secret" / "ray_token"
    token.parent.mkdir()
    token.write_text(TOKEN)
    token.chmod(0o600)
    t0 = time.monotonic()
    r = _doctor([], _env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    for item in ITEMS:
        assert any(line.split(None, 1)[0] in ("ok", "warn") and line.split(None, 1)[1].startswith(item + "  ")
                   for line in lines[1:-1] if line.strip()), item
    assert "FAIL" not in r.stdout and "all good" in lines[-1]
    assert sha256_file(DEFAULT_WEIGHTS) in r.stdout
    assert f"token file {token}" in r.stdout
    assert TOKEN not in r.stdout  # the token's source is reported, never the token
    assert (tmp_path / "cache").is_dir()
    print(f"doctor took {time.monotonic() - t0:.1f} s")


def test_broken_items_each_one_line_with_its_fix(tmp_path):
    """A truncated weights file, a decoder FFmpeg lacks, an unreachable RAY_ADDRESS, a cache dir under
    a regular file: exit 1, one stderr line per item naming it and its fix; the rest stays ok."""
    weights = tmp_path / "truncated.pt"
    weights.write_bytes(DEFAULT_WEIGHTS.read_bytes()[: DEFAULT_WEIGHTS.stat().st_size // 2])
    (tmp_path / "afile").write_text("not a folder")
    codec, port = _missing_decoder(), _closed_port()
    env = _env(tmp_path, RAY_ADDRESS=f"127.0.0.1:{port}", STREAMPARSE_CACHE_DIR=str(tmp_path / "afile" / "cache"))
    r = _doctor(["--json", "--weights", str(weights), "--codec", codec, "--timeout", "1"], env)
    assert r.returncode == 1, r.stdout + r.stderr
    report = json.loads(r.stdout)
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "FAIL"}
    assert set(failed) == {"weights", f"decode {codec}", "ray address", "cache dir"}, failed
    assert report["ok"] is False and report["failures"] == 4
    errs = r.stderr.strip().splitlines()
    assert len(errs) == 4, r.stderr
    expect = {
        "weights": (str(weights), "replace"),
        f"decode {codec}": (codec, "install"),
        "ray address": (f"127.0.0.1:{port} not reachable", "unset RAY_ADDRESS"),
        "cache dir": ("cannot be created or written", "STREAMPARSE_CACHE_DIR="),
    }
    for name, (what, fix) in expect.items():
        line = next(e for e in errs if e.startswith(f"streamparse doctor: {name}: "))
        assert what in line and " -- fix: " in line and fix in line.split(" -- fix: ")[1], line
    ok = {c["name"] for c in report["checks"] if c["ok"]}
    assert {"torch", "decode H.264", "encode H.264 (render)", "zarr"} <= ok


def test_h264_missing_from_ffmpeg(tmp_path):
    """An FFmpeg without H.264 (as some distribution builds are): PyAV's codec lookup for h264 and
    libx264 fails as it does there (UnknownCodecError); both the decoder and render's encoder are named."""
    code = (
        "import sys, av\n"
        "from av.codec.codec import UnknownCodecError\n"
        "real = av.Codec\n"
        "def lookup(name, mode='r'):\n"
        "    if name in ('h264', 'libx264'):\n"
        "        raise UnknownCodecError(name)\n"
        "    return real(name, mode)\n"
        "av.Codec = lookup\n"
        "from streamparse.cli import main\n"
        "sys.exit(main(['doctor']))\n"
    )
    r = _doctor([], _env(tmp_path), code=code)
    assert r.returncode == 1, r.stdout + r.stderr
    errs = r.stderr.strip().splitlines()
    assert [e.split(":")[1].strip() for e in errs] == ["decode H.264", "encode H.264 (render)"], errs
    assert all("fix: pip install --force-reinstall 'av==" in e for e in errs)
    assert "FAIL  decode H.264" in r.stdout and "ok    decode HEVC" in r.stdout


# --- the rules, in-process -----------------------------------------------------------------


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("STREAMPARSE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir_source() == (tmp_path / "home" / ".cache" / "streamparse", "~/.cache")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert cache_dir() == tmp_path / "home" / ".cache" / "streamparse"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "streamparse"
    monkeypatch.setenv("STREAMPARSE_CACHE_DIR", str(tmp_path / "own"))
    assert cache_dir_source() == (tmp_path / "own", "$STREAMPARSE_CACHE_DIR")
    assert not (tmp_path / "own").exists()
    assert cache_dir(create=True).is_dir()
    assert doctor.check_cache_dir().ok


def test_ray_address_forms_and_probe(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert doctor._ray_target("10.0.0.5") == ("10.0.0.5", 6379)
    assert doctor._ray_target("head:6380") == ("head", 6380)
    assert doctor._ray_target("ray://head:10001") == ("head", 10001)
    assert doctor._ray_target("http://127.0.0.1:8265") == ("127.0.0.1", 8265)
    assert doctor._ray_target("https://ray.example") == ("ray.example", 443)
    assert doctor._ray_target("[::1]:6379") == ("::1", 6379)
    assert isinstance(doctor._ray_target("local"), str)
    with pytest.raises(ValueError):
        doctor._ray_target("http://:99")
    assert doctor.check_ray_address().ok  # not set: nothing to probe
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        port = srv.getsockname()[1]
        c = doctor.check_ray_address(f"http://127.0.0.1:{port}", timeout=1.0)
        assert c.ok and "accepts connections" in c.detail
        srv.accept()[0].close()  # drain the probe's connection from the accept queue
        # a full accept queue: the kernel drops the SYN and connect() waits; the probe gives up in time
        filler = socket.create_connection(("127.0.0.1", port), timeout=1)
        t0 = time.monotonic()
        c = doctor.check_ray_address(f"127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - t0 < 2.0
        filler.close()
    assert not c.ok and "not reachable" in c.detail and c.fix


def test_ray_auth_sources(tmp_path, monkeypatch):
    for k in RAY_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    c = doctor.check_ray_auth()
    assert c.ok and not c.fix and "not set" in c.detail
    home_token = tmp_path / ".ray" / "auth_token"  # Ray's default place, readable by others: a warning
    home_token.parent.mkdir()
    home_token.write_text(TOKEN)
    home_token.chmod(0o644)
    c = doctor.check_ray_auth()
    assert c.ok and c.fix == f"chmod 600 {home_token}" and TOKEN not in c.detail
    home_token.unlink()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # token auth on, no token anywhere: broken
    c = doctor.check_ray_auth()
    assert not c.ok and "RAY_AUTH_TOKEN_PATH" in c.fix and "get-auth-token --generate" in c.fix
    tok = tmp_path / "tok"
    tok.write_text(TOKEN)
    tok.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tok))
    c = doctor.check_ray_auth()
    assert c.ok and c.fix == f"chmod 600 {tok}" and TOKEN not in c.detail
    tok.chmod(0o600)
    assert doctor.check_ray_auth() == ("ray auth", True, f"RAY_AUTH_MODE=token, token file {tok} ($RAY_AUTH_TOKEN_PATH)", "")
    tok.write_text("")
    assert not doctor.check_ray_auth().ok
    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)  # works, but a warning: prefer a file
    c = doctor.check_ray_auth()
    assert c.ok and "RAY_AUTH_TOKEN_PATH" in c.fix and TOKEN not in c.detail + c.fix
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    c = doctor.check_ray_auth()
    assert c.ok and c.status == "warn" and "RAY_AUTH_MODE=token" in c.fix
    monkeypatch.setenv("RAY_AUTH_MODE", "tokn")
    assert not doctor.check_ray_auth().ok


def test_weights_check_in_process(tmp_path):
    c = doctor.check_weights()
    assert c.ok and sha256_file(DEFAULT_WEIGHTS) in c.detail
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    c = doctor.check_weights(junk)
    assert not c.ok and str(junk) in c.detail and c.fix
    c = doctor.check_weights(tmp_path / "absent.pt")
    assert not c.ok and "not found" in c.detail


def test_cuda_item_on_a_gpu_machine(monkeypatch):
    """The CUDA branch (no GPU here): device names, compute capability, memory and bf16 as torch reports them."""
    import types

    import torch

    props = types.SimpleNamespace(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda = {c.name: c for c in doctor.check_torch(require_gpu=True)}["cuda"]
    assert cuda.ok and not cuda.fix
    assert cuda.detail == ("2 device(s): NVIDIA H100 80GB HBM3 (sm_90, 80 GiB); NVIDIA H100 80GB HBM3 (sm_90, 80 GiB); "
                           "bf16: yes")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cuda = {c.name: c for c in doctor.check_torch(require_gpu=True)}["cuda"]
    assert not cuda.ok and "--gpus all" in cuda.fix
