"""Build streamparse's sdist and wheel from this checkout, and make virtual environments outside it.

``build_dists(out)``: ``python -m build`` (sdist, then the wheel built from that sdist) plus a wheel
built straight from the tree. ``make_venv(path, *pip_args)``: a fresh venv on the base interpreter
with ``pip install pip_args`` (the packages come from pip's cache and the machine's local files: a
copy, not a download, after the project's own setup). ``wheel_requirements(wheel)``: the wheel's
dependencies (``Requires-Dist`` without extras), to make a venv with everything but streamparse.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(cmd: list[str], *, cwd=None, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def build_dists(out: Path) -> dict[str, Path]:
    """{"sdist", "wheel" (from the sdist), "tree_wheel" (from the checkout)} in ``out``."""
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out / "dist", REPO])
    run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", out / "tree", REPO])
    for leftover in (REPO / "build",):  # setuptools' scratch folder in the checkout (ignored by git)
        subprocess.run(["rm", "-rf", str(leftover)])
    return {"sdist": next((out / "dist").glob("*.tar.gz")), "wheel": next((out / "dist").glob("*.whl")),
            "tree_wheel": next((out / "tree").glob("*.whl"))}


def make_venv(path: Path, *pip_args: str) -> Path:
    """A fresh venv at ``path`` (base interpreter, no access to this checkout); returns its python."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    run([base, "-m", "venv", path])
    py = path / "bin" / "python"
    if pip_args:
        run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pip_args], timeout=1800)
    return py


def clean_env(venv: Path, **extra: str) -> dict:
    """The environment of a user of ``venv``: its bin first on PATH, no PYTHONPATH, no checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def wheel_requirements(wheel: Path) -> list[str]:
    """The wheel's required dependencies (extras' own requirements left out), as pip arguments."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(z.read(meta))
    return [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]
