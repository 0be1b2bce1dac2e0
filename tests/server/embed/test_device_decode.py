"""The device decoder on the CPU (nvImageCodec's libjpeg-turbo backend, the resize graph on
ONNX Runtime's CPU provider): the code `--image-decoder nvimgcodec` runs on a GPU, checked
here against the CPU path's pixels, and what it hands back to the CPU path."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as photographs
from transformers import CLIPImageProcessor, SiglipImageProcessor

from lookalike.export.families import clip, siglip
from lookalike.export.manifest import PixelLayout
from lookalike.server.embed.device_decode import DeviceDecoder, ends_after_last_scan
from lookalike.server.embed.preprocess import ImageLimits, PreprocessMode, Preprocessor
from lookalike.server.errors import ImageTooLargeError, InvalidImageError
from tests.server.images import encode, jpeg

PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "camera")  # camera: greyscale
SPECS = {
    "clip": clip.preprocess_spec(CLIPImageProcessor(), 224),
    "clip-256-crop-224": clip.preprocess_spec(
        CLIPImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}),
        224,
    ),
    "siglip": siglip.preprocess_spec(SiglipImageProcessor(), 224),  # squash, no crop
}


def photo_jpegs() -> list[bytes]:
    return [
        encode(Image.fromarray(getattr(photographs, name)()), "JPEG", quality=90)
        for name in PHOTOGRAPHS
    ]


def device_pixels(decoder: DeviceDecoder, images: list[bytes]) -> np.ndarray:
    decoded = decoder.decode(images)
    rows = decoder.new_rows(len(images), 224)
    for index, image in enumerate(decoded):
        assert image is not None
        assert decoder.fill(rows, index, image)
    return rows.numpy()


@pytest.mark.parametrize("name", SPECS)
def test_decoded_resized_and_cropped_as_the_cpu_path_does(name: str) -> None:
    """Pillow's antialiased resize and the crop, reproduced by the resize graph: within one
    level for 99.8% of values (both round; they sum the filter taps in another order)."""
    spec = SPECS[name]
    exact = Preprocessor(spec, layout=PixelLayout.UINT8_NHWC, mode=PreprocessMode.EXACT)
    decoder = DeviceDecoder(spec, ImageLimits(), on_gpu=False)
    images = photo_jpegs()
    pixels = device_pixels(decoder, images)
    for got, image in zip(pixels, images, strict=True):
        difference = np.abs(got.astype(int) - exact(image).astype(int))
        assert difference.mean() < 0.25
        assert (difference > 1).mean() < 0.002
        assert difference.max() <= 8


def test_pixels_from_the_cpu_path_are_copied_into_their_row_unchanged() -> None:
    spec = SPECS["clip"]
    decoder = DeviceDecoder(spec, ImageLimits(), on_gpu=False)
    prepared = Preprocessor(spec, layout=PixelLayout.UINT8_NHWC)(jpeg(500, 400))
    rows = decoder.new_rows(3, 224)
    decoder.fill(rows, 1, prepared)
    np.testing.assert_array_equal(rows.numpy()[1], prepared)


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (300, 300), (10, 200, 30, 0)), "JPEG")


def test_it_takes_what_it_decodes_and_leaves_the_rest_to_the_cpu_path() -> None:
    decoder = DeviceDecoder(SPECS["clip"], ImageLimits(), on_gpu=False)
    photo = jpeg(640, 480)
    taken = {
        "baseline": photo,
        "progressive": encode(Image.open(io.BytesIO(photo)), "JPEG", progressive=True),
        "greyscale": encode(Image.fromarray(photographs.camera()), "JPEG"),
    }
    left = {
        "png": encode(Image.fromarray(photographs.astronaut()), "PNG"),
        "cmyk": cmyk_jpeg(),
        "truncated": photo[: len(photo) // 2],
        "end marker cut off": photo[:-2],
    }
    assert {name: decoder.takes(data) for name, data in taken.items()} == dict.fromkeys(taken, True)
    assert {name: decoder.takes(data) for name, data in left.items()} == dict.fromkeys(left, False)
    # an image smaller than the crop is padded by the CPU path
    small_crop = dataclasses.replace(SPECS["clip"], resize_shortest_edge=200)
    assert not DeviceDecoder(small_crop, ImageLimits(), on_gpu=False).takes(photo)


def test_what_is_no_image_or_too_large_gets_the_cpu_paths_error() -> None:
    decoder = DeviceDecoder(SPECS["clip"], ImageLimits(max_pixels=100_000), on_gpu=False)
    with pytest.raises(InvalidImageError, match="not an image"):
        decoder.takes(b"no image at all")
    with pytest.raises(ImageTooLargeError, match="640x480"):
        decoder.takes(jpeg(640, 480))


def test_a_jpeg_it_cannot_decode_comes_back_as_none_in_its_place() -> None:
    """A JPEG whose header reads well and whose scan is garbage: the caller takes the CPU
    path for it alone."""
    photo = jpeg(320, 240)
    scan = photo.rfind(b"\xff\xda")
    garbage = photo[: scan + 2] + b"\x00\x02" + b"\xff" * 64 + b"\xff\xd9"
    assert ends_after_last_scan(garbage)
    decoder = DeviceDecoder(SPECS["clip"], ImageLimits(), on_gpu=False)
    decoded = decoder.decode([photo, garbage, photo])
    assert [image is None for image in decoded] == [False, True, False]
