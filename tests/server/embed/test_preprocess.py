"""Preprocessing: exact parity with each family's processor (CLIPImageProcessor,
SiglipImageProcessor), the fast mode against it on photographs, and hostile input."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image
from skimage import data as photographs
from transformers import BaseImageProcessor, CLIPImageProcessor, SiglipImageProcessor

from lookalike.export.checkpoint import processor_resized_pixels
from lookalike.export.families import clip, siglip
from lookalike.export.families.openclip import image_processor
from lookalike.export.manifest import PixelLayout, PreprocessSpec
from lookalike.server.embed.preprocess import (
    ImageLimits,
    PreprocessMode,
    Preprocessor,
    decode,
    upright_size,
)
from lookalike.server.errors import ImageTooLargeError, InvalidImageError
from tests.pixels import normalized
from tests.server.images import encode, jpeg, natural

DEFAULT = CLIPImageProcessor()
# A checkpoint whose resize and crop differ, with its own statistics.
UNUSUAL = CLIPImageProcessor(
    size={"shortest_edge": 256},
    crop_size={"height": 224, "width": 224},
    image_mean=[0.5, 0.4, 0.3],
    image_std=[0.2, 0.25, 0.3],
)
SIGLIP = SiglipImageProcessor()  # squash to 224 x 224, bicubic, mean and std 0.5
PROCESSORS = {"default": DEFAULT, "unusual": UNUSUAL, "siglip": SIGLIP}
FLOAT = PixelLayout.FLOAT32_NCHW  # normalised here, as for packages before format 4
PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "camera")


def preprocess_spec(processor: BaseImageProcessor, image_size: int) -> PreprocessSpec:
    family = siglip if isinstance(processor, SiglipImageProcessor) else clip
    return family.preprocess_spec(processor, image_size)


def reference(processor: BaseImageProcessor, image: Image.Image) -> np.ndarray:
    if isinstance(processor, SiglipImageProcessor):  # it converts nothing: RGB in, as CLIP's
        image = image.convert("RGB")  # processor converts (and the server does)
    out = processor(images=image, return_tensors="np", input_data_format="channels_last")
    return out["pixel_values"][0]


def animated_gif() -> bytes:
    frames = [natural(120, 90, seed=s).convert("P") for s in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=40)
    return buffer.getvalue()


def palette_with_transparency() -> bytes:
    image = natural(150, 100).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(image, "PNG", transparency=0)


# name -> encoded bytes; each decodes the same way in Pillow and in the reference path
CASES = {
    "landscape-jpeg": jpeg(640, 480),
    "portrait-jpeg": jpeg(300, 500, seed=1),
    "square-png": encode(natural(256, 256, seed=2), "PNG"),
    "one-pixel": encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
    "seven-by-three-hundred": encode(natural(7, 300, seed=3), "PNG"),
    "huge-jpeg": jpeg(4000, 3000, seed=4),
    "grayscale": encode(natural(320, 240, seed=5).convert("L"), "PNG"),
    "rgba": encode(natural(200, 160, seed=6).convert("RGBA"), "PNG"),
    "palette-transparent": palette_with_transparency(),
    "cmyk-jpeg": encode(natural(300, 200, seed=7).convert("CMYK"), "JPEG"),
    "animated-gif": animated_gif(),
    "webp": encode(natural(300, 220, seed=8), "WEBP", quality=90),
}


@pytest.mark.parametrize("family", list(PROCESSORS))
@pytest.mark.parametrize("name", list(CASES))
def test_exact_mode_matches_the_family_processor(name: str, family: str) -> None:
    data, processor = CASES[name], PROCESSORS[family]
    expected = reference(processor, Image.open(io.BytesIO(data)))
    spec = preprocess_spec(processor, 224)
    got = Preprocessor(spec, layout=FLOAT, mode=PreprocessMode.EXACT)(data)
    assert got.dtype == np.float32
    assert got.shape == expected.shape == (3, 224, 224)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("family", list(PROCESSORS))
@pytest.mark.parametrize("name", list(CASES))
def test_uint8_pixels_are_the_family_processors_before_it_rescales(name: str, family: str) -> None:
    """What a graph of format 4 takes: the processor's resized, cropped pixels, to the level."""
    data, processor = CASES[name], PROCESSORS[family]
    image = Image.open(io.BytesIO(data))
    if isinstance(processor, SiglipImageProcessor):
        image = image.convert("RGB")
    expected = processor(
        images=image,
        do_rescale=False,
        do_normalize=False,
        return_tensors="np",
        input_data_format="channels_last",
    )["pixel_values"][0].transpose(1, 2, 0)
    spec = preprocess_spec(processor, 224)
    got = Preprocessor(spec, layout=PixelLayout.UINT8_NHWC, mode=PreprocessMode.EXACT)(data)
    assert got.dtype == np.uint8
    assert got.shape == expected.shape == (224, 224, 3)
    assert np.abs(got.astype(np.float32) - expected).max() <= 0.5


@pytest.mark.parametrize("mode", list(PreprocessMode))
def test_both_layouts_carry_the_same_pixels(mode: PreprocessMode) -> None:
    spec = preprocess_spec(UNUSUAL, 224)
    for data in (CASES["landscape-jpeg"], CASES["portrait-jpeg"], CASES["rgba"]):
        pixels = Preprocessor(spec, layout=PixelLayout.UINT8_NHWC, mode=mode)(data)
        floats = Preprocessor(spec, layout=FLOAT, mode=mode)(data)
        np.testing.assert_allclose(normalized(pixels[None], spec)[0], floats, atol=1e-5)


def test_sixteen_bit_png_is_read_by_its_high_byte_not_clipped() -> None:
    ramp = (np.linspace(0, 65535, 200 * 100).reshape(100, 200)).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    decoded = np.asarray(decode(data, ImageLimits()))
    np.testing.assert_array_equal(decoded[..., 0], (ramp >> 8).astype(np.uint8))
    # from the decoded image on, exact mode is the reference
    expected = reference(DEFAULT, Image.fromarray(decoded))
    got = Preprocessor(preprocess_spec(DEFAULT, 224), layout=FLOAT, mode=PreprocessMode.EXACT)(data)
    assert np.abs(got - expected).max() <= 1e-4


def test_exif_orientation_is_applied_in_both_modes() -> None:
    stored = natural(400, 200, seed=9)  # stored landscape, EXIF says "rotate 90 CW"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif)
    upright = Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270)
    assert decode(data, ImageLimits()).size == (200, 400)
    spec = preprocess_spec(DEFAULT, 224)
    exact = Preprocessor(spec, layout=FLOAT, mode=PreprocessMode.EXACT)(data)
    assert np.abs(exact - reference(DEFAULT, upright)).max() <= 1e-4
    fast = Preprocessor(spec, layout=FLOAT, mode=PreprocessMode.FAST)(data)
    assert np.abs(fast - exact).mean() < 0.05


@pytest.mark.parametrize("orientation", [0, 9, 0xFFFF])
def test_an_invalid_exif_orientation_leaves_the_image_as_stored(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(natural(80, 60), "JPEG", exif=exif)
    assert decode(data, ImageLimits()).size == (80, 60)


def test_a_corrupt_exif_block_does_not_hide_a_good_jpeg() -> None:
    data = bytearray(encode(natural(80, 60), "JPEG", exif=Image.Exif()))
    marker = data.find(b"Exif\x00\x00")
    data[marker + 6 : marker + 14] = b"MM\x00*\x7f\xff\xff\xff"  # IFD offset past the end
    assert decode(bytes(data), ImageLimits()).size == (80, 60)


@pytest.mark.parametrize("name", list(CASES))
def test_fast_mode_stays_close_to_exact(name: str) -> None:
    spec = preprocess_spec(DEFAULT, 224)
    exact = Preprocessor(spec, layout=FLOAT, mode=PreprocessMode.EXACT)(CASES[name])
    fast = Preprocessor(spec, layout=FLOAT, mode=PreprocessMode.FAST)(CASES[name])
    assert fast.shape == exact.shape
    assert fast.dtype == np.float32
    assert np.abs(fast - exact).mean() < 0.05  # normalised units; a pixel level is ~0.015
    cosine = np.dot(fast.ravel(), exact.ravel()) / np.linalg.norm(fast) / np.linalg.norm(exact)
    assert cosine > 0.995


@pytest.mark.parametrize("family", list(PROCESSORS))
def test_fast_mode_follows_the_family_rule_on_photographs(family: str) -> None:
    """The served default against the family's own processor, on real photographs as JPEGs."""
    processor = PROCESSORS[family]
    fast = Preprocessor(preprocess_spec(processor, 224), layout=FLOAT, mode=PreprocessMode.FAST)
    for name in PHOTOGRAPHS:
        photo = Image.fromarray(getattr(photographs, name)()).convert("RGB")
        data = encode(photo, "JPEG", quality=95)
        expected = reference(processor, Image.open(io.BytesIO(data)).convert("RGB"))
        got = fast(data)
        cosine = (
            np.dot(got.ravel(), expected.ravel()) / np.linalg.norm(got) / np.linalg.norm(expected)
        )
        assert cosine >= 0.999, (name, cosine)


def test_fast_mode_decodes_large_jpegs_at_reduced_dct_scale() -> None:
    reduced = decode(CASES["huge-jpeg"], ImageLimits(), draft_short_edge=224)
    assert reduced.size == (500, 375)  # 4000x3000 at 1/8, short edge still >= 224
    assert decode(CASES["huge-jpeg"], ImageLimits()).size == (4000, 3000)
    barely = decode(jpeg(1000, 500), ImageLimits(), draft_short_edge=224)
    assert barely.size == (500, 250)  # 1/2 would be enough; 1/4 would go below 224


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def bomb_png(width: int, height: int) -> bytes:
    """Huge dimensions, tiny file: a 1-bit image of one colour compresses ~1000:1."""
    return encode(Image.new("1", (width, height)), "PNG")


HOSTILE = {
    "empty": (b"", InvalidImageError, "zero bytes"),
    "random-bytes": (
        np.random.default_rng(0).bytes(4096),
        InvalidImageError,
        "not an image",
    ),
    "text": (b"hello, this is not a picture\n" * 10, InvalidImageError, "not an image"),
    "html": (
        b"<!doctype html><html><body><img src=x></body></html>",
        InvalidImageError,
        "not an image",
    ),
    "svg": (
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
        InvalidImageError,
        "not an image",
    ),
    "truncated-jpeg": (truncated(jpeg(640, 480)), InvalidImageError, "truncated"),
    "jpeg-cut-in-its-header": (
        jpeg(640, 480)[:100],
        InvalidImageError,
        "^corrupt or truncated image: Truncated File Read$",
    ),
    "truncated-png": (
        truncated(encode(natural(320, 240), "PNG")),
        InvalidImageError,
        "corrupt or truncated",
    ),
    "bomb-beyond-pillow-guard": (bomb_png(20000, 20000), ImageTooLargeError, "too large"),
    "absurd-aspect-ratio": (
        encode(Image.new("RGB", (100000, 1)), "PNG"),
        InvalidImageError,
        "aspect ratio",
    ),
}


@pytest.mark.parametrize("mode", list(PreprocessMode))
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_raises_a_typed_error(name: str, mode: PreprocessMode) -> None:
    data, error, words = HOSTILE[name]
    with pytest.raises(error, match=words):
        Preprocessor(preprocess_spec(DEFAULT, 224), layout=FLOAT, mode=mode)(data)


def test_pixel_limit_is_our_own_guard_not_only_pillows() -> None:
    data = bomb_png(3000, 3000)  # 9 MP: far below Pillow's bomb threshold
    limits = ImageLimits(max_pixels=4_000_000)
    with pytest.raises(ImageTooLargeError, match="9,000,000 pixels"):
        decode(data, limits)
    assert decode(data, ImageLimits(max_pixels=10_000_000)).size == (3000, 3000)


@pytest.mark.parametrize(
    ("size", "max_pixels", "message"),
    [
        (
            (3000, 3000),
            4_000_000,
            "image is 3000x3000 = 9,000,000 pixels, too large: the limit is 4,000,000 "
            "(the server's --max-pixels)",
        ),
        (  # past Pillow's error (2 * MAX_IMAGE_PIXELS), which names no width or height
            (20000, 20000),
            64_000_000,
            "image is over 178,956,970 pixels, too large: the limit is 64,000,000 "
            "(the server's --max-pixels)",
        ),
        (  # past Pillow's warning (MAX_IMAGE_PIXELS): our check decides, with the size
            (10000, 10000),
            64_000_000,
            "image is 10000x10000 = 100,000,000 pixels, too large: the limit is 64,000,000 "
            "(the server's --max-pixels)",
        ),
        (
            (20000, 20000),
            500_000_000,
            "image is over 178,956,970 pixels, too large: the limit is 178,956,970 "
            "(Pillow's, which the server's --max-pixels cannot raise)",
        ),
    ],
)
def test_a_pixel_limit_says_the_size_and_the_limit_and_names_the_flag(
    size: tuple[int, int], max_pixels: int, message: str
) -> None:
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, which the messages name
    with pytest.raises(ImageTooLargeError) as refused:
        decode(bomb_png(*size), ImageLimits(max_pixels=max_pixels))
    assert str(refused.value) == message


def test_max_pixels_is_the_limit_past_pillows_warning() -> None:
    """Pillow only warns between MAX_IMAGE_PIXELS and twice that: there --max-pixels decides."""
    past_the_warning = bomb_png(10000, 10000)  # 100 M pixels
    assert upright_size(past_the_warning, ImageLimits(max_pixels=150_000_000)) == (10000, 10000)
    with pytest.raises(ImageTooLargeError, match="10000x10000"):
        upright_size(past_the_warning, ImageLimits(max_pixels=99_999_999))


def test_the_crop_starts_where_the_package_says_torchvision_or_hugging_face() -> None:
    """An odd margin (640x427 resized to 335x224: 111 pixels) is split 55/56 by Hugging Face's
    processors and 56/55 by torchvision's CenterCrop (OpenCLIP): the package's crop_offset."""
    photo = Image.fromarray(photographs.rocket()).convert("RGB")
    assert photo.size == (640, 427)
    data = encode(photo, "PNG")
    processor = image_processor({}, 224)
    expected = processor_resized_pixels(processor)([photo])[0]
    torchvision_spec = dataclasses.replace(
        preprocess_spec(DEFAULT, 224), crop_offset="round-half-even"
    )
    floor_spec = preprocess_spec(DEFAULT, 224)
    exact = PreprocessMode.EXACT
    got = Preprocessor(torchvision_spec, layout=PixelLayout.UINT8_NHWC, mode=exact)(data)
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=0.5)
    floored = Preprocessor(floor_spec, layout=PixelLayout.UINT8_NHWC, mode=exact)(data)
    np.testing.assert_array_equal(floored[:, 1:], got[:, :-1])  # the same pixels, one to the left
    fast = Preprocessor(torchvision_spec, layout=PixelLayout.UINT8_NHWC)(data)
    assert np.abs(fast.astype(int) - got.astype(int)).mean() < 3  # fast mode crops there too
