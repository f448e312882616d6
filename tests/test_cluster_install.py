"""`streamparse submit` from a wheel-installed venv to a two-node loopback cluster whose nodes run on a
venv with the dependencies but NOT streamparse (a node that only has what an image or a runtime_env
would give it), with Ray's token authentication on (the session's token, tests/conftest.py):

- the job runs on the cluster's own Python (the nodes' venv is never on PATH, never activated), the
  package travels as py_modules from the installed wheel, and the stores equal a local `archive` of
  the same videos made with the same wheel;
- a submit with a wrong token is refused in one line, and nothing is written;
- a node whose environment lacks a dependency ends the job with one line naming the package and the node.

Slow (~6 min: two venvs, a cluster start, three jobs).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from archive_helpers import TINY, assert_groups_equal, open_group, set_args
from videos import make_video
from wheelenv import build_dists, clean_env, make_venv, wheel_requirements

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(3000)]

CFG = TINY + ["model.input_size=[96,96]"]
VIDEOS = {"a": (40, 48, 64), "b": (30, 64, 80), "c": (25, 32, 48)}


@pytest.fixture(scope="module")
def venvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("install")
    dists = build_dists(d)
    client = d / "client"
    make_venv(client, str(dists["wheel"]))
    nodes = d / "nodes"
    make_venv(nodes, *wheel_requirements(dists["wheel"]))
    r = subprocess.run([nodes / "bin" / "python", "-c", "import streamparse"], capture_output=True, text=True, cwd=d)
    assert r.returncode != 0 and "No module named 'streamparse'" in r.stderr  # the nodes lack streamparse
    yield {"client": client, "nodes": nodes}
    shutil.rmtree(d, ignore_errors=True)  # two venvs of ~6 GB each (torch)


@pytest.fixture(scope="module")
def cluster(venvs):
    from raycluster import LoopbackCluster

    c = LoopbackCluster(head_cpus=2, node_cpus=1, python=str(venvs["nodes"] / "bin" / "python"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("vids")
    for name, (n, h, w) in VIDEOS.items():
        make_video(d / f"{name}.mp4", n=n, h=h, w=w)
    return d


def sp(venv, *args, env_extra=None, timeout=900):
    """The wheel-installed `streamparse` of ``venv``, run from an empty folder."""
    cwd = venv.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    env = clean_env(venv, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([str(venv / "bin" / "streamparse"), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


def submit(venvs, cluster, vids, out, env_extra=None):
    return sp(venvs["client"], "submit", "--address", cluster.address, "--follow", "--", "archive", vids, "--out", out,
              "--checkpoint", "none", "--no-progress", *set_args(CFG), env_extra=env_extra)


def test_submit_from_the_wheel_to_nodes_without_streamparse_equals_local_archive(venvs, cluster, vids, tmp_path):
    r = submit(venvs, cluster, vids, tmp_path / "job")
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    from streamparse.commands.submit import RAY_LINE

    noise = [ln for ln in (r.stdout + r.stderr).splitlines() if RAY_LINE.match(ln) or "core_worker" in ln or "(raylet)" in ln]
    assert not noise, noise  # a quiet terminal: the job's own lines only
    local = sp(venvs["client"], "archive", vids, "--out", tmp_path / "local", "--checkpoint", "none", "--no-progress",
               *set_args(CFG))
    assert local.returncode == 0, local.stderr[-3000:]
    for name in VIDEOS:
        assert_groups_equal(open_group(tmp_path / "job" / f"{name}.zarr", name),
                            open_group(tmp_path / "local" / f"{name}.zarr", name), what=name)
    for out in ("job", "local"):  # the job's driver and workers read the same version as the wheel
        last = {x["video_id"]: x for x in map(json.loads, (tmp_path / out / "index.jsonl").read_text().splitlines())}
        assert all(x["state"] == "complete" for x in last.values()) and len(last) == len(VIDEOS)
    import zarr

    v = [zarr.open_group(str(tmp_path / o / "a.zarr"), mode="r").attrs["streamparse_version"] for o in ("job", "local")]
    assert v[0] == v[1] and v[0] != "0+unknown", v


def test_submit_with_a_wrong_token_is_refused_in_one_line(venvs, cluster, vids, tmp_path):
    bad = tmp_path / "wrong_token"
    bad.write_text("0123456789abcdef" * 4)
    out = tmp_path / "never"
    r = submit(venvs, cluster, vids, out, env_extra={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(bad)})
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot submit" in lines[0] and ("uthentication" in lines[0] or "token" in lines[0]), lines
    assert not out.exists()


def test_a_node_lacking_a_dependency_ends_the_job_with_one_line(venvs, cluster, vids, tmp_path):
    nodes_py = venvs["nodes"] / "bin" / "python"
    subprocess.run([nodes_py, "-m", "pip", "uninstall", "-q", "-y", "zarr"], check=True, capture_output=True)
    try:
        r = submit(venvs, cluster, vids, tmp_path / "job")
    finally:
        subprocess.run([nodes_py, "-m", "pip", "install", "-q", "--no-deps", "zarr==3.1.6"], capture_output=True)
    assert r.returncode != 0
    named = [ln for ln in (r.stdout + r.stderr).splitlines() if "lacks the package 'zarr'" in ln]
    assert len(named) == 1 and "on node" in named[0] and str(venvs["nodes"]) in named[0], (r.stdout[-3000:], r.stderr[-2000:])
    assert "Traceback" not in r.stdout + r.stderr
