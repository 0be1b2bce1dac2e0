"""open_clip's own model code as the parity reference, without torchvision.

`import open_clip` pulls torchvision (its transforms), whose only wheels here are CUDA builds
that fail with the CPU torch. The model code and the tokenizers need neither: `open_clip` is
made a bare package whose `__path__` is the installed one (its `__init__` never runs), and the
one training-only symbol `open_clip/utils.py` takes from torchvision (`FrozenBatchNorm2d`)
gets a stub module with a real `__spec__`. transformers is imported first: its own torchvision
probe chokes on a module without a spec. The model code itself is open_clip's, unmodified.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

import torch
import transformers  # noqa: F401  (before the stub: its torchvision probe runs at import)

__all__ = ["open_clip_model", "open_clip_tokenizer"]


def open_clip_model(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """open_clip's `CLIP` (`CustomTextCLIP` where the config says `custom_text`) built from a
    `model_cfg`, randomly initialised as open_clip does."""
    module = _bare_open_clip_model_module()
    config = dict(model_cfg)
    kind = module.CustomTextCLIP if config.pop("custom_text", False) else module.CLIP
    return kind(**config).eval()  # type: ignore[no-any-return]


def open_clip_tokenizer(text_cfg: dict[str, Any]) -> Any:
    """open_clip's own `HFTokenizer` for a `text_cfg` naming one (`hf_tokenizer_name`), as
    its `get_tokenizer` builds it: texts -> int64[N, context_length]."""
    _bare_open_clip_model_module()
    import open_clip.tokenizer

    return open_clip.tokenizer.HFTokenizer(
        text_cfg["hf_tokenizer_name"],
        context_length=text_cfg["context_length"],
        **text_cfg.get("tokenizer_kwargs", {}),
    )


def _bare_open_clip_model_module() -> types.ModuleType:
    if "open_clip.model" in sys.modules:
        return sys.modules["open_clip.model"]
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None, "open_clip_torch is installed (pip install --no-deps)"
    assert spec.submodule_search_locations
    package = types.ModuleType("open_clip")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = importlib.machinery.ModuleSpec("open_clip", None, is_package=True)
    sys.modules.setdefault("open_clip", package)
    stubs = ("torchvision", "torchvision.ops", "torchvision.ops.misc")
    assert not any(name in sys.modules for name in stubs), "a real torchvision is loaded"
    for name in stubs:
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stub.__path__ = []
        sys.modules[name] = stub
    sys.modules["torchvision.ops.misc"].FrozenBatchNorm2d = torch.nn.BatchNorm2d  # type: ignore[attr-defined]
    try:
        import open_clip.model
    finally:  # no other test may see a torchvision that is not there
        for name in stubs:
            del sys.modules[name]
    return open_clip.model
