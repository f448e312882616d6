"""`streamparse submit`: run `streamparse archive` as a Ray job on a cluster (Ray Job Submission SDK).

``streamparse submit --address http://HEAD:8265 [--follow] -- archive INPUT... --out OUTDIR [...]``

The package travels with the job as ``py_modules``: a copy of the installed ``streamparse`` package
in the layout ``pip install`` makes (``streamparse.models``, ``streamparse.pipelines``, the presets in
``streamparse/configs``, the shipped weights) and its ``.dist-info`` (so the nodes read the same
version), never the repository (its ``.git``, ``.venv``, data and stores would exceed Ray's ~100 MiB
upload cap). Its dependencies (torch, zarr, av, ...) must be installed on the cluster's nodes
(``examples/``); a node that lacks one ends the job with one line naming the package and the node.
The entrypoint runs on the Python the cluster's Ray runs on (found from the job supervisor's process),
not whatever ``python`` is first on the job server's PATH; ``--python`` names another.
Paths in the archive command are made absolute: the inputs, OUTDIR, ``--config``, ``--checkpoint`` and
``--report`` must be visible at the same paths on the cluster (shared storage) or be URLs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

HELP = "submit `streamparse archive ...` as a Ray job to a cluster (prints the job id; --follow tails its logs)"
MAX_UPLOAD = 90 * 2**20  # Ray refuses uploads near 100 MiB
# what Ray's job manager writes into a job's log around the entrypoint's own output
RAY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING)\s|Running entrypoint for job |"
                      r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIW] \d+ \d+\])")
SECRET_ENV = ("RAY_AUTH_TOKEN",)  # never a job's env var: the token lives in a file on each node


def add_arguments(p) -> None:
    p.add_argument("--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265")
    p.add_argument("--follow", action="store_true", help="tail the job's logs until it ends; exit with its exit code")
    p.add_argument("--python", default="auto",
                   help="the Python the job's entrypoint runs on the cluster (default: auto, the one the cluster's Ray runs on)")
    p.add_argument("--job-id", help="a submission id (default: Ray makes one)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for the job (repeatable; visible in the dashboard: no secrets)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- archive INPUT... --out OUTDIR [archive options]")


def _abs(path: str | None) -> str | None:
    from streamparse.store.objstore import is_url

    if path is None or is_url(path) or path in ("none", "default"):
        return path
    return os.path.abspath(path)


def archive_argv(tokens: list[str]) -> list[str]:
    """The archive command line the job runs: validated with the archive parser, paths made absolute."""
    from streamparse.cli import CLIError
    from streamparse.commands import archive as arc

    if tokens and tokens[0] == "--":
        tokens = tokens[1:]
    if not tokens or tokens[0] != "archive":
        raise CLIError("submit runs an archive: streamparse submit --address URL -- archive INPUT... --out OUTDIR")
    ap = argparse.ArgumentParser(prog="streamparse archive", add_help=False)
    arc.add_arguments(ap)

    def _error(msg):
        raise CLIError(f"archive: {msg}")

    ap.error = _error
    a = ap.parse_args(tokens[1:])
    argv = ["archive", *[_abs(x) for x in a.inputs], "--out", _abs(a.out)]
    if a.config:  # a file (made absolute) or an installed preset's name (kept: the nodes have the presets)
        argv += ["--config", _abs(a.config) if os.path.exists(a.config) or os.sep in a.config else a.config]
    for s in a.set:
        argv += ["--set", s]
    if a.checkpoint:
        argv += ["--checkpoint", _abs(a.checkpoint)]
    for flag, v in (("--device", a.device), ("--batch-size", a.batch_size), ("--ray-address", a.ray_address)):
        if v is not None:
            argv += [flag, str(v)]
    for flag, v in (("--workers", a.workers), ("--concurrency", a.concurrency), ("--max-videos", a.max_videos)):
        if v:
            argv += [flag, str(v)]
    argv += ["--quarantine-after", str(a.quarantine_after)]
    for flag, v in (("--resume", a.resume), ("--retry-quarantined", a.retry_quarantined), ("--no-progress", a.no_progress)):
        if v:
            argv.append(flag)
    if a.report:
        argv += ["--report", _abs(a.report)]
    return argv


def stage_package(dest: Path) -> list[Path]:
    """A copy of the installed package in the installed layout (``streamparse/`` with ``models/``,
    ``pipelines/``, ``configs/`` and the weights), without caches, and of its ``.dist-info``: the
    ``py_modules`` entries of the job."""
    from importlib.metadata import PackageNotFoundError, distribution

    import streamparse
    import streamparse.models
    import streamparse.pipelines
    from streamparse.config_presets import _presets_dir

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    pkg = dest / "streamparse"
    shutil.copytree(Path(streamparse.__file__).parent, pkg, ignore=ignore, symlinks=False)
    for sub, src in (("models", Path(streamparse.models.__file__).parent), ("pipelines", Path(streamparse.pipelines.__file__).parent),
                     ("configs", _presets_dir())):
        target = pkg / sub
        if target.resolve() != src.resolve():  # an editable install: the folders sit beside the package
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(src, target, ignore=ignore)
    entries = [pkg]
    try:
        dist = distribution("streamparse")
        info = Path(str(dist.locate_file(""))) / f"streamparse-{dist.version}.dist-info"
        if info.is_dir():
            meta = dest / "meta" / info.name  # its own folder: Ray puts each entry's parent on sys.path
            shutil.copytree(info, meta, ignore=shutil.ignore_patterns("RECORD", "direct_url.json"))
            entries.append(meta)
    except PackageNotFoundError:  # not installed (a bare source tree): the job reports 0+unknown
        pass
    size = sum(f.stat().st_size for e in entries for f in e.rglob("*") if f.is_file())
    if size > MAX_UPLOAD:
        from streamparse.cli import CLIError

        raise CLIError(f"the package to upload is {size / 2**20:.0f} MiB; Ray caps uploads near 100 MiB")
    return entries


# The job supervisor runs the entrypoint with ``sh -c``; its parent ($PPID) is the supervisor, a Ray worker
# on the cluster's Python. That process maps ray/_raylet.so from the site-packages of the cluster's Python:
# its prefix's bin/python3 is the interpreter (a venv included; /proc/PID/exe would name the venv's base
# Python instead). Fallbacks: that process's executable, then python3 on PATH.
CLUSTER_PYTHON = (
    'sp_py=python3; '
    'sp_pre=$(sed -n "s#^.* \\(/.*\\)/lib/python3[.0-9]*/[a-z]*-packages/ray/_raylet[.]so\\$#\\1#p" /proc/$PPID/maps 2>/dev/null | head -n 1); '
    'for c in ${sp_pre:+"$sp_pre/bin/python3"} ${sp_pre:+"$sp_pre/bin/python"} "$(readlink /proc/$PPID/exe 2>/dev/null)"; do '
    'if [ -n "$c" ] && [ -x "$c" ]; then sp_py=$c; break; fi; done; exec "$sp_py"'
)


def entrypoint(argv: list[str], python: str = "auto") -> str:
    """The job's shell command: ``streamparse ARGV`` on the cluster's Python (or ``python``)."""
    tail = _quote(["-P", "-m", "streamparse", *argv])  # -P: a folder named streamparse where the job starts never shadows the package
    if python == "auto":
        return f"{CLUSTER_PYTHON} {tail}"
    return f"{_quote([python])} {tail}"


def _quote(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(x) for x in argv)


def run(args) -> int:
    from streamparse.cli import CLIError

    env = {}
    for item in args.env:
        k, eq, v = item.partition("=")
        if not eq or not k:
            raise CLIError(f"--env expects KEY=VALUE, got {item!r}")
        if k in SECRET_ENV:
            raise CLIError(f"--env {k}=... would put a secret in the job's environment (shown by the dashboard and "
                           f"`ray job` commands); the nodes read the Ray token from RAY_AUTH_TOKEN_PATH (docs/cluster.md)")
        env[k] = v
    argv = archive_argv(args.command)
    out = argv[argv.index("--out") + 1]
    try:  # a friendlier early refusal where this machine sees OUTDIR too (the job's driver checks again)
        from streamparse.archive.outdir import open_outdir

        holder = open_outdir(out).busy()
    except Exception:  # noqa: BLE001 - not visible from here: the job checks
        holder = None
    if holder:
        raise CLIError(f"{out} is being written by another archive job ({holder}); wait for it or stop it")
    from ray.job_submission import JobSubmissionClient, JobStatus

    from streamparse import logs

    logs.quiet_ray()  # Ray's upload notices to the log file (the terminal with -v)

    entry = entrypoint(argv, args.python)
    with tempfile.TemporaryDirectory(prefix="sp-submit-") as tmp:
        mods = [str(p) for p in stage_package(Path(tmp))]
        runtime_env = {"py_modules": mods, "env_vars": env} if env else {"py_modules": mods}
        try:
            client = JobSubmissionClient(args.address)
            job_id = client.submit_job(entrypoint=entry, runtime_env=runtime_env, submission_id=args.job_id,
                                       metadata={"streamparse": "archive", "outdir": out})
        except Exception as exc:  # noqa: BLE001 - unreachable, refused (a wrong token), bad runtime env: one line
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise CLIError(f"cannot submit to {args.address}: {type(exc).__name__}: {first}") from None
    print(job_id, flush=True)
    print(f"streamparse submit: job {job_id} on {args.address}: streamparse {_quote(argv)}", file=sys.stderr)
    if not args.follow:
        return 0
    import asyncio

    async def tail():
        async for chunk in client.tail_job_logs(job_id):
            for line in chunk.splitlines(keepends=True):
                if logs.verbose() or not RAY_LINE.match(line):  # the job's own lines; Ray's only with -v
                    print(line, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"streamparse submit: stopped following; the job runs on (ray job stop {job_id})", file=sys.stderr)
        return 130
    info = client.get_job_info(job_id)
    code = getattr(info, "driver_exit_code", None)
    print(f"streamparse submit: job {job_id} {info.status}" + (f" (exit code {code})" if code is not None else ""), file=sys.stderr)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    return int(code) if code not in (None, 0) else 1
