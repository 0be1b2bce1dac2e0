"""The README's main-job script, end to end with the tiny model, bounded in time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_demo_exports_serves_indexes_and_finds_the_transformed_copy(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOOKALIKE_", "HF_"))},
        "LOOKALIKE_SKIP_INSTALL": "1",  # this environment already has the project
        "LOOKALIKE_VENV": str(Path(sys.executable).parents[1]),
        "LOOKALIKE_RANDOM_INIT": "tiny",
        "LOOKALIKE_DEMO_DIR": str(tmp_path / "demo"),
        "LOOKALIKE_MODELS_DIR": str(tmp_path / "models"),
    }
    first = run_demo(env)
    assert "RANDOM WEIGHTS" in first.stdout
    assert f"==> 1/5 model: exporting to {env['LOOKALIKE_MODELS_DIR']}/random-tiny" in first.stdout
    assert "24 stored, 0 already indexed, 0 failed" in first.stdout
    searches = first.stdout.split("rank    score")[1:]
    assert len(searches) == 3
    for table in searches[:2]:  # the image itself, then its resized/cropped/recompressed copy
        top = table.splitlines()[1].split()
        assert top[2] == "shapes-005.jpg", table
    by_text = searches[2].splitlines()[1:6]  # random weights: five matches, no meaning
    assert all(line.split()[2].endswith(".jpg") for line in by_text), searches[2]
    text_page = (tmp_path / "demo" / "text-results.html").read_text()
    assert "a red circle on a white background" in text_page
    assert f"source {env['LOOKALIKE_VENV']}/bin/activate" in first.stdout  # the README's next step
    page = (tmp_path / "demo" / "results.html").read_text()
    assert "query-transformed.jpg" in page
    assert "shapes-005.jpg" in page
    assert first.stdout.splitlines()[-3:] == [  # the next step: the web app over these images
        "to browse these images in the web app, start the server over them with --http-port:",
        f"  {env['LOOKALIKE_VENV']}/bin/lookalike-server --model-dir "
        f"{env['LOOKALIKE_MODELS_DIR']}/random-tiny --data-dir {env['LOOKALIKE_DEMO_DIR']}/index "
        "--http-port 8080",
        "then open http://127.0.0.1:8080/ (Ctrl-C stops the server)",
    ]

    second = run_demo(env)
    assert "model package" in second.stdout  # the export was reused, not redone
    assert "exporting" not in second.stdout.lower()  # nor announced
    assert "RANDOM WEIGHTS exported before" in second.stdout
    assert "0 stored, 24 already indexed" in second.stdout
