"""The family's resize and centre crop as a small ONNX graph, so that ONNX Runtime does them
where the pixels are (on the GPU, for images nvImageCodec decoded there: `device_decode`).

One image per run: uint8[H, W, 3] -> uint8[crop_h, crop_w, 3], the engine's input rows. The
output size and the crop are inputs (`ResizeCrop.feeds`), so one session serves every image
size. It reproduces `Preprocessor.exact`: Pillow's antialiased resize (ONNX `Resize` with
`antialias=1` follows Pillow's filters; bicubic with a = -0.5), then the crop, rounded back to
uint8. On the sample photographs it is within one level of Pillow's pixels for 99.9% of them
(tests/server/embed/test_device_decode.py). ONNX Runtime's CUDA kernel antialiases NCHW only,
hence the transposes around it.

Building the graph needs the `onnx` package (in the `gpu` and `export` extras).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lookalike.export.manifest import PreprocessSpec
from lookalike.server.embed.preprocess import resized_shape

__all__ = ["ResizeCrop", "UnsupportedResampleError", "resize_crop_model"]

OPSET = 19  # Resize's antialias attribute needs opset 18
# Pillow filter -> ONNX Resize attributes of the same filter, antialiased
FILTERS: dict[str, dict[str, Any]] = {
    "bicubic": {"mode": "cubic", "cubic_coeff_a": -0.5},
    "bilinear": {"mode": "linear"},
}
PIXELS, SIZES, STARTS, ENDS, CROPPED = "pixels", "sizes", "starts", "ends", "cropped"


class UnsupportedResampleError(ValueError):
    """The checkpoint resizes with a filter ONNX Resize does not reproduce."""


def resize_crop_model(resample: str) -> bytes:
    """The serialized ONNX model: `pixels` uint8[H, W, 3], `sizes` int64[4] (1, 3, new_h,
    new_w), `starts`/`ends` int64[2] (the crop's rows and columns) -> `cropped` uint8."""
    from onnx import TensorProto, helper  # only where images are resized by ONNX Runtime

    if resample not in FILTERS:
        raise UnsupportedResampleError(
            f"this checkpoint resizes with Pillow's {resample!r} filter, which ONNX Resize "
            f"does not reproduce (it does: {', '.join(FILTERS)})"
        )
    constant = helper.make_tensor
    nodes = [
        helper.make_node("Cast", [PIXELS], ["float_hwc"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["float_hwc"], ["float_chw"], perm=[2, 0, 1]),
        helper.make_node("Unsqueeze", ["float_chw", "batch_axis"], ["float_nchw"]),
        helper.make_node(
            "Resize",
            ["float_nchw", "", "", SIZES],
            ["resized"],
            antialias=1,
            coordinate_transformation_mode="half_pixel",
            **FILTERS[resample],
        ),
        helper.make_node("Slice", ["resized", STARTS, ENDS, "crop_axes"], ["cut"]),
        helper.make_node("Round", ["cut"], ["rounded"]),
        helper.make_node("Clip", ["rounded", "black", "white"], ["clipped"]),
        helper.make_node("Squeeze", ["clipped", "batch_axis"], ["chw"]),
        helper.make_node("Transpose", ["chw"], ["hwc"], perm=[1, 2, 0]),
        helper.make_node("Cast", ["hwc"], [CROPPED], to=TensorProto.UINT8),
    ]
    initializers = [
        constant("batch_axis", TensorProto.INT64, [1], [0]),
        constant("crop_axes", TensorProto.INT64, [2], [2, 3]),
        constant("black", TensorProto.FLOAT, [], [0.0]),
        constant("white", TensorProto.FLOAT, [], [255.0]),
    ]
    inputs = [
        helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, ["height", "width", 3]),
        helper.make_tensor_value_info(SIZES, TensorProto.INT64, [4]),
        helper.make_tensor_value_info(STARTS, TensorProto.INT64, [2]),
        helper.make_tensor_value_info(ENDS, TensorProto.INT64, [2]),
    ]
    output = helper.make_tensor_value_info(CROPPED, TensorProto.UINT8, ["crop_h", "crop_w", 3])
    graph = helper.make_graph(nodes, "resize_crop", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    return model.SerializeToString()


@dataclasses.dataclass(frozen=True)
class ResizeCrop:
    """Where one image of a given upright size is resized to and cut, by the spec's rule."""

    spec: PreprocessSpec

    def fits(self, width: int, height: int) -> bool:
        """Whether the crop lies inside the resized image (else the CPU path pads it)."""
        new_w, new_h = self._resized(width, height)
        return not self.spec.center_crop or (
            new_w >= self.spec.crop_width and new_h >= self.spec.crop_height
        )

    def feeds(self, width: int, height: int) -> dict[str, np.ndarray]:
        """The graph's size and crop inputs for an image of this size (one that `fits`)."""
        spec = self.spec
        new_w, new_h = self._resized(width, height)
        crop_w, crop_h = (spec.crop_width, spec.crop_height) if spec.center_crop else (new_w, new_h)
        top, left = spec.crop_start(new_h - crop_h), spec.crop_start(new_w - crop_w)
        return {
            SIZES: np.array([1, 3, new_h, new_w], np.int64),
            STARTS: np.array([top, left], np.int64),
            ENDS: np.array([top + crop_h, left + crop_w], np.int64),
        }

    def _resized(self, width: int, height: int) -> tuple[int, int]:
        return resized_shape(width, height, self.spec)
