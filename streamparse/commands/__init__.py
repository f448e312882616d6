"""CLI subcommands (see streamparse.cli)."""
