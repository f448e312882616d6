"""What users install is the product: the wheel.

- The wheel (built from the sdist, as ``python -m build`` does) holds every module of ``streamparse/``,
  ``models/`` and ``pipelines/`` (installed as ``streamparse.models`` / ``streamparse.pipelines``), the
  shipped weights and every preset of ``configs/``, and nothing else at the top; it equals the wheel
  built straight from the tree.
- Installed into a fresh venv outside the checkout, from an empty directory: ``--version``, ``synth`` ->
  ``run`` (with an installed preset, ``--config pipeline_cpu``) -> ``open_result`` -> ``report`` ->
  ``archive`` of two videos, with streamparse imported from the venv's site-packages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from wheelenv import REPO, build_dists, clean_env, make_venv, run

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    return build_dists(tmp_path_factory.mktemp("dists"))


def _contents(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as z:
        return {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist()}


def test_wheel_holds_every_module_the_weights_and_the_presets(dists):
    names = set(_contents(dists["wheel"]))
    missing = []
    for src, dst in (("streamparse", "streamparse"), ("models", "streamparse/models"), ("pipelines", "streamparse/pipelines")):
        for p in (REPO / src).rglob("*.py"):
            if "__pycache__" not in p.parts and f"{dst}/{p.relative_to(REPO / src).as_posix()}" not in names:
                missing.append(str(p.relative_to(REPO)))
    for p in (REPO / "configs").rglob("*.yaml"):
        if f"streamparse/configs/{p.relative_to(REPO / 'configs').as_posix()}" not in names:
            missing.append(str(p.relative_to(REPO)))
    for p in (REPO / "streamparse" / "weights").glob("*.pt"):
        if f"streamparse/weights/{p.name}" not in names:
            missing.append(str(p.relative_to(REPO)))
    assert not missing, f"the wheel lacks {missing}"
    tops = {n.split("/")[0] for n in names}
    assert tops == {"streamparse", f"streamparse-{_version()}.dist-info"}, tops  # no top-level `models`


def test_wheel_from_the_sdist_equals_the_wheel_from_the_tree(dists):
    assert _contents(dists["wheel"]) == _contents(dists["tree_wheel"])
    assert dists["wheel"].name == f"streamparse-{_version()}-py3-none-any.whl"


def _version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory):
    path = tmp_path_factory.mktemp("venv") / "sp-venv"
    make_venv(path, str(dists["wheel"]))
    yield path
    shutil.rmtree(path, ignore_errors=True)  # ~6 GB (torch): not left for pytest's three kept runs


def test_fresh_venv_from_an_empty_directory(venv, tmp_path_factory):
    work = tmp_path_factory.mktemp("user")  # empty, outside the checkout
    env = clean_env(venv, OMP_NUM_THREADS="1")
    sp = [venv / "bin" / "streamparse"]
    assert run([*sp, "--version"], cwd=work, env=env).stdout.strip() == f"streamparse {_version()}"
    where = run([venv / "bin" / "python", "-c", "import streamparse, streamparse.models, streamparse.pipelines.video as v; "
                 "print(streamparse.__file__); print(streamparse.models.__file__)"], cwd=work, env=env).stdout.split()
    site = venv / "lib" / "python3.11" / "site-packages"
    assert all(Path(w).is_relative_to(site) for w in where), where
    run([*sp, "synth", "data", "--format", "cihp", "--num-images", "0", "--videos", "2", "--video-frames", "12",
         "--size", "160x120", "--seed", "5", "--no-progress"], cwd=work, env=env)
    r = run([*sp, "run", "data/videos/video_000.mp4", "--out", "out.zarr", "--config", "pipeline_cpu",
             "--set", "pipeline.torch_threads=1", "--no-progress"], cwd=work, env=env, timeout=600)
    assert "12 frames written" in r.stdout
    table = run([venv / "bin" / "python", "-c", "from streamparse.results import open_result; r = open_result('out.zarr'); import json; "
                 "print(json.dumps({'frames': r.num_frames('video_000'), 'people': len(r.instances('video_000'))}))"],
                cwd=work, env=env).stdout
    got = json.loads(table.strip().splitlines()[-1])
    assert got["frames"] == 12 and got["people"] > 0, got
    run([*sp, "report", "out.zarr", "--video", "data/videos/video_000.mp4", "--out", "report.html"], cwd=work, env=env)
    assert (work / "report.html").stat().st_size > 10_000
    r = run([*sp, "archive", "data/videos", "--out", "arch", "--set", "pipeline.torch_threads=1", "--no-progress"],
            cwd=work, env=env, timeout=600)
    lines = [json.loads(x) for x in (work / "arch" / "index.jsonl").read_text().splitlines()]
    last = {x["video_id"]: x for x in lines}
    assert sorted(last) == ["video_000", "video_001"] and all(x["state"] == "complete" for x in last.values()), last
