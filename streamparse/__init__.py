"""streamparse: multi-human parsing (UniParser) on video at archive scale."""

__version__ = "0.2.0"
