"""SigLIP (`SiglipModel`): an image tower pooled by its attention head, a text tower pooled at
its last token (texts are always padded to 64), `SiglipImageProcessor`'s rule (both sides
resized to the input size, no crop, mean and std 0.5) and a SentencePiece tokenizer. Neither
tower has a projection: the pooled vectors are the embeddings. Scores become SigLIP's
probability as sigmoid(cosine * exp(logit_scale) + logit_bias), which the manifest records.

SigLIP 2's fixed-resolution checkpoints are the same model with Gemma's tokenizer (texts
lowercased, see `gemma_tokenizer`); its NaFlex (variable resolution) ones are refused: they
take patches, not an image of a fixed size.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    GemmaTokenizer,
    GemmaTokenizerFast,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    SiglipTokenizer,
)
from transformers.models.siglip.modeling_siglip import (
    SiglipMultiheadAttentionPoolingHead,
    SiglipVisionTransformer,
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
from lookalike.export.families.gemma_tokenizer import (
    check_siglip2_rule,
    lowercasing_tokenizer,
    trained_gemma_tokenizers,
)
from lookalike.export.families.siglip_tokenizer import (
    fast_siglip_tokenizer,
    trained_siglip_tokenizer,
)
from lookalike.export.hub import HubAccess, first_line
from lookalike.export.manifest import ModelSource, PreprocessSpec, ScoreScale
from lookalike.export.optimize import QuantizationPlan

__all__ = ["FAMILY", "MODEL_TYPES", "PRESETS", "pretrained_checkpoint", "random_checkpoint"]

log = logging.getLogger(__name__)

FAMILY = "siglip"
MODEL_TYPES = ("siglip",)
REFUSED_MODEL_TYPES = {
    "siglip2": "SigLIP 2 NaFlex checkpoints take variable-resolution patches, not an image of "
    "a fixed size; export a fixed-resolution one (e.g. google/siglip2-base-patch16-224)",
}
CONTEXT_LENGTH = 64  # SigLIP's text positions; texts are padded to all of them
BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
GEMMA_VOCABULARY = 256000  # SigLIP 2's text embedding rows (the trained vocabulary uses fewer)
# shape, tokenizer ("siglip": SentencePiece unigram; "gemma": SigLIP 2's) and resize filter
# (SigLIP's processors name bicubic; SigLIP 2's presets take Siglip2ImageProcessor's bilinear)
PRESETS: dict[str, dict[str, Any]] = {
    "siglip-tiny": dict(
        vision={**TINY, "image_size": 224, "patch_size": 32},
        text=dict(TINY),
        tokenizer="siglip",
        resample=Image.Resampling.BICUBIC,
    ),
    "siglip-base-patch16-224": dict(
        vision={**BASE, "image_size": 224, "patch_size": 16},
        text=dict(BASE),
        tokenizer="siglip",
        resample=Image.Resampling.BICUBIC,
    ),
}
SIGLIP2 = dict(tokenizer="gemma", resample=Image.Resampling.BILINEAR)  # the same towers
PRESETS["siglip2-tiny"] = {**PRESETS["siglip-tiny"], **SIGLIP2}
PRESETS["siglip2-base-patch16-224"] = {
    **PRESETS["siglip-base-patch16-224"],
    **SIGLIP2,
    "text": {**BASE, "vocab_size": GEMMA_VOCABULARY},
}
# The pooling head reads the whole image and writes the embedding; the MLP down-projections
# carry the activation outliers, as in CLIP.
IMAGE_INT8_PLANS = (
    QuantizationPlan("head-fp32", ("/pool/",)),
    QuantizationPlan("edges-fp32", ("patch_embedding", "/pool/")),
    QuantizationPlan("edges-and-mlp-out-fp32", ("patch_embedding", "/pool/", "mlp/fc2")),
)
TEXT_INT8_PLANS = (
    QuantizationPlan("head-fp32", ("/tower/head/",)),
    QuantizationPlan("head-and-mlp-out-fp32", ("/tower/head/", "mlp/fc2")),
)
ATTENTION = "eager"  # the ONNX Runtime optimizer fuses eager attention
RANDOM_INIT_SEED = 0
SIGLIP_MEAN_STD = (0.5, 0.5, 0.5)


@dataclasses.dataclass(frozen=True)
class _Tokenizers:
    """The family's reference tokenizer, the fast one the server runs, and whether texts are
    lowercased before the reference sees them (SigLIP 2 was trained on lowercased text)."""

    reference: PreTrainedTokenizerBase
    packaged: PreTrainedTokenizerFast
    lowercase: bool

    @classmethod
    def siglip(cls, tokenizer: SiglipTokenizer) -> _Tokenizers:
        return cls(tokenizer, fast_siglip_tokenizer(tokenizer), lowercase=False)

    @classmethod
    def siglip2(
        cls, reference: GemmaTokenizer | GemmaTokenizerFast, fast: GemmaTokenizerFast
    ) -> _Tokenizers:
        return cls(reference, lowercasing_tokenizer(fast), lowercase=True)


class _AttentionPool(torch.nn.Module):
    """SigLIP's pooling head written out in plain operations.

    The head is a `torch.nn.MultiheadAttention` of one learned query (the probe); traced, its
    shape logic defeats ONNX shape inference, and then the optimizer fuses nothing in the
    encoder. The same arithmetic, in the same order, traces cleanly.
    """

    def __init__(self, head: SiglipMultiheadAttentionPoolingHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        attention, functional = self.head.attention, torch.nn.functional
        batch, _, width = hidden.shape
        heads = attention.num_heads
        head_width = width // heads
        w_query, w_key, w_value = attention.in_proj_weight.chunk(3)
        b_query, b_key, b_value = attention.in_proj_bias.chunk(3)
        query = functional.linear(self.head.probe, w_query, b_query)
        query = query.reshape(1, 1, heads, head_width).transpose(1, 2)
        key = functional.linear(hidden, w_key, b_key).reshape(batch, -1, heads, head_width)
        value = functional.linear(hidden, w_value, b_value).reshape(batch, -1, heads, head_width)
        scores = torch.matmul(query, key.permute(0, 2, 3, 1)) * head_width**-0.5
        pooled = torch.matmul(torch.softmax(scores, dim=-1), value.transpose(1, 2))
        pooled = attention.out_proj(pooled.transpose(1, 2).reshape(batch, 1, width))
        pooled = pooled + self.head.mlp(self.head.layernorm(pooled))
        return pooled[:, 0]


class _ImageEmbedder(torch.nn.Module):
    """Vision encoder, attention-pooling head, L2 normalisation."""

    def __init__(self, tower: SiglipVisionTransformer) -> None:
        super().__init__()
        self.tower = tower
        self.pool = _AttentionPool(tower.head)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        embedded = self.tower.embeddings(pixel_values)
        hidden = self.tower.encoder(inputs_embeds=embedded).last_hidden_state
        pooled = self.pool(self.tower.post_layernorm(hidden))
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)


def random_checkpoint(preset: str, *, text: bool) -> Checkpoint:
    shape = PRESETS[preset]
    tokenizers = _trained_tokenizers(shape["tokenizer"]) if text else None
    vocab_size = len(tokenizers.packaged) if tokenizers is not None else 32000
    config = SiglipConfig(
        vision_config=shape["vision"],
        text_config={
            "vocab_size": vocab_size,
            **shape["text"],
            "max_position_embeddings": CONTEXT_LENGTH,
            "pad_token_id": tokenizers.packaged.pad_token_id if tokenizers else None,
            "eos_token_id": tokenizers.packaged.eos_token_id if tokenizers else None,
        },
    )
    torch.manual_seed(RANDOM_INIT_SEED)
    model = SiglipModel._from_config(config, attn_implementation=ATTENTION).eval()
    size = config.vision_config.image_size
    processor = SiglipImageProcessor(
        size={"height": size, "width": size},
        resample=shape["resample"],
        image_mean=list(SIGLIP_MEAN_STD),
        image_std=list(SIGLIP_MEAN_STD),
    )
    return _checkpoint(
        model,
        processor,
        tokenizers,
        ModelSource(kind="random-init", id=preset, random_weights=True),
    )


def _trained_tokenizers(kind: str) -> _Tokenizers:
    if kind == "gemma":
        return _Tokenizers.siglip2(*trained_gemma_tokenizers(CONTEXT_LENGTH))
    return _Tokenizers.siglip(trained_siglip_tokenizer(CONTEXT_LENGTH))


def pretrained_checkpoint(access: HubAccess, config: Any, *, text: bool) -> Checkpoint:
    name = access.name
    try:
        model = SiglipModel.from_pretrained(
            name, attn_implementation=ATTENTION, **access.options()
        ).eval()
    except OSError as exc:
        raise ModelUnavailableError(
            f"{name} has a SigLIP config but no loadable weights: {first_line(exc)}"
        ) from exc
    try:
        processor = SiglipImageProcessor.from_pretrained(
            name, revision=access.revision or "main", local_files_only=access.local_only
        )
    except OSError as exc:
        raise ModelUnavailableError(
            f"{name} has no preprocessor_config.json: SigLIP's resize and statistics differ per "
            f"checkpoint, so Lookalike does not guess them ({first_line(exc)})"
        ) from exc
    tokenizers = _pretrained_tokenizer(access) if text else None
    source = ModelSource(
        kind=access.kind,
        id=name,
        revision=getattr(config, "_commit_hash", None) if access.kind == "hub" else None,
    )
    return _checkpoint(model, processor, tokenizers, source)


def _pretrained_tokenizer(access: HubAccess) -> _Tokenizers:
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            access.name, revision=access.revision or "main", local_files_only=access.local_only
        )
    except (OSError, ValueError, TypeError, ImportError) as exc:
        raise ModelUnavailableError(
            f"{access.name} has a text tower but its tokenizer does not load "
            f"({first_line(exc)}): SigLIP's needs spiece.model and sentencepiece, SigLIP 2's "
            "tokenizer.json (or tokenizer.model and sentencepiece); or pass "
            "--no-text"
        ) from exc
    if isinstance(tokenizer, SiglipTokenizer):
        return _Tokenizers.siglip(tokenizer)
    if isinstance(tokenizer, GemmaTokenizerFast):
        check_siglip2_rule(access.name, tokenizer)
        return _Tokenizers.siglip2(tokenizer, tokenizer)
    raise UnsupportedModelError(
        f"{access.name}'s tokenizer is {type(tokenizer).__name__}, neither SigLIP's "
        "SentencePiece tokenizer nor SigLIP 2's fast Gemma tokenizer (tokenizer.json): pass "
        "--no-text to export its image tower alone"
    )


def _checkpoint(
    model: SiglipModel,
    processor: SiglipImageProcessor,
    tokenizers: _Tokenizers | None,
    source: ModelSource,
) -> Checkpoint:
    return Checkpoint(
        family=FAMILY,
        source=source,
        image=_image_side(model, processor),
        text=None if tokenizers is None else _text_side(model, tokenizers),
        scores=ScoreScale(
            kind="sigmoid",
            scale=float(model.logit_scale.detach().exp()),
            bias=float(model.logit_bias.detach()),
        ),
    )


def _image_side(model: SiglipModel, processor: SiglipImageProcessor) -> ImageSide:
    config = model.config.vision_config
    tower = Tower.of(
        _ImageEmbedder(model.vision_model),
        config,
        dims=config.hidden_size,
        int8_plans=IMAGE_INT8_PLANS,
    )
    return ImageSide.of(tower, config, processor, preprocess_spec(processor, config.image_size))


def _text_side(model: SiglipModel, tokenizers: _Tokenizers) -> TextSide:
    config = model.config.text_config
    tower = Tower.of(
        Normalized(model.text_model, input_name="input_ids", output="pooler_output"),
        config,
        dims=config.projection_size,
        int8_plans=TEXT_INT8_PLANS,
    )
    return TextSide.of(
        tower,
        reference=tokenizers.reference,
        packaged=tokenizers.packaged,
        lowercase=tokenizers.lowercase,
        context_length=config.max_position_embeddings,
        vocab_size=config.vocab_size,
        pooling="last-token",
    )


def preprocess_spec(processor: SiglipImageProcessor, image_size: int) -> PreprocessSpec:
    """`SiglipImageProcessor`'s rule in the manifest's terms: squash to the input size."""
    size = processor.size
    if (size.get("height"), size.get("width")) != (image_size, image_size):
        raise UnsupportedModelError(
            f"SigLIP processor size {size!r} does not match the {image_size}px model input"
        )
    return PreprocessSpec(
        image_size=image_size,
        resize_shortest_edge=image_size,
        resample=resample_name(processor.resample),
        center_crop=False,
        crop_height=image_size,
        crop_width=image_size,
        rescale_factor=float(processor.rescale_factor),
        mean=per_channel(processor.image_mean),
        std=per_channel(processor.image_std),
        resize="squash",
    )
