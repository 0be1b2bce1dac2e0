"""JPEGs decoded, resized and cropped where the engine runs (`--image-decoder nvimgcodec`).

nvImageCodec decodes a batch of JPEGs at once into GPU memory (nvJPEG, and the hardware JPEG
engines where the GPU has them); the resize graph (`resize_graph`) then resizes and crops each
into its row of a run buffer on the same device, and the engine embeds the buffer where it
lies (`OnnxEngine.embed_rows`): no pixel crosses to the host. Without a GPU the same code runs
on the CPU (nvImageCodec's libjpeg-turbo backend, the graph on ONNX Runtime's CPU provider),
which is how the suite tests it.

What it does not take goes the CPU path (`Preprocessor`), with the CPU path's errors
(`DeviceDecoder.takes`): anything but a JPEG; JPEGs other than 8-bit greyscale or YCbCr (CMYK,
YCCK); a JPEG whose data does not end after its last scan (truncated: Pillow refuses those and
nvJPEG might not); an image smaller than the crop (the CPU path pads); regions of images; and
any JPEG the decoder returns no image for (corrupt).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lookalike.export.manifest import PreprocessSpec
from lookalike.server.embed.host_memory import cuda_runtime
from lookalike.server.embed.preprocess import ImageLimits, header_upright_size, read_header
from lookalike.server.embed.resize_graph import CROPPED, PIXELS, ResizeCrop, resize_crop_model
from lookalike.server.errors import ModelLoadError

__all__ = ["DeviceDecoder", "device_decodable", "import_nvimgcodec"]

log = logging.getLogger(__name__)

DECODABLE_MODES = ("RGB", "L")  # Pillow's names for 8-bit YCbCr and greyscale JPEGs
END_OF_IMAGE, START_OF_SCAN = b"\xff\xd9", b"\xff\xda"


def import_nvimgcodec() -> Any:
    """nvImageCodec's module; ModelLoadError naming the install if it is missing. Its warnings
    (one per JPEG it cannot decode, which the CPU path then takes) are off unless the user's
    PYNVIMGCODEC_VERBOSITY asks for them; lookalike_decoded_images_total counts those JPEGs."""
    os.environ.setdefault("PYNVIMGCODEC_VERBOSITY", "1")  # errors only
    try:
        from nvidia import nvimgcodec
    except ImportError as exc:
        raise ModelLoadError(
            "--image-decoder nvimgcodec needs NVIDIA's nvImageCodec: pip install "
            "'nvidia-nvimgcodec-cu13[nvjpeg]' (it comes with the gpu extra)"
        ) from exc
    return nvimgcodec


def device_decodable(data: bytes, limits: ImageLimits, geometry: ResizeCrop) -> bool:
    """Whether the device decoder takes the image (else the CPU path does). Reads the header
    only; raises the CPU path's errors for what is no image or is too large."""
    header = read_header(data, limits)
    return (
        header.format == "JPEG"
        and header.mode in DECODABLE_MODES
        and ends_after_last_scan(data)
        and geometry.fits(*header_upright_size(header))
    )


def ends_after_last_scan(data: bytes) -> bool:
    """Whether a JPEG's end-of-image marker follows its last scan (inside entropy-coded data
    a 0xFF byte is always escaped, so the marker cannot occur there)."""
    return data.rfind(END_OF_IMAGE) > data.rfind(START_OF_SCAN) >= 0


class DeviceDecoder:
    """Decodes batches of JPEGs with nvImageCodec and resizes and crops each into a row of a
    run buffer with the resize graph, on the GPU (`on_gpu`) or the CPU. One caller at a time."""

    def __init__(
        self,
        spec: PreprocessSpec,
        limits: ImageLimits,
        *,
        on_gpu: bool,
        device_id: int = 0,
    ) -> None:
        from lookalike.export.runtime import import_onnxruntime

        nvimgcodec = import_nvimgcodec()
        self._ort = import_onnxruntime()
        self.limits, self._geometry = limits, ResizeCrop(spec)
        self.device, self.device_id = ("cuda", device_id) if on_gpu else ("cpu", 0)
        kinds = nvimgcodec.BackendKind
        on_device = [kinds.HW_GPU_ONLY, kinds.GPU_ONLY, kinds.HYBRID_CPU_GPU]
        backends = on_device if on_gpu else [kinds.CPU_ONLY]
        self._decoder = nvimgcodec.Decoder(
            device_id=device_id if on_gpu else nvimgcodec.NVIMGCODEC_DEVICE_CPU_ONLY,
            backends=[nvimgcodec.Backend(kind) for kind in backends],
        )
        self._code_stream = nvimgcodec.CodeStream
        self._params = nvimgcodec.DecodeParams(
            apply_exif_orientation=True,  # as the CPU path: the image seen upright
            color_spec=nvimgcodec.ColorSpec.SRGB,
            sample_format=nvimgcodec.SampleFormat.I_RGB,  # greyscale is replicated, as Pillow does
        )
        try:
            model = resize_crop_model(spec.resample)
        except ImportError as exc:
            raise ModelLoadError("--image-decoder nvimgcodec needs the onnx package") from exc
        except ValueError as exc:
            raise ModelLoadError(f"--image-decoder nvimgcodec: {exc}") from exc
        providers = ["CUDAExecutionProvider"] if on_gpu else ["CPUExecutionProvider"]
        options = [{"device_id": str(device_id)}] if on_gpu else [{}]
        self._session = self._ort.InferenceSession(
            model, providers=providers, provider_options=options
        )
        self._runtime = cuda_runtime() if on_gpu else None

    def takes(self, data: bytes) -> bool:
        """`device_decodable` for this decoder's limits and spec."""
        return device_decodable(data, self.limits, self._geometry)

    def decode(self, images: Sequence[bytes]) -> list[Any]:
        """One nvImageCodec image per JPEG, in order, or None where it could not decode one."""
        if not images:
            return []
        streams = [self._code_stream(data) for data in images]
        decoded = list(self._decoder.decode(streams, params=self._params))
        if self._runtime is not None:  # queued on nvImageCodec's streams; ONNX Runtime uses its own
            for stream in {image.cuda_stream for image in decoded if image is not None}:
                self._runtime.cudaStreamSynchronize(ctypes.c_void_p(stream))
        return decoded

    def new_rows(self, count: int, size: int) -> Any:
        """An ort.OrtValue of `count` rows of uint8[size, size, 3] pixels on this device."""
        return self._ort.OrtValue.ortvalue_from_shape_and_type(
            (count, size, size, 3), np.uint8, self.device, self.device_id
        )

    def fill(self, rows: Any, index: int, source: Any) -> bool:
        """Resize and crop `source` (a decoded nvImageCodec image, or uint8[H, W, 3] pixels in
        host memory) into row `index` of `rows`. False where the decoded image is not laid out
        as one block of interleaved RGB (the caller takes the CPU path)."""
        binding = self._session.io_binding()
        if isinstance(source, np.ndarray):
            height, width = source.shape[:2]
            binding.bind_cpu_input(PIXELS, np.ascontiguousarray(source))
        elif not self._bind_decoded(binding, source):
            return False
        else:
            height, width = source.height, source.width
        for name, value in self._geometry.feeds(width, height).items():
            binding.bind_cpu_input(name, value)
        row_shape = rows.shape()[1:]
        row_bytes = int(np.prod(row_shape))
        binding.bind_output(
            CROPPED,
            self.device,
            self.device_id,
            np.uint8,
            row_shape,
            rows.data_ptr() + index * row_bytes,
        )
        self._session.run_with_iobinding(binding)
        return True

    def _bind_decoded(self, binding: Any, image: Any) -> bool:
        """Bind a decoded image as the graph's pixels, where it lies."""
        on_device = image.cuda_stream is not None
        interface = image.__cuda_array_interface__ if on_device else image.__array_interface__
        shape = tuple(interface["shape"])
        packed = (shape[1] * 3, 3, 1)
        if len(shape) != 3 or shape[2] != 3 or interface.get("strides") not in (None, packed):
            log.warning(
                "nvImageCodec gave %s with strides %s: decoded on the CPU path",
                shape,
                interface.get("strides"),
            )
            return False
        device = "cuda" if on_device else "cpu"
        binding.bind_input(PIXELS, device, self.device_id, np.uint8, shape, interface["data"][0])
        return True
