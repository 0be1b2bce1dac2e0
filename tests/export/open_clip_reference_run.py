"""Run by the heavy reference venv's Python (scripts/open-clip-reference.sh), never by the
suite's: the real `open_clip.create_model_and_transforms(NAME)`, randomly initialised, written
as an open_clip folder, and its own transforms', tokenizer's and model's embeddings of the
given images and texts.

    python open_clip_reference_run.py NAME FOLDER IMAGES_DIR TEXTS_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image
from safetensors.torch import save_file


def main(name: str, folder: Path, images_dir: Path, texts_json: Path) -> None:
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    model.eval()
    folder.mkdir(parents=True)
    document = {
        "model_cfg": open_clip.get_model_config(name),
        "preprocess_cfg": model.visual.preprocess_cfg,
    }
    (folder / "open_clip_config.json").write_text(json.dumps(document))
    weights = {
        k: v.contiguous() for k, v in model.state_dict().items() if not k.endswith("attn_mask")
    }
    save_file(weights, str(folder / "open_clip_model.safetensors"))
    images = sorted(images_dir.glob("*.jpg"))
    pixels = torch.stack([preprocess(Image.open(path)) for path in images])
    texts = json.loads(texts_json.read_text())
    with torch.no_grad():
        image_embeds = model.encode_image(pixels, normalize=True).numpy()
        text_embeds = model.encode_text(
            open_clip.get_tokenizer(name)(texts), normalize=True
        ).numpy()
    np.savez(folder.parent / "reference.npz", images=image_embeds, texts=text_embeds)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
