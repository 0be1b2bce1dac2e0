"""OpenCLIP checkpoints, from open_clip's own files: a folder with `open_clip_config.json`
(`model_cfg`, `preprocess_cfg`) beside `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin`, as the hub publishes DFN, DataComp, LAION and MetaCLIP models.

The native towers (open_clip's `VisionTransformer` and its built-in text transformer) have
Hugging Face's CLIP blocks: their weights are renamed into Hugging Face's CLIP towers (the
`in_proj` of each attention split into q, k, v; the projections transposed), with open_clip's
own choices around the blocks restated in `openclip_towers` (no LayerNorm before them, the
patch tokens' mean, LayerNorm after pooling; no causal mask, pooling at the last position or at
an end token, a projection bias). From there the CLIP export path runs unchanged: the same
fusions, precisions and parity bars. Neither open_clip nor torchvision is needed. A
configuration this conversion cannot reproduce (timm or Hugging Face towers, a modified
ResNet, attentional pooling, layer scale, custom attention blocks) is refused before any
work, naming the key: never exported wrong. A refusal of the text tower alone says that
`--no-text` exports the image tower.

Preprocessing follows `preprocess_cfg` (the short side resized to `size`, bicubic unless it
says otherwise, centre crop, mean and std), the crop starting where torchvision's
`CenterCrop` starts it (an odd margin's half rounded half to even: the package's
`crop_offset`, which the server follows). Texts use CLIP's BPE tokenizer (OpenAI's merges),
lower-cased and whitespace-cleaned as open_clip does, or the Hugging Face tokenizer the config
names (`openclip_tokenizer`); open_clip also runs `ftfy` and unescapes HTML, which the
packaged tokenizers do not.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPVisionConfig
from transformers.image_utils import (
    ChannelDimension,
    get_image_size,
    infer_channel_dimension_format,
)

from lookalike.export.checkpoint import Checkpoint
from lookalike.export.errors import ModelUnavailableError, UnsupportedModelError
from lookalike.export.families import clip
from lookalike.export.families.openclip_tokenizer import (
    TOKENIZER_KWARGS,
    TextTokenizers,
    hf_text_tokenizer,
)
from lookalike.export.families.openclip_towers import (
    TEXT_POOLS,
    VISION_POOLS,
    OpenClipTextTower,
    OpenClipVisionTower,
)
from lookalike.export.manifest import ModelSource, crop_start
from lookalike.export.tokenizer import CONTEXT_LENGTH, clip_bpe_tokenizer

__all__ = [
    "CONFIG_FILE",
    "FAMILY",
    "PRESETS",
    "WEIGHT_FILES",
    "folder_checkpoint",
    "is_openclip_folder",
    "random_checkpoint",
    "to_hugging_face",
]

FAMILY = "openclip"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
VOCAB_SIZE = 49408
TORCHVISION_CROP = "round-half-even"  # CenterCrop's offset rule (manifest CROP_OFFSETS)
RESAMPLE = {  # PIL's filters, as open_clip names them
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}

# What the conversion reproduces: each key's value that the standard towers have (STANDARD) or
# the values it restates (CHOICES). A key set otherwise is refused; keys in IGNORED only change
# training; keys in a *_SHAPE are sizes, free.
BLOCK_STANDARD: dict[str, Any] = {  # open_clip's residual block, as both towers build it
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
VISION_STANDARD: dict[str, Any] = {
    "ls_init_value": None,
    "attentional_pool": False,
    "pos_embed_type": "learnable",
    **BLOCK_STANDARD,
    "timm_model_name": None,
}
YES_NO = (False, True)
VISION_CHOICES: dict[str, tuple[Any, ...]] = {
    "no_ln_pre": YES_NO,
    "pool_type": VISION_POOLS,
    "final_ln_after_pool": YES_NO,
}
TEXT_STANDARD: dict[str, Any] = {
    "tokenizer_mode": None,
    "ls_init_value": None,
    "embed_cls": False,
    "pad_id": 0,
    "final_ln_after_pool": False,
    "proj_type": "linear",
    **BLOCK_STANDARD,
    "hf_model_name": None,
}
TEXT_CHOICES: dict[str, tuple[Any, ...]] = {
    "no_causal_mask": YES_NO,
    "pool_type": TEXT_POOLS,
    "proj_bias": YES_NO,
}
VISION_SHAPE = ("layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size")
TEXT_SHAPE = ("width", "heads", "layers", "mlp_ratio", "context_length", "vocab_size", "eos_id")
TEXT_TOKENIZER = ("hf_tokenizer_name", "tokenizer_kwargs")  # checked in _check_text_tokenizer
IGNORED = ("patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads")
OPEN_CLIP_EOS_ID = 2  # TextTransformer's default eos_id
POOLING = {  # text_cfg.pool_type as the manifest names where the graph reads a text's vector
    "argmax": "first-end-token",
    "eos": "first-end-token",
    "first": "first-token",
    "last": "last-token",
}
IGNORED_TOP = ("init_logit_scale", "init_logit_bias", "cast_dtype", "custom_text")
TIMM_KEYS = ("timm_model_pretrained", "timm_pool", "timm_proj", "timm_proj_bias")
HF_KEYS = ("hf_model_pretrained", "hf_proj_type", "hf_pooler_type")

PRESETS: dict[str, dict[str, Any]] = {
    "openclip-tiny": dict(
        embed_dim=16,
        vision_cfg=dict(image_size=224, layers=2, width=32, head_width=8, patch_size=32),
        text_cfg=dict(width=32, heads=4, layers=2),
    ),
    "openclip-vit-b-32": dict(
        embed_dim=512,
        vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=32),
        text_cfg=dict(width=512, heads=8, layers=12),
    ),
    "openclip-vit-b-32-quickgelu": dict(
        embed_dim=512,
        quick_gelu=True,
        vision_cfg=dict(image_size=224, layers=12, width=768, patch_size=32),
        text_cfg=dict(width=512, heads=8, layers=12),
    ),
}
RANDOM_INIT_SEED = 0


@dataclasses.dataclass(frozen=True)
class Converted:
    """An OpenCLIP model as Hugging Face's CLIP towers (the text tower when asked for)."""

    vision: OpenClipVisionTower
    text: OpenClipTextTower | None


def is_openclip_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def folder_checkpoint(folder: Path, *, text: bool, source_id: str | None = None) -> Checkpoint:
    """An open_clip folder's towers, preprocessing and tokenizer; `source_id` names where it
    came from (an `hf-hub:` name), else the folder itself."""
    document = _read_config(folder)
    model_cfg, preprocess_cfg = document["model_cfg"], document.get("preprocess_cfg", {})
    check_supported(model_cfg, str(folder), text=text)
    tokenizers = _tokenizers(model_cfg, folder) if text else None  # before minutes of work
    state = _read_weights(folder)
    strip_id = tokenizers.strip_id if tokenizers else None
    converted = to_hugging_face(model_cfg, state, text=text, strip_id=strip_id)
    source = (
        ModelSource(kind="hub", id=source_id)
        if source_id
        else ModelSource(kind="local", id=str(folder.resolve()))
    )
    return _checkpoint(converted, preprocess_cfg, source, tokenizers)


def random_checkpoint(preset: str, *, text: bool) -> Checkpoint:
    """A preset's shape in open_clip's layout, with random weights, through the same
    conversion as a real folder."""
    model_cfg = PRESETS[preset]
    tokenizers = _tokenizers(model_cfg, None) if text else None
    converted = to_hugging_face(model_cfg, random_state_dict(model_cfg), text=text)
    source = ModelSource(kind="random-init", id=preset, random_weights=True)
    return _checkpoint(converted, {}, source, tokenizers)


def check_supported(model_cfg: dict[str, Any], name: str, *, text: bool = True) -> None:
    """Refuse, naming the key, any setting the conversion cannot reproduce (in `text_cfg` only
    where the text tower is asked for)."""
    vision, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if "multimodal_cfg" in model_cfg:
        raise UnsupportedModelError(
            f"{name}: a CoCa model (multimodal_cfg); export its towers only"
        )
    _check_section(
        vision, VISION_STANDARD, VISION_CHOICES, VISION_SHAPE + TIMM_KEYS, name, "vision_cfg"
    )
    if text:
        try:
            _check_section(
                text_cfg,
                TEXT_STANDARD,
                TEXT_CHOICES,
                TEXT_SHAPE + TEXT_TOKENIZER + HF_KEYS,
                name,
                "text_cfg",
            )
            _check_text_tokenizer(text_cfg, name)
        except UnsupportedModelError as refused:
            raise UnsupportedModelError(
                f"{refused} (--no-text exports the image tower alone)"
            ) from refused
    if not isinstance(vision.get("layers", 12), int):
        raise UnsupportedModelError(
            f"{name}: vision_cfg.layers is {vision['layers']}: a modified ResNet, which Lookalike "
            "does not export (the ViT towers only)"
        )
    size = vision.get("image_size", 224)
    if isinstance(size, (list, tuple)) and len(set(size)) != 1:
        raise UnsupportedModelError(f"{name}: vision_cfg.image_size {size} is not square")
    unknown = set(model_cfg) - {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", *IGNORED_TOP}
    if unknown:
        raise UnsupportedModelError(f"{name}: unknown model_cfg key {sorted(unknown)[0]!r}")


def _check_section(
    section: dict[str, Any],
    standard: dict[str, Any],
    choices: dict[str, tuple[Any, ...]],
    free: tuple[str, ...],
    name: str,
    where: str,
) -> None:
    for key, value in section.items():
        if key in free or key in IGNORED:
            continue
        if key in choices:
            if value not in choices[key]:
                raise UnsupportedModelError(
                    f"{name}: {where}.{key} = {value!r}; Lookalike exports "
                    f"{' or '.join(map(repr, choices[key]))}"
                )
        elif key not in standard:
            raise UnsupportedModelError(f"{name}: unknown {where} key {key!r}")
        elif value != standard[key]:
            raise UnsupportedModelError(
                f"{name}: {where}.{key} = {value!r}; Lookalike exports open_clip's standard "
                f"towers ({key} = {standard[key]!r}), and would export this one wrong"
            )


def _check_text_tokenizer(text_cfg: dict[str, Any], name: str) -> None:
    """CLIP's BPE tokenizer fixes the vocabulary and the context; a Hugging Face one brings
    its own, cleaned as its `tokenizer_kwargs` say."""
    if text_cfg.get("hf_tokenizer_name") is None:
        for key, value in (("vocab_size", VOCAB_SIZE), ("context_length", CONTEXT_LENGTH)):
            if text_cfg.get(key, value) != value:
                raise UnsupportedModelError(
                    f"{name}: text_cfg.{key} = {text_cfg[key]!r} with CLIP's BPE tokenizer, "
                    f"whose {key} is {value}"
                )
        if text_cfg.get("tokenizer_kwargs"):
            raise UnsupportedModelError(
                f"{name}: text_cfg.tokenizer_kwargs without hf_tokenizer_name"
            )
        return
    unknown = set(text_cfg.get("tokenizer_kwargs") or {}) - set(TOKENIZER_KWARGS)
    if unknown:
        raise UnsupportedModelError(
            f"{name}: text_cfg.tokenizer_kwargs.{sorted(unknown)[0]}; Lookalike follows "
            f"{' and '.join(TOKENIZER_KWARGS)}"
        )


def _tokenizers(model_cfg: dict[str, Any], folder: Path | None) -> TextTokenizers:
    """CLIP's BPE tokenizer, or the Hugging Face one the config names."""
    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name") is None or folder is None:
        bpe = clip_bpe_tokenizer()
        return TextTokenizers(bpe, bpe, None)
    return hf_text_tokenizer(text_cfg, folder)


def to_hugging_face(
    model_cfg: dict[str, Any],
    state: dict[str, torch.Tensor],
    *,
    text: bool,
    strip_id: int | None = None,
) -> Converted:
    """The state dict of open_clip's `CLIP` (or `CustomTextCLIP`, whose text tower sits under
    `text.`) in Hugging Face's CLIP towers; `strip_id`: the separator the text tower replaces
    with padding (open_clip's `strip_sep_token`)."""
    state = {k.removeprefix("text."): v for k, v in state.items()}
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    dims = int(model_cfg["embed_dim"])
    vision = _vision_config(model_cfg.get("vision_cfg", {}), dims, act)
    vision_model = OpenClipVisionTower._from_config(vision, attn_implementation="eager")
    _load(vision_model, _vision_weights(state, vision.num_hidden_layers), "the image tower")
    text_model = None
    if text:
        text_cfg = model_cfg.get("text_cfg", {})
        config = _text_config(text_cfg, dims, act, strip_id)
        text_model = OpenClipTextTower._from_config(config, attn_implementation="eager")
        weights = _text_weights(state, config.num_hidden_layers, bias=config.openclip_proj_bias)
        _load(text_model, weights, "the text tower")
    return Converted(vision_model.eval(), text_model.eval() if text_model else None)


def _vision_config(cfg: dict[str, Any], dims: int, act: str) -> CLIPVisionConfig:
    width = int(cfg.get("width", 768))
    size = cfg.get("image_size", 224)
    return CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=int(width * cfg.get("mlp_ratio", 4.0)),
        num_hidden_layers=int(cfg.get("layers", 12)),
        num_attention_heads=width // int(cfg.get("head_width", 64)),
        image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        patch_size=int(cfg.get("patch_size", 16)),
        projection_dim=dims,
        hidden_act=act,
        layer_norm_eps=1e-5,
        openclip_ln_pre=not cfg.get("no_ln_pre", False),
        openclip_pool=cfg.get("pool_type", "tok"),
        openclip_ln_after_pool=bool(cfg.get("final_ln_after_pool", False)),
    )


def _text_config(cfg: dict[str, Any], dims: int, act: str, strip_id: int | None) -> CLIPTextConfig:
    width = int(cfg.get("width", 512))
    context = int(cfg.get("context_length", CONTEXT_LENGTH))
    return CLIPTextConfig(
        **{
            **clip.CLIP_TEXT,
            "vocab_size": int(cfg.get("vocab_size", VOCAB_SIZE)),
            "max_position_embeddings": context,
        },
        hidden_size=width,
        intermediate_size=int(width * cfg.get("mlp_ratio", 4.0)),
        num_hidden_layers=int(cfg.get("layers", 12)),
        num_attention_heads=int(cfg.get("heads", 8)),
        projection_dim=dims,
        hidden_act=act,
        layer_norm_eps=1e-5,
        openclip_causal=not cfg.get("no_causal_mask", False),
        openclip_pool=cfg.get("pool_type", "argmax"),
        openclip_end_id=int(cfg.get("eos_id", OPEN_CLIP_EOS_ID)),
        openclip_proj_bias=bool(cfg.get("proj_bias", False)),
        openclip_strip_id=strip_id,
    )


def _blocks(state: dict[str, torch.Tensor], source: str, target: str, layers: int) -> dict:
    """open_clip's residual blocks as Hugging Face's encoder layers."""
    renamed = {}
    for i in range(layers):
        block, layer = f"{source}.resblocks.{i}", f"{target}.layers.{i}"
        q, k, v = state[f"{block}.attn.in_proj_weight"].chunk(3)
        qb, kb, vb = state[f"{block}.attn.in_proj_bias"].chunk(3)
        renamed.update(
            {
                f"{layer}.self_attn.q_proj.weight": q,
                f"{layer}.self_attn.k_proj.weight": k,
                f"{layer}.self_attn.v_proj.weight": v,
                f"{layer}.self_attn.q_proj.bias": qb,
                f"{layer}.self_attn.k_proj.bias": kb,
                f"{layer}.self_attn.v_proj.bias": vb,
            }
        )
        for ours, theirs in (
            ("self_attn.out_proj", "attn.out_proj"),
            ("layer_norm1", "ln_1"),
            ("layer_norm2", "ln_2"),
            ("mlp.fc1", "mlp.c_fc"),
            ("mlp.fc2", "mlp.c_proj"),
        ):
            for part in ("weight", "bias"):
                renamed[f"{layer}.{ours}.{part}"] = state[f"{block}.{theirs}.{part}"]
    return renamed


def _vision_weights(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    v = "vision_model"
    ln_pre = {  # absent with no_ln_pre
        f"{v}.pre_layrnorm.{part}": state[f"visual.ln_pre.{part}"]
        for part in ("weight", "bias")
        if f"visual.ln_pre.{part}" in state
    }
    return {
        f"{v}.embeddings.class_embedding": state["visual.class_embedding"],
        f"{v}.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        f"{v}.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        **ln_pre,
        **_blocks(state, "visual.transformer", f"{v}.encoder", layers),
        f"{v}.post_layernorm.weight": state["visual.ln_post.weight"],
        f"{v}.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
    }


def _text_weights(
    state: dict[str, torch.Tensor], layers: int, *, bias: bool
) -> dict[str, torch.Tensor]:
    """With `bias`, open_clip's projection is a `Linear` (weight [out, in] and bias), else a
    bare [in, out] matrix."""
    t = "text_model"
    projection = (
        {
            "text_projection.weight": state["text_projection.weight"],
            "text_projection.bias": state["text_projection.bias"],
        }
        if bias
        else {"text_projection.weight": state["text_projection"].T.contiguous()}
    )
    return {
        f"{t}.embeddings.token_embedding.weight": state["token_embedding.weight"],
        f"{t}.embeddings.position_embedding.weight": state["positional_embedding"],
        **_blocks(state, "transformer", f"{t}.encoder", layers),
        f"{t}.final_layer_norm.weight": state["ln_final.weight"],
        f"{t}.final_layer_norm.bias": state["ln_final.bias"],
        **projection,
    }


def _load(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    expected = {k for k in model.state_dict() if not k.endswith("position_ids")}
    missing = expected - set(weights)
    if missing:
        raise UnsupportedModelError(f"{what} lacks {sorted(missing)[0]!r} after conversion")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)


def random_state_dict(model_cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Random weights in open_clip's layout, scaled as open_clip initialises them."""
    generator = torch.Generator().manual_seed(RANDOM_INIT_SEED)
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    dims = model_cfg["embed_dim"]
    width, patch, size = vision["width"], vision["patch_size"], vision["image_size"]
    state: dict[str, torch.Tensor] = {}

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    def blocks(prefix: str, w: int, layers: int, ratio: float) -> None:
        hidden = int(w * ratio)
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}"
            state.update(
                {
                    f"{b}.ln_1.weight": torch.ones(w),
                    f"{b}.ln_1.bias": torch.zeros(w),
                    f"{b}.attn.in_proj_weight": randn(3 * w, w, scale=w**-0.5),
                    f"{b}.attn.in_proj_bias": torch.zeros(3 * w),
                    f"{b}.attn.out_proj.weight": randn(w, w, scale=w**-0.5),
                    f"{b}.attn.out_proj.bias": torch.zeros(w),
                    f"{b}.ln_2.weight": torch.ones(w),
                    f"{b}.ln_2.bias": torch.zeros(w),
                    f"{b}.mlp.c_fc.weight": randn(hidden, w, scale=(2 * w) ** -0.5),
                    f"{b}.mlp.c_fc.bias": torch.zeros(hidden),
                    f"{b}.mlp.c_proj.weight": randn(w, hidden, scale=hidden**-0.5),
                    f"{b}.mlp.c_proj.bias": torch.zeros(w),
                }
            )

    grid = (size // patch) ** 2
    state.update(
        {
            "visual.class_embedding": randn(width, scale=width**-0.5),
            "visual.conv1.weight": randn(width, 3, patch, patch, scale=(3 * patch * patch) ** -0.5),
            "visual.positional_embedding": randn(grid + 1, width, scale=width**-0.5),
            "visual.ln_pre.weight": torch.ones(width),
            "visual.ln_pre.bias": torch.zeros(width),
            "visual.ln_post.weight": torch.ones(width),
            "visual.ln_post.bias": torch.zeros(width),
            "visual.proj": randn(width, dims, scale=width**-0.5),
        }
    )
    blocks("visual.transformer", width, vision["layers"], vision.get("mlp_ratio", 4.0))
    tw = text["width"]
    state.update(
        {
            "token_embedding.weight": randn(VOCAB_SIZE, tw, scale=0.02),
            "positional_embedding": randn(CONTEXT_LENGTH, tw, scale=0.01),
            "ln_final.weight": torch.ones(tw),
            "ln_final.bias": torch.zeros(tw),
            "text_projection": randn(tw, dims, scale=tw**-0.5),
        }
    )
    blocks("transformer", tw, text["layers"], text.get("mlp_ratio", 4.0))
    return state


def _checkpoint(
    converted: Converted,
    preprocess_cfg: dict[str, Any],
    source: ModelSource,
    tokenizers: TextTokenizers | None,
) -> Checkpoint:
    size = converted.vision.config.image_size
    processor = image_processor(preprocess_cfg, size)
    text_tower = None
    if converted.text is not None and tokenizers is not None:
        config = converted.text.config
        text_tower = clip.text_side(
            converted.text,
            tokenizers.reference,
            packaged=tokenizers.packaged,
            context_length=config.max_position_embeddings,
            pooling=POOLING[config.openclip_pool],
        )
    image = clip.image_side(converted.vision, processor)
    crop = dataclasses.replace(image.preprocess, crop_offset=TORCHVISION_CROP)
    return Checkpoint(
        family=FAMILY,
        source=source,
        image=dataclasses.replace(image, preprocess=crop),
        text=text_tower,
    )


class TorchvisionCropProcessor(CLIPImageProcessor):  # type: ignore[misc]
    """`CLIPImageProcessor` whose centre crop starts where torchvision's `CenterCrop` does
    (an odd margin's half rounded half to even, where Hugging Face floors it): open_clip's
    transforms, which the package's `crop_offset` restates."""

    def center_crop(  # type: ignore[override]
        self,
        image: np.ndarray,
        size: dict[str, int],
        data_format: Any = None,
        input_data_format: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        if input_data_format is None:
            input_data_format = infer_channel_dimension_format(image)
        height, width = get_image_size(image, channel_dim=input_data_format)
        crop_h, crop_w = size["height"], size["width"]
        if height < crop_h or width < crop_w:
            return super().center_crop(image, size, data_format, input_data_format, **kwargs)
        top = crop_start(height - crop_h, TORCHVISION_CROP)
        left = crop_start(width - crop_w, TORCHVISION_CROP)
        if input_data_format == ChannelDimension.FIRST:
            return image[:, top : top + crop_h, left : left + crop_w]
        return image[top : top + crop_h, left : left + crop_w]


def image_processor(preprocess_cfg: dict[str, Any], image_size: int) -> CLIPImageProcessor:
    """open_clip's transforms for inference as the processor that restates them."""
    size = preprocess_cfg.get("size", image_size)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode != "shortest":
        raise UnsupportedModelError(
            f"preprocess_cfg.resize_mode {mode!r}: Lookalike exports open_clip's default, the "
            "shortest side resized then centre-cropped"
        )
    interpolation = preprocess_cfg.get("interpolation", "bicubic")
    if interpolation not in RESAMPLE:
        raise UnsupportedModelError(
            f"preprocess_cfg.interpolation {interpolation!r}: one of {', '.join(RESAMPLE)}"
        )
    return TorchvisionCropProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        resample=RESAMPLE[interpolation],
        image_mean=list(preprocess_cfg.get("mean", OPENAI_MEAN)),
        image_std=list(preprocess_cfg.get("std", OPENAI_STD)),
    )


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"{path} cannot be read as JSON: {exc}") from exc
    if "model_cfg" not in document:
        raise UnsupportedModelError(f"{path} has no model_cfg: not an open_clip folder")
    return document


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    raise ModelUnavailableError(
        f"{folder} has {CONFIG_FILE} but no weights: it needs one of {', '.join(WEIGHT_FILES)}"
    )
