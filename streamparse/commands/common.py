"""What several subcommands share: the config of a command that runs the model (from its flags), and
the arguments naming a store and the video it was made from."""

from __future__ import annotations


def load_run_config(args, flags: tuple[tuple[str, str], ...]):
    """The config of ``args`` (``--config``, ``--set``, ``--checkpoint``): the checkpoint's stored
    inference preset (converted authors' checkpoints) first, then ``--set``, then each flag of
    ``flags`` ((attribute, config key)) that was given, as ``key=value``. A bad config is one line
    (``CLIError``), before anything heavy is imported or any path is touched."""
    from streamparse.cli import CLIError
    from streamparse.config import ConfigError, load_config
    from streamparse.plan import checkpoint_preset_overrides

    overrides = checkpoint_preset_overrides(args.checkpoint) + list(args.set)
    for flag, key in flags:
        v = getattr(args, flag)
        if v is not None:
            overrides.append(f"{key}={v}")
    try:
        return load_config(args.config, overrides)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def add_store_and_video(p) -> None:
    """The positional store, ``--video`` and ``--source`` (commands that draw a store over its video)."""
    p.add_argument("store", metavar="OUT.zarr", help="a streamparse store (path or fsspec URL)")
    p.add_argument("--video", required=True, help="the video the store was made from")
    p.add_argument("--source", help="source id in the store (default: its only source)")
