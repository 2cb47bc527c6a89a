"""Held-out MLM accuracy of `wellread pretrain` runs beside the yardstick's, by minutes of training and by tokens.

Reads the yardstick's ``--json`` (benchmarks/yardstick_mlm.py) and each run's ``metrics.jsonl``; an
evaluation of a run is placed at the training time and tokens of the last training record at or before
its step (the loop logs every ``--log-every`` steps).

    python benchmarks/plot_vs_yardstick.py --yardstick yardstick.json RUN [RUN ...] --out vs-yardstick.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wellread.report.plots import read_metrics, save_png


def run_curve(run: Path) -> list[tuple[float, float, float, float | None]]:
    """(minutes, M tokens, accuracy %, accuracy at [MASK] % or None) at each evaluation of a run."""
    rows = read_metrics(run)
    train = [r for r in rows if r.get("kind") == "train"]
    out = []
    for e in (r for r in rows if r.get("kind") == "eval" and "eval/mlm_accuracy" in r):
        before = [t for t in train if t["step"] <= e["step"]]
        if not before:
            continue
        t = before[-1]
        at_mask = e.get("eval/mlm_accuracy_at_mask")
        out.append((t["elapsed_s"] / 60, t["tokens"] / 1e6, 100 * e["eval/mlm_accuracy"],
                    None if at_mask is None else 100 * at_mask))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories of wellread pretrain")
    ap.add_argument("--yardstick", type=Path, required=True, help="the --json of benchmarks/yardstick_mlm.py")
    ap.add_argument("--label", action="append", help="a run's label, once per run in order (default: directory names)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = a.label or [r.name for r in a.runs]
    if len(labels) != len(a.runs):
        ap.error(f"{len(labels)} labels for {len(a.runs)} runs")
    ys = json.loads(a.yardstick.read_text())
    hist = ys["history"]
    fig, (by_time, by_tokens) = plt.subplots(1, 2, figsize=(11, 4))
    name = f"yardstick (plain script, batch {ys['settings']['batch']}, lr {ys['settings']['lr']:g})"
    by_time.plot([h["train_seconds"] / 60 for h in hist], [100 * h["eval/mlm_accuracy"] for h in hist], "o-", color="k",
                 label=name)
    by_tokens.plot([h["tokens"] / 1e6 for h in hist], [100 * h["eval/mlm_accuracy"] for h in hist], "o-", color="k",
                   label=name)
    for run, label in zip(a.runs, labels):
        curve = run_curve(run)
        if not curve:
            raise SystemExit(f"{run / 'metrics.jsonl'}: no evaluation records")
        minutes, tokens, acc, at_mask = zip(*curve)
        line = by_time.plot(minutes, acc, "o-", label=label)[0]
        by_tokens.plot(tokens, acc, "o-", color=line.get_color(), label=label)
        if all(m is not None for m in at_mask):
            by_time.plot(minutes, at_mask, "^:", color=line.get_color(), label=f"{label}, at [MASK] rows")
    by_time.set_xlabel("minutes of training")
    by_tokens.set_xlabel("tokens seen (millions)")
    for ax in (by_time, by_tokens):
        ax.set_ylabel("held-out MLM accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, a.out)
    plt.close(fig)
    print(a.out)


if __name__ == "__main__":
    main()
