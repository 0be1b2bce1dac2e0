"""Did a change move serving speed? Two revisions' servers, measured in alternating rounds.

    python benchmarks/revisions.py BASELINE_REV [--rounds 5] [--seconds 10] [--in-flight 16]

Checks BASELINE_REV out into a temporary git worktree and runs `serve.py`'s load (Embed,
640x480 JPEGs, `--in-flight` requests from 2 client processes) against a server from that
revision and one from this checkout, in turns: baseline, current, current, baseline, ...
(whichever runs second in a pair read about 3% faster in an A/A run, so the order alternates
too). Alternating spreads the machine's drift over both sides; the spread of each side's
rounds is its noise.
Both servers run with the defaults (int8 on CPU, fast preprocessing) or the flags given
(`--baseline-flags`, `--current-flags`) on the same model, or the baseline on
`--baseline-model-dir`: a package its revision can read (an older manifest
format), or another package of the same model on the same revision (`HEAD`), to compare two
ways of exporting it.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_MODEL_DIR,
    ensure_benchmark_model,
    entry_point,
    figure_file,
    lookalike_server,
    print_table,
    write_result,
)
from benchmarks.preprocess import encoded
from benchmarks.serve import load_run

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = (640, 480)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="git revision to compare this checkout against")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument(
        "--baseline-model-dir",
        type=Path,
        help="the package the baseline's server runs (default: --model-dir)",
    )
    for side in ("baseline", "current"):
        parser.add_argument(
            f"--{side}-flags",
            default="",
            help=f"lookalike-server flags for the {side}'s server, e.g. "
            "--current-flags='--preprocess-processes 2' (with HEAD as the baseline: two "
            "settings of one revision)",
        )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side")
    parser.add_argument("--seconds", type=float, default=10.0, help="per round")
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 rounds of 2 s")
    args = parser.parse_args()
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    model_dir = ensure_benchmark_model(args.model_dir)
    models = {"baseline": args.baseline_model_dir or model_dir, "current": model_dir}
    flags = {
        "baseline": shlex.split(args.baseline_flags),
        "current": shlex.split(args.current_flags),
    }
    payload = encoded(PAYLOAD, "JPEG", seed=1)
    commit = _git("rev-parse", args.baseline)

    runs: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as scratch:
        worktree = Path(scratch) / "baseline"
        _git("worktree", "add", "--detach", str(worktree), commit)
        try:
            for round_number in range(rounds):
                order = [("baseline", worktree), ("current", ROOT)]
                for side, tree in order if round_number % 2 == 0 else order[::-1]:
                    print(f"  round {round_number + 1}/{rounds}: {side} ...", flush=True)
                    with lookalike_server(models[side], *flags[side], source_tree=tree) as server:
                        runs[side].append(
                            load_run(server.address, payload, args.in_flight, seconds)
                        )
        finally:
            _git("worktree", "remove", "--force", str(worktree))

    summary = {side: _summarise(side_runs) for side, side_runs in runs.items()}
    summary["current_over_baseline"] = (
        summary["current"]["images_per_s_mean"] / summary["baseline"]["images_per_s_mean"]
    )
    print_table(
        ["side", "img/s per round", "mean", "spread", "p50 ms", "p99 ms", "errors"],
        [
            (
                side,
                " ".join(f"{r['images_per_s']:.1f}" for r in runs[side]),
                f"{s['images_per_s_mean']:.1f}",
                f"{s['images_per_s_spread']:.1%}",
                f"{s['p50_ms_median']:.1f}",
                f"{s['p99_ms_median']:.1f}",
                s["errors"],
            )
            for side, s in ((side, summary[side]) for side in runs)
        ],
    )
    print(f"current / baseline: {summary['current_over_baseline']:.3f}")
    settings = {
        "baseline": args.baseline,
        "baseline_commit": commit,
        "current_commit": _git("rev-parse", "HEAD"),
        "current_has_uncommitted_changes": bool(
            _git("status", "--porcelain", "--untracked-files=no")
        ),
        "model_dir": str(model_dir),
        "baseline_model_dir": str(models["baseline"]),
        "server_flags": flags,
        "payload": f"jpeg-{PAYLOAD[0]}x{PAYLOAD[1]}",
        "in_flight": args.in_flight,
        "rounds": rounds,
        "seconds": seconds,
    }
    path = write_result("revisions", args.out, settings=settings, results={"runs": runs, **summary})
    with figure_file(path.with_suffix(".png")) as (axes,):
        for side, marker in (("baseline", "o"), ("current", "s")):
            values = [r["images_per_s"] for r in runs[side]]
            axes.plot(range(1, len(values) + 1), values, marker + "-", label=side)
        axes.set_xlabel("round")
        axes.set_ylabel(f"images/s, {args.in_flight} in flight")
        axes.set_ylim(bottom=0)
        axes.legend()


def _summarise(runs: list[dict]) -> dict:
    rates = [r["images_per_s"] for r in runs]
    mean = statistics.fmean(rates)
    return {
        "images_per_s_mean": mean,
        "images_per_s_spread": (max(rates) - min(rates)) / mean,  # of this side's rounds
        "p50_ms_median": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms_median": statistics.median(r["p99_ms"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def _git(*arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=True
    ).stdout.strip()


if __name__ == "__main__":
    entry_point(main)
