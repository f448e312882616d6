"""streamparse: multi-human parsing (UniParser) on video at archive scale."""

from importlib.metadata import PackageNotFoundError as _NotFound
from importlib.metadata import version as _version

try:  # one version: pyproject.toml's, read from the installed metadata
    __version__ = _version("streamparse")
except _NotFound:  # a copy of the package that was never installed (e.g. a bare source tree)
    __version__ = "0+unknown"
