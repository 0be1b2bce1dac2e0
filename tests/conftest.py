"""Session-wide fixtures and rules.

The tiny random models go through the real console script once per session, before the first
test runs (`pytest_runtestloop`), so no test's timeout pays for an export. Under CI
(LOOKALIKE_REQUIRE_ALL=1, set by .ci/run) a skipped test fails: a capability the set-up should
have installed is missing. Only skips that say they are opt-in (a reason starting with "opt-in:")
stay skips there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator
from pathlib import Path

import pytest

from lookalike.export.manifest import Manifest

# Environment that would change what the code under test does; no test inherits it.
LEAKY_ENV_PREFIXES = ("LOOKALIKE_", "HF_", "TRANSFORMERS_", "ORT_")
# Set (to 1) by .ci/run: every test must run; a skip is a failure unless it is opt-in.
REQUIRE_ALL = "LOOKALIKE_REQUIRE_ALL"
OPT_IN = "opt-in:"  # how an allowed skip's reason starts, e.g. pytest.skip("opt-in: set X=...")
REQUIRE_ALL_KEY = pytest.StashKey[bool]()

# The session fixtures that export a model, and the `lookalike-export --random-init` arguments.
EXPORTS: dict[str, tuple[str, ...]] = {
    "tiny_export": ("tiny",),
    "tiny_float_export": ("tiny", "--image-input", "float32"),
    "siglip_export": ("siglip-tiny",),
    "siglip2_export": ("siglip2-tiny",),
    "openclip_export": ("openclip-tiny",),
    "benchmark_export": ("vit-b-32", "--no-text"),
}
EXPORT_TIMEOUT = 600
EXPORTED_KEY = pytest.StashKey[dict[str, "Exported"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", help="reliability tests run longer (release checks)"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REQUIRE_ALL_KEY] = os.environ.get(REQUIRE_ALL, "") not in ("", "0")
    config.stash[EXPORTED_KEY] = {}


def pytest_report_header(config: pytest.Config) -> str:
    if config.stash[REQUIRE_ALL_KEY]:
        return f"{REQUIRE_ALL}=1: a skip fails unless its reason starts with {OPT_IN!r}"
    return f"skips allowed ({REQUIRE_ALL}=1, as in CI, makes them failures)"


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _required(report: pytest.CollectReport | pytest.TestReport, config: pytest.Config) -> None:
    """Under LOOKALIKE_REQUIRE_ALL, a skip that is not opt-in becomes a failure, saying why."""
    if not (config.stash[REQUIRE_ALL_KEY] and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if reason.startswith(OPT_IN):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped, and {REQUIRE_ALL}=1 (CI) makes a skip a failure: {reason}\n"
        "The set-up (.ci/run, scripts/test.sh) should have provided what it needs; a test "
        f"that may be skipped says so with a reason starting {OPT_IN!r}."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _required(report, item.config)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield  # a module skipped as a whole (pytest.importorskip at its top)
    _required(report, collector.config)
    return report


class Exported:
    """One `lookalike-export --random-init` run: where it wrote, and how it ended."""

    def __init__(self, output: Path, result: subprocess.CompletedProcess[str]) -> None:
        self.output, self.result = output, result

    def checked(self) -> Path:
        assert self.result.returncode == 0, self.result.stderr
        return self.output


def export_random_init(preset: str, models: Path, *options: str) -> Exported:
    """`lookalike-export --random-init PRESET [OPTIONS]`, as a user would run it."""
    output = models / preset
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_ENV_PREFIXES)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lookalike.export",
            "--random-init",
            preset,
            "--output",
            str(output),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=EXPORT_TIMEOUT,
        env={**env, "HF_HUB_OFFLINE": "1"},
        check=False,
    )
    (output.parent / "export.stdout").write_text(result.stdout)
    (output.parent / "export.stderr").write_text(result.stderr)
    return Exported(output, result)


def _export(config: pytest.Config, fixture: str) -> Exported:
    exported = config.stash[EXPORTED_KEY]
    if fixture not in exported:
        # the factory the tmp_path_factory fixture returns (the hook has no fixtures)
        factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
        preset, *options = EXPORTS[fixture]
        exported[fixture] = export_random_init(preset, factory.mktemp("models"), *options)
    return exported[fixture]


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """Export every model the selected tests ask for (directly or through other fixtures)
    before the first one starts: outside any test's timeout (pytest-timeout's 300 s covers a
    test's fixtures too). A fixture asked for at run time (`request.getfixturevalue`) by a test
    that is the first to need it exports then, inside that test."""
    config = session.config
    collection_failed = session.testsfailed and not config.option.continue_on_collection_errors
    if config.option.collectonly or collection_failed:
        return
    wanted = set().union(*(getattr(item, "fixturenames", ()) for item in session.items))
    names = [name for name in EXPORTS if name in wanted]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for name in names:
        if reporter is not None:
            reporter.write_line(f"exporting {' '.join(EXPORTS[name])} for {name} (once)")
        _export(config, name)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(LEAKY_ENV_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test may reach for the network


@pytest.fixture(scope="session")
def tiny_export(pytestconfig: pytest.Config) -> Path:
    return _export(pytestconfig, "tiny_export").checked()


@pytest.fixture(scope="session")
def tiny_float_export(pytestconfig: pytest.Config) -> Path:
    """The tiny CLIP with the image graph of packages before format 4: normalised float32
    pixels, [batch, 3, S, S] (`--image-input float32`)."""
    return _export(pytestconfig, "tiny_float_export").checked()


@pytest.fixture(scope="session")
def siglip_export(pytestconfig: pytest.Config) -> Path:
    """A tiny random SigLIP: attention-pooled, squash-resized, SentencePiece-tokenized."""
    return _export(pytestconfig, "siglip_export").checked()


@pytest.fixture(scope="session")
def siglip2_export(pytestconfig: pytest.Config) -> Path:
    """A tiny random SigLIP 2 (fixed resolution): SigLIP's towers, Gemma's tokenizer."""
    return _export(pytestconfig, "siglip2_export").checked()


@pytest.fixture(scope="session")
def openclip_export(pytestconfig: pytest.Config) -> Path:
    """A tiny random OpenCLIP preset: open_clip's layout, through the same conversion as a
    folder of open_clip files."""
    return _export(pytestconfig, "openclip_export").checked()


@pytest.fixture(scope="session")
def benchmark_export(pytestconfig: pytest.Config) -> Path:
    """The full-size ViT-B/32 image tower the benchmarks use (random weights, the real
    compute); the tests that take it embed no text."""
    return _export(pytestconfig, "benchmark_export").checked()


@pytest.fixture(scope="session")
def tiny_manifest(tiny_export: Path) -> Manifest:
    return Manifest.load(tiny_export)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key for localhost and 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
