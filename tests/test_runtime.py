"""Inference runtimes (issue 28): OpenVINO / ONNX Runtime engines for the dense heads, the export cache,
auto selection, fallbacks, and parity of their label maps with torch's."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from golden import make_videos

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

TINY = ["model.name=uniparser_tiny", "model.input_size=[64,96]", "model.center_thresh=0.0", "model.max_instances=4",
        "model.mask_thresh=0.2", "model.merge_cos=1.01"]
REPO = Path(__file__).resolve().parents[1]


def predictor(overrides: list[str], checkpoint: str | None = "default", cache: Path | None = None):
    from streamparse.config import load_config
    from streamparse.engine.factory import build_predictor

    extra = [f"model.runtime_cache={cache}"] if cache else []
    return build_predictor(load_config(overrides=overrides + extra), checkpoint=checkpoint, device="cpu")


def parse_video(pred, path: str) -> list:
    from streamparse.sources import FileSource

    with FileSource(path) as src:
        return [pred.parse_batch(b) for b in src.batches(4)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One export cache for the module (the shipped weights are exported once per runtime)."""
    return tmp_path_factory.mktemp("rt-cache")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[str]:
    return make_videos(tmp_path_factory.mktemp("rt-videos"))


# ----------------------------------------------------------------------------- config, imports, packages
def test_importing_streamparse_imports_no_runtime():
    code = ("import sys, streamparse, streamparse.runtime, streamparse.config, streamparse.plan, streamparse.engine.predictor\n"
            "bad = [m for m in ('openvino', 'onnxruntime', 'onnx', 'nncf') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_an_actors_imports_stay_light():
    """What every inference actor imports before its first batch: the model without ``torch._dynamo``
    (torchvision's roi_align asks for it at import, ~1 s), and the installed runtimes found without
    importing onnx (~0.5 s); dynamo still loads for real afterwards (exports, torch.compile)."""
    code = ("import sys\n"
            "from streamparse.models import build_model\n"
            "from streamparse.runtime import available_runtimes\n"
            "assert 'torch._dynamo' not in sys.modules\n"
            "found = available_runtimes()\n"
            "assert found == ['torch', 'openvino', 'onnxruntime'], found\n"
            "bad = [m for m in ('onnx', 'onnxscript', 'onnxruntime') if m in sys.modules]\n"
            "assert not bad, bad\n"
            "import torch._dynamo.utils as du\n"
            "ra = sys.modules['torchvision.ops.roi_align']  # (the attribute is the function)\n"
            "assert hasattr(du, 'counters') and hasattr(sys.modules['torch._dynamo'], 'optimize')\n"
            "assert ra.is_compile_supported('cpu') == du.is_compile_supported('cpu')\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_config_checks_runtime_and_precision():
    from streamparse.config import ConfigError, load_config

    assert load_config().model.runtime == "auto" and load_config().model.precision == "auto"
    with pytest.raises(ConfigError, match="model.runtime must be one of"):
        load_config(overrides=["model.runtime=tensorrt"])
    with pytest.raises(ConfigError, match="model.precision=bf16 needs model.runtime openvino or auto"):
        load_config(overrides=["model.runtime=torch", "model.precision=bf16"])
    with pytest.raises(ConfigError, match="model.precision=int8 needs model.runtime openvino"):
        load_config(overrides=["model.runtime=onnxruntime", "model.precision=int8"])


@pytest.mark.parametrize("runtime,module,extra", [("openvino", "openvino", "openvino"), ("onnxruntime", "onnxruntime", "onnx")])
def test_missing_package_is_one_line_before_anything_starts(tmp_path, videos, runtime, module, extra):
    """The package blocked in a fresh interpreter: `streamparse run` says which extra to install, in one
    line, exit 2, and creates no store (Ray never starts)."""
    out = tmp_path / "o.zarr"
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{module!r}] = None  # import {module} fails as if it were not installed
        from streamparse.cli import main
        sys.exit(main(["run", {videos[0]!r}, "--out", {str(out)!r}, "--set", "model.runtime={runtime}", "--no-progress"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"model.runtime={runtime} needs {module}" in lines[0] and f"pip install 'streamparse[{extra}]'" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- fp32: identical label maps
def _assert_same_parsings(want: list, got: list, what: str) -> None:
    assert sum(int(b.inst_id.size) for b in want) > 0  # people were found
    for a, b in zip(want, got, strict=True):
        for name in ("part", "instance", "inst_offset", "inst_id", "inst_bbox", "inst_area", "inst_part_area", "inst_part_rgb"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=f"{what} {name}")
        np.testing.assert_allclose(a.inst_score, b.inst_score, atol=1e-4)


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_fp32_label_maps_identical_to_torch_on_a_test_video(cache, videos, runtime):
    """The shipped weights on a golden test video (256 x 256, 12 frames; input size 256 x 256: one ONNX
    export): every array of every ParsingBatch is the same as torch's. (The run default, through the
    pipeline, on both golden videos: the slow test below.)"""
    size = ["model.input_size=[256,256]"]
    ref = predictor(size + ["model.runtime=torch"])
    pred = predictor(size + [f"model.runtime={runtime}", "model.precision=fp32"], cache=cache)
    assert pred.info()["runtime"]["runtime"] == runtime and pred.info()["runtime"]["precision"] == "fp32"
    _assert_same_parsings(parse_video(ref, videos[1]), parse_video(pred, videos[1]), runtime)


@pytest.mark.slow  # ~2 min: the Ray pipeline on both golden videos, per runtime
@pytest.mark.ray
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_fp32_pipeline_stores_the_golden_bytes(ray_runtime, tmp_path, cache, runtime):
    """`streamparse run` with model.runtime=<runtime> fp32 stores the label maps and instance table recorded
    for torch (tests/golden_v1.json, the shipped weights at the pipeline default) on both golden videos."""
    import torch

    from golden import COMMON, RECORD, store_checksums
    from streamparse.config import load_config
    from streamparse.pipelines.video import run

    rec = json.loads(RECORD.read_text())
    if torch.backends.cpu.get_cpu_capability() != rec["cpu_capability"]:
        pytest.skip(f"golden bytes recorded on a {rec['cpu_capability']} CPU")
    videos = make_videos(tmp_path)
    cfg = load_config(overrides=COMMON + [f"model.runtime={runtime}", "model.precision=fp32", f"model.runtime_cache={cache}"])
    run(cfg, videos, tmp_path / "o.zarr", checkpoint=None, progress=False)
    got = store_checksums(tmp_path / "o.zarr")
    for sid, arrays in rec["cases"]["shipped_default"].items():
        for name, digest in arrays.items():
            if name == "inst_score":  # float centre scores differ in the last bits (within 1e-4: the test above)
                continue
            assert got[sid][name] == digest, f"{runtime}: {sid}/{name} differs from torch's recorded output"


# ----------------------------------------------------------------------------- bf16 / int8: bounded agreement
def _agreement(pred, ref, size=(256, 448), n=4):
    from streamparse.runtime.parity import agreement, parity_frames

    frames = parity_frames(size, n)
    part_ref, _, counts_ref = ref.label_maps(frames)
    part, _, counts = pred.label_maps(frames)
    return agreement(part_ref, part, counts_ref, counts)


def test_bf16_agrees_with_torch_on_parity_frames(cache):
    from streamparse.runtime import openvino_engine

    if not openvino_engine.has_bf16():
        pytest.skip("this CPU has no native bf16 (avx512_bf16 / AMX)")
    ref = predictor(["model.runtime=torch"])
    pred = predictor(["model.runtime=openvino", "model.precision=bf16"], cache=cache)
    assert pred.engine.runtime == "openvino" and pred.engine.precision == "bf16"
    ag = _agreement(pred, ref)
    assert sum(ag.people_ref) > 0
    assert ag.part_map >= 0.999 and ag.people == ag.people_ref, ag


def test_openvino_models_do_not_pin_threads(cache):
    """Each compiled OpenVINO model leaves its threads unpinned: actors sharing a node otherwise pin their
    inference threads to the same first core (two single-threaded actors on 2 cores ran on one)."""
    import numpy as np

    from streamparse.runtime import openvino_engine

    precs = ["fp32"] + (["bf16"] if openvino_engine.has_bf16() else [])
    for prec in precs:
        pred = predictor(["model.runtime=openvino", f"model.precision={prec}"], cache=cache)
        assert pred.engine.runtime == "openvino" and pred.engine.precision == prec, pred.engine.note
        pred.predict(np.zeros((2, 64, 96, 3), np.uint8))  # (compiles the model for this input shape)
        reqs = list(pred.engine.requests.values())
        assert reqs
        for req in reqs:
            assert req.get_compiled_model().get_property("ENABLE_CPU_PINNING") is False, prec


@pytest.mark.slow  # ~40 s: NNCF calibration
def test_int8_agrees_with_torch_on_parity_frames(cache):
    ref = predictor(["model.runtime=torch"])
    pred = predictor(["model.runtime=openvino", "model.precision=int8", "model.calibration_frames=16"], cache=cache)
    assert pred.engine.runtime == "openvino" and pred.engine.precision == "int8", pred.engine.note
    ag = _agreement(pred, ref)
    assert sum(ag.people_ref) > 0
    assert ag.part_map >= 0.995 and ag.people == ag.people_ref, ag
    assert pred.engine.check["agreement"]["lost_people_frames"] == 0  # the check at quantisation time


def test_int8_check_refuses_a_model_that_loses_people():
    """The quantisation-time check, on real engines: torch with the shipped weights finds people on the
    parity frames; an engine that finds none there (a random-init network) is refused in one line."""
    from streamparse.models import build_model
    from streamparse.runtime.engines import TorchEngine
    from streamparse.runtime.select import EngineRefused, _Ctx, _int8_check
    from streamparse.runtime.cache import ExportCache

    pred = predictor(["model.runtime=torch"])
    ctx = _Ctx(pred=pred, cache=ExportCache("/nonexistent"), threads=1, calibration="", calibration_frames=1)
    assert sum(ctx.reference()[1]) > 0
    assert _int8_check(ctx, TorchEngine(pred.model))["agreement"]["part_map"] == 1.0
    import torch

    torch.manual_seed(0)
    broken = build_model("uniparser_small", num_classes=20).eval()
    with torch.no_grad():
        broken.center_locator.out.bias.fill_(-20.0)  # no centre above threshold anywhere
    with pytest.raises(EngineRefused, match="finds no people on 4 parity frame"):
        _int8_check(ctx, TorchEngine(broken))


# ----------------------------------------------------------------------------- the export cache
def _entries(cache: Path, prefix: str) -> list[Path]:
    return sorted(p for p in (cache / "exports").glob(f"{prefix}*") if p.is_dir())


def test_cache_is_reused_and_a_truncated_file_is_rebuilt(tmp_path, caplog):
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
    ref = predictor(TINY + ["model.runtime=torch"], checkpoint="none").label_maps(frames)
    first = predictor(TINY + ["model.runtime=openvino", "model.precision=fp32"], checkpoint="none", cache=tmp_path)
    assert first.engine.cache == "built"
    (entry,) = _entries(tmp_path, "openvino-fp32-")
    manifest = json.loads((entry / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.xml", "model.bin"}
    mtimes = {p.name: p.stat().st_mtime_ns for p in entry.iterdir()}
    second = predictor(TINY + ["model.runtime=openvino", "model.precision=fp32"], checkpoint="none", cache=tmp_path)
    assert second.engine.cache == "hit"  # not exported again
    assert {p.name: p.stat().st_mtime_ns for p in entry.iterdir()} == mtimes
    for pred in (first, second):
        got = pred.label_maps(frames)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
    # a truncated weights file: detected by its hash, never loaded, rebuilt
    with open(entry / "model.bin", "r+b") as f:
        f.truncate(entry.joinpath("model.bin").stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="streamparse.runtime.cache"):
        third = predictor(TINY + ["model.runtime=openvino", "model.precision=fp32"], checkpoint="none", cache=tmp_path)
    assert third.engine.cache == "built"
    assert any("discarding" in r.getMessage() and "model.bin does not match its sha256" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(third.label_maps(frames)[0], ref[0])
    # the same weights again (the XML's generated node names may differ between exports)
    assert json.loads((entry / "manifest.json").read_text())["files"]["model.bin"] == manifest["files"]["model.bin"]


def test_a_foreign_cache_entry_is_rebuilt(tmp_path):
    predictor(TINY + ["model.runtime=onnxruntime"], checkpoint="none", cache=tmp_path)
    (entry,) = _entries(tmp_path, "onnxruntime-fp32-")
    man = json.loads((entry / "manifest.json").read_text())
    man["key"]["weights"] = "0" * 64  # an entry made for other weights, copied under this name
    (entry / "manifest.json").write_text(json.dumps(man))
    again = predictor(TINY + ["model.runtime=onnxruntime"], checkpoint="none", cache=tmp_path)
    assert again.engine.cache == "built"
    assert json.loads((entry / "manifest.json").read_text())["key"]["weights"] != "0" * 64


def test_two_processes_exporting_at_once(tmp_path):
    """Two real processes ask for the same (absent) export at the same moment: one exports, the other
    waits on the lock and loads the finished entry; the entry verifies and no temporary folder is left."""
    go = tmp_path / "go"
    code = textwrap.dedent(f"""
        import json, os, sys, time
        sys.path.insert(0, {str(REPO / 'tests')!r})
        from test_runtime import TINY, predictor
        import streamparse.runtime.openvino_engine  # imports done before the start line
        open({str(tmp_path)!r} + f"/ready-{{os.getpid()}}", "w").close()
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        p = predictor(TINY + ["model.runtime=openvino", "model.precision=fp32"], checkpoint="none", cache={str(tmp_path / 'c')!r})
        print(json.dumps(p.engine.info()))
    """)
    env = {**os.environ, "STREAMPARSE_AUTO_RUNTIME": ""}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
             for _ in range(2)]
    import time

    t0 = time.time()
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.time() - t0 < 120:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    infos = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sorted(i["cache"] for i in infos) == ["built", "hit"]
    from streamparse.runtime.cache import ExportCache

    (entry,) = _entries(tmp_path / "c", "openvino-fp32-")
    man = json.loads((entry / "manifest.json").read_text())
    assert ExportCache(tmp_path / "c").verify(entry, man["key"]) is None
    assert not list((tmp_path / "c" / "exports").glob(".tmp-*")) and not list((tmp_path / "c" / "exports").glob(".trash-*"))


# ----------------------------------------------------------------------------- fallback and auto
@pytest.mark.parametrize("ask,says", [(["model.runtime=openvino", "model.precision=fp32"], "openvino fp32 cannot run uniparser_tiny"),
                                      (["model.runtime=auto"], "model.runtime=auto model.precision=auto cannot run uniparser_tiny")])
def test_a_failing_export_falls_back_to_torch_with_one_warning(tmp_path, caplog, monkeypatch, ask, says):
    """The export cannot be written (the cache folder is a file): torch, one warning line."""
    monkeypatch.delenv("STREAMPARSE_AUTO_RUNTIME", raising=False)
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("a file where the cache folder would go")
    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 96, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING):
        pred = predictor(TINY + ask, checkpoint="none", cache=not_a_dir)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage(), [r.getMessage() for r in warnings]
    assert says in warnings[0].getMessage() and "running torch" in warnings[0].getMessage()
    assert pred.engine.runtime == "torch" and pred.info()["runtime"]["note"] == warnings[0].getMessage()
    ref = predictor(TINY + ["model.runtime=torch"], checkpoint="none").label_maps(frames)
    np.testing.assert_array_equal(pred.label_maps(frames)[0], ref[0])


def test_auto_picks_the_fastest_agreeing_candidate_and_caches_the_decision(tmp_path, monkeypatch):
    monkeypatch.delenv("STREAMPARSE_AUTO_RUNTIME", raising=False)
    pred = predictor(TINY + ["model.runtime=auto"], checkpoint="none", cache=tmp_path)
    d = pred.engine.decision
    table = {(r["runtime"], r["precision"]): r for r in d["table"]}
    assert {("torch", "fp32"), ("openvino", "fp32"), ("onnxruntime", "fp32")} <= set(table)
    assert all(p != "int8" for _, p in table)
    assert table[("openvino", "fp32")]["agreement"]["part_map"] == 1.0
    ok = [r for r in d["table"] if r.get("passes")]
    best = min(ok, key=lambda r: r["ms"])
    assert (pred.engine.runtime, pred.engine.precision) == (best["runtime"], best["precision"]) == (d["runtime"], d["precision"])
    (entry,) = _entries(tmp_path, "decision-")
    mtime = (entry / "decision.json").stat().st_mtime_ns
    again = predictor(TINY + ["model.runtime=auto"], checkpoint="none", cache=tmp_path)
    assert again.engine.decision == d and (entry / "decision.json").stat().st_mtime_ns == mtime
    assert (again.engine.runtime, again.engine.precision) == (d["runtime"], d["precision"])


def test_auto_is_torch_when_pinned_and_the_torch_path_is_unchanged(monkeypatch):
    monkeypatch.setenv("STREAMPARSE_AUTO_RUNTIME", "torch")
    pred = predictor(TINY, checkpoint="none")
    assert pred.info()["runtime"] == {"runtime": "torch", "precision": "fp32", "note": "", "cache": ""}
    assert pred.engine.model is pred.model


# ----------------------------------------------------------------------------- commands
@pytest.mark.slow  # ~60 s: three evals in subprocesses, two exports
def test_eval_runs_on_any_runtime(tmp_path, cache):
    """`streamparse eval CONFIG CHECKPOINT --set model.runtime=...`: fp32 runtimes score exactly as torch."""
    from streamparse.checkpoint import DEFAULT_WEIGHTS
    from streamparse.data.synth import generate_dataset

    generate_dataset(tmp_path / "d", "cihp", 3, seed=4321, size=(256, 256), split="val", min_people=2, max_people=4)
    cfg = str(REPO / "configs" / "pipeline_cpu.yaml")
    res = {}
    for rt in ("torch", "openvino", "onnxruntime"):
        out = tmp_path / f"{rt}.json"
        r = subprocess.run([sys.executable, "-m", "streamparse", "eval", cfg, str(DEFAULT_WEIGHTS), "--data", str(tmp_path / "d"),
                            "--json", str(out), "--set", f"model.runtime={rt}", "--set", "model.precision=fp32",
                            "--set", f"model.runtime_cache={cache}"], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stderr[-2000:]
        assert f"runtime {rt} fp32" in r.stdout
        res[rt] = json.loads(out.read_text())
        assert res[rt]["runtime"]["runtime"] == rt
    assert res["torch"]["num_pred"] > 0
    for rt in ("openvino", "onnxruntime"):
        for k in ("AP_p", "AP_p_50", "AP_p_vol", "PCP", "mIoU", "num_pred"):
            assert res[rt][k] == res["torch"][k], (rt, k)


@pytest.mark.slow  # ~40 s on a loaded 2-core machine
def test_bench_model_runtimes_smoke(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "streamparse", "bench", "model", "--runtime", "torch,openvino,onnxruntime",
                        "--precision", "fp32", "--sizes", "64x96", "--batches", "1", "2", "--reps", "1", "--checkpoint", "none",
                        "--set", "model.name=uniparser_tiny", "--set", f"model.runtime_cache={tmp_path / 'c'}", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {(x["runtime"], x["precision"]) for x in res["rows"]} == {("torch", "fp32"), ("openvino", "fp32"), ("onnxruntime", "fp32")}
    assert {(x["batch"], tuple(x["size"])) for x in res["rows"]} == {(1, (64, 96)), (2, (64, 96))}
    assert all(x["ms"] > 0 and x["vs_torch"] > 0 for x in res["rows"])
    assert all(a["part_map"] == 1.0 and a["same_people"] == 1.0 for a in res["agreement"])  # fp32: identical
    assert "| openvino | fp32 |" in r.stdout and res["cpu"] in r.stdout


def test_calibration_frames_from_a_video_a_folder_or_synthetic(tmp_path, videos):
    import cv2

    from streamparse.runtime.select import EngineRefused, load_calibration_frames
    from streamparse.sources import FileSource

    with FileSource(videos[1]) as src:
        decoded = np.concatenate([b.frames for b in src.batches(16)])  # 12 frames
    got = load_calibration_frames(videos[1], 4, (64, 96))
    assert len(got) == 4
    for k, f in enumerate(got):  # evenly spaced: every 3rd frame
        np.testing.assert_array_equal(f, decoded[3 * k])
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"im{2 - i}.png"), cv2.cvtColor(decoded[i], cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("not an image")
    imgs = load_calibration_frames(str(tmp_path), 2, (64, 96))
    assert len(imgs) == 2
    np.testing.assert_array_equal(imgs[0], decoded[2])  # sorted by name: im0.png first
    synth = load_calibration_frames("", 3, (64, 96))
    assert [f.shape for f in synth] == [(64, 96, 3)] * 3 and not np.array_equal(synth[0], synth[1])
    np.testing.assert_array_equal(synth[0], load_calibration_frames("", 1, (64, 96))[0])  # deterministic
    with pytest.raises(EngineRefused, match="neither a video file nor a folder"):
        load_calibration_frames(str(tmp_path / "absent.mp4"), 2, (64, 96))
