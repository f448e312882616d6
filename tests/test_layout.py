"""The layout rules of issue 27 that a refactor must keep: the leaf modules import no Ray, and the
shipped weights' recipe (one base file, ten short stage files) resolves to exactly the settings each
stage had when every stage file stated all of them.

``golden_shipped_stages.json`` holds the ``model``, ``data`` and ``train`` sections of each stage as
the ten self-contained stage files of 0.2 resolved them (``load_config(stage) -> to_dict``); the other
sections were the defaults then and must stay so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamparse.config import Config, load_config, to_dict

HERE = Path(__file__).parent
STAGES = HERE.parent / "configs" / "shipped_weights"
LEAVES = ("streamparse.config", "streamparse.config_types", "streamparse.structures", "streamparse.categories",
          "streamparse.checkpoint", "streamparse.labelstats", "streamparse.logs", "streamparse.cache",
          "streamparse.engine.metrics")


@pytest.mark.parametrize("stage", range(1, 11))
def test_shipped_weights_stage_resolves_as_recorded(stage):
    name = f"stage{stage:02d}"
    want = json.loads((HERE / "golden_shipped_stages.json").read_text())[name]
    for cfg in (load_config(STAGES / f"{name}.yaml"), load_config(f"shipped_weights/{name}")):  # a path, a preset
        got = json.loads(json.dumps(to_dict(cfg)))
        defaults = json.loads(json.dumps(to_dict(Config())))
        for section in ("model", "data", "train"):
            assert {k: v for k, v in got[section].items() if k in want[section]} == want[section], section
            added = {k: v for k, v in got[section].items() if k not in want[section]}  # keys newer than the recording
            assert added == {k: defaults[section][k] for k in added}, section
        assert {k: v for k, v in got.items() if k not in want} == {k: v for k, v in defaults.items() if k not in want}
    text = (STAGES / f"{name}.yaml").read_text()
    assert text.count("\n_base_: base.yaml\n") == 1 and "#   streamparse train configs/shipped_weights/" in text


def test_leaves_import_no_ray():
    """Importing a leaf module (and using the per-source metrics outside Ray) leaves Ray unimported."""
    code = ("import importlib, sys\n"
            f"for m in {LEAVES!r}:\n"
            "    importlib.import_module(m)\n"
            "from streamparse.engine.metrics import SourceMetrics\n"
            "s = SourceMetrics('cam')\n"
            "s.count('written', 3); s.drop('queue'); s.set_reconnects(1, 2); s.observe_lag(0.1); s.summary()\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]", r.stdout


def test_submit_stages_the_installed_layout(tmp_path):
    """What `submit` uploads (no cluster needed): ``streamparse/`` with ``models/``, ``pipelines/`` and
    ``configs/`` inside it, as a wheel installs them, and no caches. (The cluster tests that submit
    for real are slow; this keeps a broken staging out of the default run.)"""
    from streamparse.commands.submit import stage_package
    from streamparse.config_presets import presets

    entries = stage_package(tmp_path)
    pkg = tmp_path / "streamparse"
    assert entries[0] == pkg
    for rel in ("__init__.py", "models/__init__.py", "pipelines/archive.py", "engine/scheduler.py"):
        assert (pkg / rel).is_file(), rel
    assert presets() and all((pkg / "configs" / f"{p}.yaml").is_file() for p in presets())
    assert not list(pkg.rglob("__pycache__")) and not list(pkg.rglob("*.pyc"))
