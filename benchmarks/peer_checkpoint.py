"""A full CLIP checkpoint directory for peer servers that load one (e.g. infinity-emb).

    python benchmarks/peer_checkpoint.py OUT_DIR

Random weights with the ViT-B/32 image tower of `--random-init vit-b-32` (the same compute as
the benchmark model), a ViT-B/32-sized text tower, the standard image processor and a toy
tokenizer: the hub's tokenizer files cannot be downloaded here, and image embedding never uses
them. With network access, a snapshot of openai/clip-vit-base-patch32 serves as well.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import entry_point

TEXT_TOWER = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", metavar="OUT_DIR", type=Path, help="the directory to write")
    write_checkpoint(parser.parse_args().out)


def write_checkpoint(out: Path) -> None:
    """The checkpoint, written to `out` (torch and transformers load here: --help needs
    neither)."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    from lookalike.export.families.clip import PRESETS as RANDOM_INIT_PRESETS

    vision = dict(RANDOM_INIT_PRESETS["vit-b-32"])
    projection_dim = vision.pop("projection_dim")
    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config={**vision, "hidden_act": "quick_gelu"},
        text_config=TEXT_TOWER,
        projection_dim=projection_dim,
    )
    CLIPModel(config).eval().save_pretrained(out)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter], vocab[f"{letter}</w>"] = len(vocab), len(vocab) + 1
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(out)
    print(f"wrote a random-weight CLIP ViT-B/32 checkpoint to {out}")


if __name__ == "__main__":
    entry_point(main)
