"""Load a CLIP checkpoint's towers (each with its projection), preprocessing rule and tokenizer.

Three sources: a Hugging Face hub id, a local directory, or a random-weight preset for
machines without network access. Loading never falls back from one to another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizerFast,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from lookalike.export.errors import ModelUnavailableError, NotClipModelError
from lookalike.export.manifest import ModelSource, PreprocessSpec
from lookalike.export.tokenizer import CONTEXT_LENGTH, clip_bpe_tokenizer

__all__ = [
    "DEFAULT_MODEL",
    "RANDOM_INIT_PRESETS",
    "Checkpoint",
    "load_checkpoint",
    "preprocess_spec",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

# Tower shapes of the public OpenAI CLIP sizes (plus `tiny` for tests). Random weights with
# these shapes cost exactly the compute of the real model.
VIT_B = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
)
TEXT_B = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
RANDOM_INIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        projection_dim=16,
        vision=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=224,
            patch_size=32,
        ),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    ),
    "vit-b-32": dict(projection_dim=512, vision={**VIT_B, "patch_size": 32}, text=TEXT_B),
    "vit-b-16": dict(projection_dim=512, vision={**VIT_B, "patch_size": 16}, text=TEXT_B),
    "vit-l-14": dict(
        projection_dim=768,
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
        ),
        text=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12
        ),
    ),
}
# What every OpenAI CLIP text tower shares: the BPE vocabulary and its special tokens.
CLIP_TEXT = dict(
    vocab_size=49408,
    max_position_embeddings=CONTEXT_LENGTH,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
# Attention must stay "eager" so the ONNX Runtime optimizer can fuse it into `Attention`.
ATTENTION = "eager"
RANDOM_INIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class TextTower:
    model: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizerFast


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    model: CLIPVisionModelWithProjection
    processor: CLIPImageProcessor
    source: ModelSource
    text: TextTower | None  # None when only the image tower was asked for

    @property
    def config(self) -> CLIPVisionConfig:
        return self.model.config

    @property
    def preprocess(self) -> PreprocessSpec:
        return preprocess_spec(self.processor, self.config.image_size)


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
    local = Path(model).expanduser()
    if local.is_dir():
        return _pretrained_checkpoint(str(local.resolve()), revision=None, kind="local", text=text)
    if local.exists() or model.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"{model} is not a directory holding a saved CLIP model")
    return _pretrained_checkpoint(model, revision=revision, kind="hub", text=text)


HUB_PROBE_TIMEOUT_S = 3.0
OFFLINE_VALUES = ("1", "on", "yes", "true")


def hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached now, or None when it can.

    One quick TCP connect instead of the hub client's retries with backoff (~35 s before it
    gives up). `HF_HUB_OFFLINE` is read now, not at import time.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in OFFLINE_VALUES:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub import constants

    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    if endpoint.scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None  # reached through a proxy: a direct connect proves nothing
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"


def _random_checkpoint(preset: str, *, text: bool) -> Checkpoint:
    if preset not in RANDOM_INIT_PRESETS:
        choices = ", ".join(RANDOM_INIT_PRESETS)
        raise ModelUnavailableError(f"unknown --random-init preset {preset!r}; choose {choices}")
    shape = RANDOM_INIT_PRESETS[preset]
    tokenizer = clip_bpe_tokenizer() if text else None  # before minutes of work, if missing
    config = CLIPVisionConfig(
        **shape["vision"], projection_dim=shape["projection_dim"], hidden_act="quick_gelu"
    )
    torch.manual_seed(RANDOM_INIT_SEED)
    model = CLIPVisionModelWithProjection._from_config(config, attn_implementation=ATTENTION)
    text_tower = None
    if tokenizer is not None:
        text_config = CLIPTextConfig(
            **shape["text"],
            **CLIP_TEXT,
            projection_dim=shape["projection_dim"],
            hidden_act="quick_gelu",
        )
        text_model = CLIPTextModelWithProjection._from_config(
            text_config, attn_implementation=ATTENTION
        )
        text_tower = TextTower(text_model.eval(), tokenizer)
    processor = CLIPImageProcessor(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
    )
    log.warning(
        "RANDOM WEIGHTS: preset %r has the shape and compute of the real model, "
        "but its embeddings carry no meaning",
        preset,
    )
    return Checkpoint(
        model=model.eval(),
        processor=processor,
        source=ModelSource(kind="random-init", id=preset, random_weights=True),
        text=text_tower,
    )


def _pretrained_checkpoint(name: str, *, revision: str | None, kind: str, text: bool) -> Checkpoint:
    offline = hub_unreachable_reason() if kind == "hub" else None
    if offline:
        log.warning("Hugging Face hub unreachable (%s): using the local cache only", offline)
    local_only = kind == "local" or offline is not None
    config = _load_config(name, revision=revision, kind=kind, offline=offline)
    model_type = getattr(config, "model_type", None)
    if model_type not in CLIP_MODEL_TYPES:
        raise NotClipModelError(
            f"{name} is a {model_type!r} model, not CLIP: Lookalike exports CLIP vision towers "
            f"(config model_type one of {', '.join(CLIP_MODEL_TYPES)})"
        )
    vision_config = _vision_config(config)
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(
            name,
            config=vision_config,
            revision=revision,
            attn_implementation=ATTENTION,
            local_files_only=local_only,
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"{name} has a CLIP config but no loadable weights "
            f"(model.safetensors or pytorch_model.bin): {_first_line(exc)}"
        ) from exc
    try:
        processor = CLIPImageProcessor.from_pretrained(
            name, revision=revision or "main", local_files_only=local_only
        )
    except OSError:
        log.warning(
            "%s has no preprocessor_config.json; using CLIPImageProcessor defaults at %dpx",
            name,
            vision_config.image_size,
        )
        processor = CLIPImageProcessor(
            size={"shortest_edge": vision_config.image_size},
            crop_size={"height": vision_config.image_size, "width": vision_config.image_size},
        )
    return Checkpoint(
        model=model.eval(),
        processor=processor,
        source=ModelSource(
            kind=kind,
            id=name,
            revision=getattr(config, "_commit_hash", None) if kind == "hub" else None,
        ),
        text=_pretrained_text_tower(name, config, revision=revision, local_only=local_only)
        if text
        else None,
    )


def _pretrained_text_tower(
    name: str, config: Any, *, revision: str | None, local_only: bool
) -> TextTower:
    if config.model_type != "clip":
        raise ModelUnavailableError(
            f"{name} holds a CLIP image tower only (model_type {config.model_type!r}): "
            "pass --no-text to export it without search by text"
        )
    text_config = config.text_config
    text_config.projection_dim = config.projection_dim
    model = CLIPTextModelWithProjection.from_pretrained(
        name,
        config=text_config,
        revision=revision,
        attn_implementation=ATTENTION,
        local_files_only=local_only,
    )
    try:
        tokenizer = CLIPTokenizerFast.from_pretrained(
            name, revision=revision or "main", local_files_only=local_only
        )
    except (OSError, ValueError, TypeError) as exc:  # TypeError: no vocabulary file at all
        # transformers' own message says why a download failed, but for a folder without the
        # files it is a Python type error about a None path: not for a person
        why = "" if isinstance(exc, TypeError) else f" ({_first_line(exc)})"
        raise ModelUnavailableError(
            f"{name} has a text tower but no tokenizer files: it needs tokenizer.json, or "
            f"vocab.json and merges.txt{why}. Save the tokenizer beside the model "
            "(CLIPTokenizerFast.from_pretrained(ID).save_pretrained(DIR)), or pass --no-text "
            "to export the image tower alone"
        ) from exc
    if text_config.max_position_embeddings < CONTEXT_LENGTH:
        raise NotClipModelError(
            f"{name}'s text tower has {text_config.max_position_embeddings} positions; "
            f"Lookalike exports CLIP's {CONTEXT_LENGTH}"
        )
    return TextTower(model.eval(), tokenizer)


def _vision_config(config: Any) -> CLIPVisionConfig:
    """The vision half of a full CLIP config; its projection width lives at the top level."""
    if config.model_type == "clip_vision_model":
        return config
    vision_config = config.vision_config
    vision_config.projection_dim = config.projection_dim
    return vision_config


def _load_config(name: str, *, revision: str | None, kind: str, offline: str | None) -> Any:
    if kind == "local" and not (Path(name) / "config.json").is_file():
        # AutoConfig would guess a model type from the directory's *name*.
        raise ModelUnavailableError(f"{name} holds no model: {_LOCAL_LAYOUT}")
    try:
        return AutoConfig.from_pretrained(
            name, revision=revision, local_files_only=kind == "local" or offline is not None
        )
    except ValueError as exc:  # config.json present but its model_type is unknown
        raise NotClipModelError(f"{name} is not a CLIP model: {_first_line(exc)}") from exc
    except OSError as exc:
        if kind == "local":
            raise ModelUnavailableError(f"{name} holds no model: {_LOCAL_LAYOUT}") from exc
        reason = (
            f"the Hugging Face hub is unreachable ({offline}) and {name!r} is not in the "
            "local cache"
            if offline
            else f"could not load {name!r} from the Hugging Face hub: {_first_line(exc)}"
        )
        raise ModelUnavailableError(
            f"{reason}\n"
            "Without network access, pass a local directory with a saved CLIP model "
            "(--model /path/to/clip) or build random weights (--random-init vit-b-32)."
        ) from exc


def preprocess_spec(processor: CLIPImageProcessor, image_size: int) -> PreprocessSpec:
    """Copy the processor's rule into the manifest's terms."""
    size = processor.size
    shortest_edge = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
    if not shortest_edge:
        raise NotClipModelError(f"unsupported preprocessor size rule {size!r}")
    crop = processor.crop_size or {"height": image_size, "width": image_size}
    resample = getattr(processor.resample, "name", None) or _PIL_FILTERS[int(processor.resample)]
    return PreprocessSpec(
        image_size=image_size,
        resize_shortest_edge=int(shortest_edge),
        resample=resample.lower(),
        center_crop=bool(processor.do_center_crop),
        crop_height=int(crop["height"]),
        crop_width=int(crop["width"]),
        rescale_factor=float(processor.rescale_factor),
        mean=_per_channel(processor.image_mean),
        std=_per_channel(processor.image_std),
        convert_rgb=bool(getattr(processor, "do_convert_rgb", True)),
    )


def _per_channel(value: float | list[float]) -> tuple[float, float, float]:
    red, green, blue = [value] * 3 if isinstance(value, (int, float)) else value
    return float(red), float(green), float(blue)


_LOCAL_LAYOUT = (
    "expected config.json and weights saved by `CLIPModel.save_pretrained` "
    "(or a Hugging Face hub snapshot)"
)
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
