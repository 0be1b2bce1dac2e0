"""open_clip's native towers as Hugging Face's CLIP towers plus the choices open_clip adds.

The blocks are the same (attention, MLP, LayerNorms); what open_clip varies around them, and
released checkpoints use (CLIPA, MetaCLIP 2 worldwide), is restated here over Hugging Face's
modules, so the export path (fusions, precisions, parity bars) stays CLIP's:

- image: no LayerNorm before the blocks (`no_ln_pre`); the patch tokens' mean instead of the
  class token (`pool_type` "avg"); the final LayerNorm after pooling (`final_ln_after_pool`);
- text: no causal mask (`no_causal_mask`); the vector read at the first end token
  (`argmax`, `eos`), the first or the last position; a projection with a bias
  (`proj_bias`); a separator token replaced by padding before the tower sees it (the
  `strip_sep_token` of open_clip's Hugging Face tokenizers).

The choices travel on the Hugging Face config as `openclip_*` attributes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
from transformers.modeling_attn_mask_utils import _create_4d_causal_attention_mask
from transformers.models.clip.modeling_clip import CLIPTextModelOutput, CLIPVisionModelOutput

__all__ = ["OpenClipTextTower", "OpenClipVisionTower", "TEXT_POOLS", "VISION_POOLS"]

VISION_POOLS = ("tok", "avg")
TEXT_POOLS = ("argmax", "eos", "first", "last")
STRIPPED_TO = 0  # what open_clip writes over a stripped separator (`torch.zeros_like`)


class OpenClipVisionTower(CLIPVisionModelWithProjection):  # type: ignore[misc]
    """Config attributes: `openclip_ln_pre` (bool), `openclip_pool` ("tok" | "avg"),
    `openclip_ln_after_pool` (bool)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if not config.openclip_ln_pre:
            self.vision_model.pre_layrnorm = torch.nn.Identity()

    def forward(self, pixel_values: torch.Tensor, **_: Any) -> CLIPVisionModelOutput:
        vision, config = self.vision_model, self.config
        hidden = vision.pre_layrnorm(vision.embeddings(pixel_values))
        hidden = vision.encoder(inputs_embeds=hidden).last_hidden_state
        if config.openclip_pool == "tok":  # one token: the norm before or after is the same
            pooled = vision.post_layernorm(hidden[:, 0])
        elif config.openclip_ln_after_pool:
            pooled = vision.post_layernorm(hidden[:, 1:].mean(dim=1))
        else:
            pooled = vision.post_layernorm(hidden)[:, 1:].mean(dim=1)
        return CLIPVisionModelOutput(image_embeds=self.visual_projection(pooled))


class OpenClipTextTower(CLIPTextModelWithProjection):  # type: ignore[misc]
    """Config attributes: `openclip_causal` (bool), `openclip_pool` (one of TEXT_POOLS),
    `openclip_end_id` (the token `eos` pooling reads at), `openclip_proj_bias` (bool),
    `openclip_strip_id` (a token replaced by padding, or None)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if config.openclip_proj_bias:
            self.text_projection = torch.nn.Linear(
                config.hidden_size, config.projection_dim, bias=True
            )

    def forward(self, input_ids: torch.Tensor, **_: Any) -> CLIPTextModelOutput:
        text, config = self.text_model, self.config
        if config.openclip_strip_id is not None:
            input_ids = torch.where(
                input_ids == config.openclip_strip_id,
                torch.full_like(input_ids, STRIPPED_TO),
                input_ids,
            )
        hidden = text.embeddings(input_ids=input_ids)
        mask = (
            _create_4d_causal_attention_mask(input_ids.shape, hidden.dtype, device=hidden.device)
            if config.openclip_causal
            else None
        )
        hidden = text.encoder(inputs_embeds=hidden, causal_attention_mask=mask).last_hidden_state
        hidden = text.final_layer_norm(hidden)
        return CLIPTextModelOutput(
            text_embeds=self.text_projection(_pooled(hidden, input_ids, config))
        )


def _pooled(hidden: torch.Tensor, input_ids: torch.Tensor, config: Any) -> torch.Tensor:
    """Each text's vector, read where open_clip's `text_global_pool` reads it (ArgMax on
    int32: ONNX's takes no int64 at opset 14)."""
    pool = config.openclip_pool
    if pool == "first":
        return hidden[:, 0]
    if pool == "last":
        return hidden[:, -1]
    if pool == "argmax":  # the end token has the highest id of CLIP's vocabulary
        at = input_ids.to(torch.int32).argmax(dim=-1)
    else:  # "eos": the first end token
        at = (input_ids == config.openclip_end_id).to(torch.int32).argmax(dim=-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), at]
