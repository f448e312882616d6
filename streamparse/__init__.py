"""streamparse: multi-human parsing (UniParser) on video at archive scale."""

__version__ = "0.1.0"
