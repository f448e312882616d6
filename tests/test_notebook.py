"""examples/analytics.ipynb runs end to end (nbclient + the venv's ipykernel) and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

NB = Path(__file__).resolve().parents[1] / "examples" / "analytics.ipynb"


def test_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NB, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "strip the outputs before committing"


def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SP_EXAMPLE_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NB, as_version=4)  # a copy in memory: the file stays stripped
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [o for o in outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert any("data:video/mp4;base64," in o["data"]["text/html"] for o in html), "the rendered clip is shown"
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the part-area plot and the frame overlay
    assert (tmp_path / "work" / "overlay.mp4").is_file()
