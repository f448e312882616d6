"""torchvision, imported without importing ``torch._dynamo`` (import this before any torchvision module).

torchvision 0.29's ``ops/roi_align.py`` compiles its deterministic kernel lazily so that eager users do
not import dynamo (pytorch/vision#8436), yet imports ``is_compile_supported`` from ``torch._dynamo.utils``
at module level, which imports all of ``torch._dynamo``: ~1 s of the ~1.1 s ``import torchvision`` takes
on the 2-core machine, in every inference actor. While torchvision is imported, that one module name is
answered by a stand-in whose ``is_compile_supported`` imports the real function when first called (by
``roi_align`` on a deterministic CUDA run; never on streamparse's paths); the stand-in is removed as soon
as the import ends, so a later ``import torch._dynamo`` (exports, ``torch.compile``) loads the real
modules. Nothing changes when dynamo is already imported or another torchvision does not ask for it.
"""

from __future__ import annotations

import sys
import types

_NAME = "torch._dynamo.utils"


def _is_compile_supported(device_type):
    from torch._dynamo.utils import is_compile_supported

    return is_compile_supported(device_type)


def _import_torchvision():
    if "torchvision" in sys.modules or "torch._dynamo" in sys.modules or _NAME in sys.modules:
        import torchvision

        return torchvision
    stand_in = types.ModuleType(_NAME, "stand-in while torchvision is imported (streamparse.models._vision)")
    stand_in.is_compile_supported = _is_compile_supported
    sys.modules[_NAME] = stand_in
    try:
        import torchvision
    finally:
        if sys.modules.get(_NAME) is stand_in:
            del sys.modules[_NAME]
    return torchvision


torchvision = _import_torchvision()
