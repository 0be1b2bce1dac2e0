"""OpenAI CLIP (`CLIPModel`): its towers with their projections, `CLIPImageProcessor`'s rule,
and CLIP's BPE tokenizer (77 tokens, pooled at the first end token).

Random-init presets have the shapes of the public OpenAI sizes (plus `tiny` for tests): their
compute is exactly the real model's, their embeddings mean nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizerFast,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    PreTrainedTokenizerFast,
)

from lookalike.export.checkpoint import (
    Checkpoint,
    ImageSide,
    Normalized,
    TextSide,
    Tower,
    per_channel,
    resample_name,
)
from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError
from lookalike.export.hub import HubAccess, first_line
from lookalike.export.manifest import ModelSource, PreprocessSpec
from lookalike.export.optimize import QuantizationPlan
from lookalike.export.tokenizer import CONTEXT_LENGTH, clip_bpe_tokenizer

__all__ = [
    "CLIP_TEXT",
    "FAMILY",
    "MODEL_TYPES",
    "PRESETS",
    "pretrained_checkpoint",
    "random_checkpoint",
    "preprocess_spec",
    "image_side",
    "text_side",
]

log = logging.getLogger(__name__)

FAMILY = "clip"
MODEL_TYPES = ("clip", "clip_vision_model")
VIT_B = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
)
TEXT_B = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
PRESETS: dict[str, dict[str, Any]] = {
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
# Tried in order until one meets the int8 parity bar. The final projection writes the
# embedding itself and costs little. The patch embedding sees raw pixels: quantizing it is
# worth 5% of int8 speed where parity allows. CLIP's MLP down-projections (fc2) carry the
# activation outliers of real checkpoints.
IMAGE_INT8_PLANS = (
    QuantizationPlan("projection-fp32", ("visual_projection",)),
    QuantizationPlan("edges-fp32", ("patch_embedding", "visual_projection")),
    QuantizationPlan("edges-and-mlp-out-fp32", ("patch_embedding", "visual_projection", "mlp/fc2")),
)
TEXT_INT8_PLANS = (
    QuantizationPlan("projection-fp32", ("text_projection",)),
    QuantizationPlan("projection-and-mlp-out-fp32", ("text_projection", "mlp/fc2")),
)
# Attention must stay "eager" so the ONNX Runtime optimizer can fuse it into `Attention`.
ATTENTION = "eager"
RANDOM_INIT_SEED = 0


def random_checkpoint(preset: str, *, text: bool) -> Checkpoint:
    shape = PRESETS[preset]
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
        text_tower = text_side(text_model.eval(), tokenizer)
    processor = CLIPImageProcessor(
        size={"shortest_edge": config.image_size},
        crop_size={"height": config.image_size, "width": config.image_size},
    )
    return Checkpoint(
        family=FAMILY,
        source=ModelSource(kind="random-init", id=preset, random_weights=True),
        image=image_side(model.eval(), processor),
        text=text_tower,
    )


def pretrained_checkpoint(access: HubAccess, config: Any, *, text: bool) -> Checkpoint:
    name = access.name
    vision_config = _vision_config(config)
    try:
        model = CLIPVisionModelWithProjection.from_pretrained(
            name, config=vision_config, attn_implementation=ATTENTION, **access.options()
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"{name} has a CLIP config but no loadable weights "
            f"(model.safetensors or pytorch_model.bin): {first_line(exc)}"
        ) from exc
    try:
        processor = CLIPImageProcessor.from_pretrained(
            name, revision=access.revision or "main", local_files_only=access.local_only
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
        family=FAMILY,
        source=ModelSource(
            kind=access.kind,
            id=name,
            revision=getattr(config, "_commit_hash", None) if access.kind == "hub" else None,
        ),
        image=image_side(model.eval(), processor),
        text=_pretrained_text_side(access, config) if text else None,
    )


def image_side(model: CLIPVisionModelWithProjection, processor: CLIPImageProcessor) -> ImageSide:
    config = model.config
    tower = Tower.of(
        Normalized(model, input_name="pixel_values", output="image_embeds"),
        config,
        dims=config.projection_dim,
        int8_plans=IMAGE_INT8_PLANS,
    )
    return ImageSide.of(tower, config, processor, preprocess_spec(processor, config.image_size))


def text_side(
    model: CLIPTextModelWithProjection,
    tokenizer: PreTrainedTokenizerFast,
    *,
    packaged: PreTrainedTokenizerFast | None = None,
    context_length: int = CONTEXT_LENGTH,
    pooling: str = "first-end-token",
) -> TextSide:
    """A CLIP-shaped text tower checked against `tokenizer`; `packaged`, where the server
    runs another form of it. CLIP's own pools at the first end token: with the causal mask,
    padding after it is unseen."""
    config = model.config
    tower = Tower.of(
        Normalized(model, input_name="input_ids", output="text_embeds"),
        config,
        dims=config.projection_dim,
        int8_plans=TEXT_INT8_PLANS,
    )
    return TextSide.of(
        tower,
        reference=tokenizer,
        packaged=packaged or tokenizer,
        context_length=context_length,
        vocab_size=config.vocab_size,
        pooling=pooling,
    )


def _pretrained_text_side(access: HubAccess, config: Any) -> TextSide:
    name = access.name
    if config.model_type != "clip":
        raise ModelUnavailableError(
            f"{name} holds a CLIP image tower only (model_type {config.model_type!r}): "
            "pass --no-text to export it without search by text"
        )
    text_config = config.text_config
    text_config.projection_dim = config.projection_dim
    model = CLIPTextModelWithProjection.from_pretrained(
        name, config=text_config, attn_implementation=ATTENTION, **access.options()
    )
    try:
        tokenizer = CLIPTokenizerFast.from_pretrained(
            name, revision=access.revision or "main", local_files_only=access.local_only
        )
    except (OSError, ValueError, TypeError) as exc:  # TypeError: no vocabulary file at all
        # transformers' own message says why a download failed, but for a folder without the
        # files it is a Python type error about a None path: not for a person
        why = "" if isinstance(exc, TypeError) else f" ({first_line(exc)})"
        raise ModelUnavailableError(
            f"{name} has a text tower but no tokenizer files: it needs tokenizer.json, or "
            f"vocab.json and merges.txt{why}. Save the tokenizer beside the model "
            "(CLIPTokenizerFast.from_pretrained(ID).save_pretrained(DIR)), or pass --no-text "
            "to export the image tower alone"
        ) from exc
    if text_config.max_position_embeddings < CONTEXT_LENGTH:
        raise UnsupportedModelError(
            f"{name}'s text tower has {text_config.max_position_embeddings} positions; "
            f"Lookalike exports CLIP's {CONTEXT_LENGTH}"
        )
    return text_side(model.eval(), tokenizer)


def _vision_config(config: Any) -> CLIPVisionConfig:
    """The vision half of a full CLIP config; its projection width lives at the top level."""
    if config.model_type == "clip_vision_model":
        return config
    vision_config = config.vision_config
    vision_config.projection_dim = config.projection_dim
    return vision_config


def preprocess_spec(processor: CLIPImageProcessor, image_size: int) -> PreprocessSpec:
    """Copy the processor's rule into the manifest's terms."""
    size = processor.size
    shortest_edge = size.get("shortest_edge") or min(size.get("height", 0), size.get("width", 0))
    if not shortest_edge:
        raise UnsupportedModelError(f"unsupported preprocessor size rule {size!r}")
    crop = processor.crop_size or {"height": image_size, "width": image_size}
    return PreprocessSpec(
        image_size=image_size,
        resize_shortest_edge=int(shortest_edge),
        resample=resample_name(processor.resample),
        center_crop=bool(processor.do_center_crop),
        crop_height=int(crop["height"]),
        crop_width=int(crop["width"]),
        rescale_factor=float(processor.rescale_factor),
        mean=per_channel(processor.image_mean),
        std=per_channel(processor.image_std),
        convert_rgb=bool(getattr(processor, "do_convert_rgb", True)),
    )
