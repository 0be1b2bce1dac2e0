"""Load a checkpoint of any family Lookalike exports, as a `Checkpoint`.

Three sources: a Hugging Face hub id, a local directory, or a random-weight preset for
machines without network access. Loading never falls back from one to another. A hub or local
checkpoint's family comes from its config's `model_type`; a folder in open_clip's layout
(`open_clip_config.json`), or an `hf-hub:` name, is OpenCLIP; a preset names its own.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from lookalike.export.checkpoint import Checkpoint
from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError
from lookalike.export.families import clip, openclip, siglip
from lookalike.export.hub import HubAccess, download_files, load_config

__all__ = ["DEFAULT_MODEL", "FAMILIES", "RANDOM_INIT_PRESETS", "load_checkpoint"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
FAMILIES: tuple[ModuleType, ...] = (clip, siglip)
# preset name -> its family's module; each preset has the shape (and compute) of a real model
RANDOM_INIT_PRESETS: dict[str, ModuleType] = {
    preset: family for family in (*FAMILIES, openclip) for preset in family.PRESETS
}
HF_HUB_PREFIX = "hf-hub:"  # open_clip's own way of naming a hub repository


def load_checkpoint(
    model: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    random_init: str | None = None,
    text: bool = True,
) -> Checkpoint:
    """Load from `random_init` when given, else from the hub id or local directory `model`;
    with `text`, the text tower and its tokenizer too."""
    if random_init is not None:
        return _random_checkpoint(random_init, text=text)
    if model.startswith(HF_HUB_PREFIX):
        access = HubAccess(model.removeprefix(HF_HUB_PREFIX), revision=revision, kind="hub")
        folder = download_files(
            access, openclip.CONFIG_FILE, any_of=openclip.WEIGHT_FILES, what="an open_clip model"
        )
        return openclip.folder_checkpoint(folder, text=text, source_id=model)
    local = Path(model).expanduser()
    if local.is_dir() and openclip.is_openclip_folder(local):
        return openclip.folder_checkpoint(local, text=text)
    if local.is_dir():
        access = HubAccess(str(local.resolve()), revision=None, kind="local")
    elif local.exists() or model.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"{model} is not a directory holding a saved model")
    else:
        access = HubAccess(model, revision=revision, kind="hub")
    if access.offline:
        log.warning("Hugging Face hub unreachable (%s): using the local cache only", access.offline)
    config = load_config(access)
    return _family_of(access.name, config).pretrained_checkpoint(access, config, text=text)


def _random_checkpoint(preset: str, *, text: bool) -> Checkpoint:
    if preset not in RANDOM_INIT_PRESETS:
        choices = ", ".join(RANDOM_INIT_PRESETS)
        raise ModelUnavailableError(f"unknown --random-init preset {preset!r}; choose {choices}")
    checkpoint: Checkpoint = RANDOM_INIT_PRESETS[preset].random_checkpoint(preset, text=text)
    log.warning(
        "RANDOM WEIGHTS: preset %r has the shape and compute of the real model, "
        "but its embeddings carry no meaning",
        preset,
    )
    return checkpoint


def _family_of(name: str, config: object) -> ModuleType:
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES:
        if model_type in family.MODEL_TYPES:
            return family
        if model_type in getattr(family, "REFUSED_MODEL_TYPES", {}):
            raise UnsupportedModelError(f"{name}: {family.REFUSED_MODEL_TYPES[model_type]}")
    known = ", ".join(t for family in FAMILIES for t in family.MODEL_TYPES)
    raise UnsupportedModelError(
        f"{name} is a {model_type!r} model: Lookalike exports CLIP and SigLIP "
        "(and OpenCLIP folders, with open_clip_config.json) "
        f"(config model_type one of {known})"
    )
