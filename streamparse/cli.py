"""`streamparse` command line: one subcommand per module under ``streamparse.commands``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Heavy imports (torch, ray, av) happen inside ``run`` so ``streamparse --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module path. Keep the order: it is the order shown by --help.
COMMANDS: dict[str, str] = {
    "run": "streamparse.commands.run",
    "archive": "streamparse.commands.archive",
    "submit": "streamparse.commands.submit",
    "status": "streamparse.commands.status",
    "predict": "streamparse.commands.predict",
    "train": "streamparse.commands.train",
    "eval": "streamparse.commands.eval",
    "synth": "streamparse.commands.synth",
    "bench": "streamparse.commands.bench",
    "export": "streamparse.commands.export",
    "inspect": "streamparse.commands.inspect",
    "render": "streamparse.commands.render",
    "report": "streamparse.commands.report",
    "export-labels": "streamparse.commands.export_labels",
    "track": "streamparse.commands.track",
    "eval-tracks": "streamparse.commands.eval_tracks",
    "convert-official": "streamparse.commands.convert_official",
    "doctor": "streamparse.commands.doctor",
}


class CLIError(Exception):
    """An error reported to the user as one line, with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from streamparse import __version__

    parser = argparse.ArgumentParser(prog="streamparse", description="Multi-human parsing (UniParser) on video.")
    parser.add_argument("--version", action="version", version=f"streamparse {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show Ray's own log lines and info messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modpath in COMMANDS.items():
        try:
            mod = importlib.import_module(modpath)
        except ModuleNotFoundError as exc:  # a command not built yet must not break the others
            if exc.name != modpath:
                raise
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="also show Ray's own log lines and info messages")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run, _name=name)  # _name: a command may use `command` for its own arguments (submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    from streamparse.engine.raystart import RayStartError  # (imports no Ray)

    command = "error"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        command = getattr(args, "_name", None) or "error"
        from streamparse import logs

        logs.configure(args.verbose)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except CLIError as exc:
        print(f"streamparse {command}: error: {exc}", file=sys.stderr)
        return 2
    except RayStartError as exc:  # Ray did not start: one line and where its log is
        print(f"streamparse {command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"streamparse {command}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # a dependency missing where this runs (a cluster node): one line
        if not exc.name or exc.name.split(".")[0] == "streamparse":
            raise
        from streamparse.logs import missing_dependency

        print(f"streamparse {command}: error: {missing_dependency(exc.name)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # `python -m streamparse.cli`: use the package module so CLIError matches
    from streamparse.cli import main as _main

    sys.exit(_main())
