"""UniParser (Chu et al.): multi-human parsing with unified correlation representation learning.

Installed as ``streamparse.models`` (the repository keeps it at the top level as ``models/``).
"""

from .registry import build_model, list_models, register_model
from .uniparser import UniParser, UniParserOutput
from . import builders as _builders  # noqa: F401  (registers the named variants)

__all__ = ["UniParser", "UniParserOutput", "build_model", "list_models", "register_model"]
