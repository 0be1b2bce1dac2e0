"""The ONNX Runtime engine on the tiny exported model: choice, verification, numerics."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookalike.export.manifest import MANIFEST_FILE, Manifest, Precision
from lookalike.server.embed.onnx_engine import (
    EngineSettings,
    OnnxEngine,
    Provider,
    require_provider,
)
from lookalike.server.errors import EngineError, ModelLoadError
from tests.pixels import random_images


@pytest.fixture
def package_copy(tiny_export: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny export that a test may damage."""
    return Path(shutil.copytree(tiny_export, tmp_path / "model"))


def batch(engine: OnnxEngine, size: int, seed: int = 0) -> np.ndarray:
    return random_images(size, engine.inputs.size, seed)


def varied_images(engine: OnnxEngine, size: int, seed: int = 0) -> np.ndarray:
    """Images of different contrast, as photos have: int8 scales then differ."""
    return random_images(size, engine.inputs.size, seed)


def test_cpu_default_is_int8_and_reports_the_providers_it_got(tiny_export: Path) -> None:
    engine = OnnxEngine(tiny_export)
    assert engine.info.precision is Precision.INT8
    assert engine.info.providers == ("CPUExecutionProvider",)
    assert engine.info.dims == Manifest.load(tiny_export).embedding_dim


@pytest.mark.parametrize("precision", list(Precision))
def test_embed_returns_unit_rows_for_every_variant(tiny_export: Path, precision: Precision) -> None:
    engine = OnnxEngine(tiny_export, EngineSettings(precision=precision, intra_op_threads=1))
    assert engine.info.precision is precision
    embeds = engine.embed(batch(engine, 5))
    assert embeds.shape == (5, engine.info.dims)
    assert embeds.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeds, axis=1), 1.0, atol=1e-5)


def test_variants_agree_with_each_other(tiny_export: Path) -> None:
    pixels = batch(OnnxEngine(tiny_export), 4, seed=1)
    fp32 = OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32)).embed(pixels)
    for precision in (Precision.FP16, Precision.INT8):
        other = OnnxEngine(tiny_export, EngineSettings(precision=precision)).embed(pixels)
        assert np.min(np.sum(fp32 * other, axis=1)) > 0.99


@pytest.mark.parametrize("threads", [0, 1], ids=["all-cores", "one-thread"])
@pytest.mark.parametrize("precision", list(Precision))
def test_an_image_embeds_the_same_alone_and_in_any_batch(
    tiny_export: Path, precision: Precision, threads: int
) -> None:
    """The int8 kernels quantize a whole batch with one scale: the engine must not let that
    show (the benchmark-size model is checked in test_batch_invariance.py)."""
    engine = OnnxEngine(tiny_export, EngineSettings(precision=precision, intra_op_threads=threads))
    pixels = varied_images(engine, 32)
    alone = np.concatenate([engine.embed(image[None]) for image in pixels])
    for size in range(1, 33):
        assert np.abs(engine.embed(pixels[:size]) - alone[:size]).max() <= 1e-6, size


@pytest.mark.parametrize("graph", ["image", "text"])
def test_one_input_after_another_gives_what_parallel_runs_give(
    tiny_export: Path, graph: str
) -> None:
    """`parallel_per_input=False` (the text tower's setting: no second session) changes
    speed and memory, never a result."""
    engines = [
        OnnxEngine(tiny_export, EngineSettings(graph=graph, parallel_per_input=parallel))
        for parallel in (True, False)
    ]
    assert all(engine.info.per_image for engine in engines)  # int8: batching would matter
    inputs = engines[0].inputs.varied(12)
    parallel, sequential = (engine.embed(inputs) for engine in engines)
    np.testing.assert_array_equal(parallel, sequential)
    alone = np.concatenate([engines[1].embed(row[None]) for row in inputs])
    np.testing.assert_array_equal(sequential, alone)


def test_only_graphs_whose_results_depend_on_the_batch_run_image_by_image(
    tiny_export: Path,
) -> None:
    """Dynamic int8 does (one activation scale per batch); fp32 and fp16 do not, on CPU."""
    modes = {
        p: OnnxEngine(tiny_export, EngineSettings(precision=p)).info.per_image for p in Precision
    }
    assert modes == {Precision.FP32: False, Precision.FP16: False, Precision.INT8: True}


def test_io_binding_path_gives_the_same_embeddings(tiny_export: Path) -> None:
    """The path CUDA uses by default, exercised on the CPU provider."""
    plain = OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32, io_binding=False))
    bound = OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32, io_binding=True))
    images = random_images(3, bound.inputs.size, seed=3)
    np.testing.assert_allclose(bound.embed(images), plain.embed(images), atol=1e-6)


@pytest.mark.parametrize("size", [1, 3, 7])
def test_fixed_size_runs_give_the_same_embeddings_as_one_run(tiny_export: Path, size: int) -> None:
    """What a GPU does by default (runs of GPU_RUN_ROWS), exercised on the CPU provider with
    runs of 3: a short batch is padded, a long one split, and each input keeps its vector."""
    plain = OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32))
    fixed = OnnxEngine(tiny_export, EngineSettings(precision=Precision.FP32, run_rows=3))
    assert (plain.info.run_rows, fixed.info.run_rows) == (None, 3)
    images = varied_images(fixed, size, seed=4)
    np.testing.assert_array_equal(fixed.embed(images), plain.embed(images))


def test_a_gpu_session_that_fell_back_to_the_cpu_is_refused() -> None:
    """ONNX Runtime falls back to the CPU when CUDA cannot start; the engine must not."""
    got = ["CPUExecutionProvider"]
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider did not start"):
        require_provider("CUDAExecutionProvider", got)
    assert require_provider("CPUExecutionProvider", got) == got


def test_warm_up_and_self_test_pass_on_a_good_model(tiny_export: Path) -> None:
    engine = OnnxEngine(tiny_export)
    engine.warm_up(batch_size=4)
    engine.self_test()


def test_wrong_input_shape_or_type_is_an_engine_error(tiny_export: Path) -> None:
    engine = OnnxEngine(tiny_export)
    with pytest.raises(EngineError, match=r"expected a batch of uint8\[B, 224, 224, 3\]"):
        engine.embed(np.zeros((2, 64, 64, 3), dtype=np.uint8))
    with pytest.raises(EngineError, match=r"got float32\[2, 224, 224, 3\]"):
        engine.embed(np.zeros((2, 224, 224, 3), dtype=np.float32))  # floats are not pixels


def test_random_weights_are_announced_loudly(
    tiny_export: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lookalike.server.embed.engine"):
        OnnxEngine(tiny_export)
    assert "RANDOM WEIGHTS" in caplog.text


def test_corrupted_model_file_is_refused(package_copy: Path) -> None:
    variant = Manifest.load(package_copy).graphs["image"].variants[Precision.INT8]
    with (package_copy / variant.file).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        OnnxEngine(package_copy)


def test_missing_model_file_is_refused(package_copy: Path) -> None:
    (package_copy / "image_int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"image_int8\.onnx is missing"):
        OnnxEngine(package_copy)


def test_directory_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="lookalike-export"):
        OnnxEngine(tmp_path)


def test_a_manifest_that_is_not_one_is_refused(package_copy: Path) -> None:
    (package_copy / MANIFEST_FILE).write_text('{"name": "some other tool"}')
    with pytest.raises(ModelLoadError, match="not a Lookalike manifest"):
        OnnxEngine(package_copy)


def test_missing_variant_is_named_and_default_falls_back(package_copy: Path) -> None:
    """As an export made with `--precision fp32 --precision fp16` describes itself."""
    manifest = json.loads((package_copy / MANIFEST_FILE).read_text())
    del manifest["graphs"]["image"]["variants"]["int8"]
    (package_copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="no int8 variant"):
        OnnxEngine(package_copy, EngineSettings(precision=Precision.INT8))
    assert OnnxEngine(package_copy).info.precision is Precision.FP32


def test_cuda_on_a_cpu_build_says_which_package_to_install(tiny_export: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"lookalike\[gpu\]"):
        OnnxEngine(tiny_export, EngineSettings(provider=Provider.CUDA))
