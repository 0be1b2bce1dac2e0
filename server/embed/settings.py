"""How a model package is loaded and fed: `EmbedSettings`, what `LocalEmbedders` needs and
all it needs (the server's `ServerConfig` composes it; an embedding replica and `reembed` build
their own)."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path

from lookalike.server.embed.batcher import BatcherSettings
from lookalike.server.embed.onnx_engine import EngineSettings
from lookalike.server.embed.preprocess import ImageLimits, PreprocessMode

__all__ = ["EmbedSettings", "ImageDecoder"]


class ImageDecoder(str, enum.Enum):
    """What decodes JPEGs: Pillow in the server's threads or processes, or nvImageCodec where
    the engine runs, with the resize on the same device (`device_decode`)."""

    PILLOW = "pillow"
    NVIMGCODEC = "nvimgcodec"


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedSettings:
    model_dir: Path  # a lookalike-export package
    engine: EngineSettings = dataclasses.field(default_factory=EngineSettings)
    batcher: BatcherSettings = dataclasses.field(default_factory=BatcherSettings)
    text: bool = True  # load the text tower when the package has one
    text_batcher: BatcherSettings = dataclasses.field(
        default_factory=lambda: BatcherSettings(preprocess_threads=1)  # tokenising is quick
    )
    preprocess_mode: PreprocessMode = PreprocessMode.FAST
    # decode and resize images in this many worker processes (0: in the batcher's threads)
    preprocess_processes: int = 0
    image_decoder: ImageDecoder = ImageDecoder.PILLOW
    image_limits: ImageLimits = dataclasses.field(default_factory=ImageLimits)

    def __post_init__(self) -> None:
        if self.preprocess_processes < 0:
            raise ValueError("preprocess_processes must not be negative")
