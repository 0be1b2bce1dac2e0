"""A benchmark that cannot get its model or a package ends in one line saying how, not in a
traceback."""

from __future__ import annotations

import pytest

from benchmarks.common import entry_point
from lookalike.export import tokenizer
from lookalike.export.source import load_checkpoint


def test_a_benchmark_without_open_clip_ends_in_one_line_with_the_install_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on a machine without open_clip_torch: its distribution cannot be found."""
    monkeypatch.setattr(tokenizer, "BPE_DISTRIBUTION", "open-clip-torch-not-installed")
    with pytest.raises(SystemExit) as stopped:
        entry_point(lambda: load_checkpoint(random_init="tiny"))
    message = str(stopped.value.code)
    assert message.startswith("error: a random-init text tower needs CLIP's BPE merges")
    assert "pip install --no-deps open-clip-torch-not-installed" in message
    assert "\n" not in message
