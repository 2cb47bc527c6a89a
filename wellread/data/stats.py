"""``wellread data stats``: what is in a task's data folder, split by split.

The first thing to run on a new folder: how many examples each split gives, which rows were skipped
and why, the label distribution, and how long the inputs are: WordPiece tokens (with [CLS]/[SEP], as
the model sees them) when a vocabulary is given, else whitespace words, labelled as such.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from wellread.data.task_files import read_split, split_files
from wellread.data.tasks import SplitData, get_task
from wellread.tokenization import load_tokenizer

PERCENTILES = (50, 90, 95, 99)


def _lengths(data: SplitData, tokenizer) -> np.ndarray:
    exs = data.examples
    if tokenizer is None:
        return np.array([len(e.text_a.split()) + (len(e.text_b.split()) if e.text_b is not None else 0)
                         for e in exs], dtype=np.int64)
    out: list[int] = []
    for start in range(0, len(exs), 4096):  # one batch call per chunk: the Rust tokenizer runs in parallel
        chunk = exs[start:start + 4096]
        inputs = [e.text_a if e.text_b is None else (e.text_a, e.text_b) for e in chunk]
        out.extend(len(enc.ids) for enc in tokenizer.encode_batch(inputs, add_special_tokens=True))
    return np.array(out, dtype=np.int64)


def _labels(data: SplitData) -> dict:
    """Counts per label in canonical order; STS-B scores as counts per unit bin; {} when unlabelled."""
    spec = data.task
    values = [e.label for e in data.examples if e.label is not None]
    if not values:
        return {}
    if spec.is_regression and spec.source is None:  # STS-B: its 0-5 scale in unit bins
        bins = Counter(min(int(v), 4) for v in values)  # 5.0 goes into the last bin
        return {f"{b}-{b + 1}": bins.get(b, 0) for b in range(5)}
    if spec.is_regression:  # a task file's scores: five equal bins from the smallest to the largest
        edges = np.linspace(min(values), max(values), 6)
        counts, _ = np.histogram(values, bins=edges)
        return {f"{edges[i]:g}-{edges[i + 1]:g}": int(n) for i, n in enumerate(counts)}
    counts = Counter(values)
    return {name: counts.get(name, 0) for name in spec.labels or ()}


def _key(e) -> tuple[str, str | None]:
    return (e.text_a.strip().lower(), None if e.text_b is None else e.text_b.strip().lower())


def split_stats(task: str, data_dir: str | Path | None, *, vocab: str | Path | None = None,
                max_length: int = 128) -> list[dict]:
    """One dict per split present: split, file, examples, skipped (+ reasons), labels, lengths."""
    spec = get_task(task)
    tokenizer = None
    if vocab is not None:
        tokenizer = load_tokenizer(vocab)
    unit = "wordpiece tokens incl. [CLS]/[SEP]" if tokenizer is not None else "whitespace words"
    out = []
    texts: dict[str, set] = {}
    notes = getattr(spec.source, "notes", {})
    for split in split_files(spec, data_dir):
        data = read_split(spec, data_dir, split)
        keys = [_key(e) for e in data.examples]
        texts[split] = set(keys)
        lengths = _lengths(data, tokenizer)
        reasons = Counter(r for _, r in data.skipped)
        length = {"unit": unit, **{f"p{q}": int(np.percentile(lengths, q, method="inverted_cdf"))
                                   for q in PERCENTILES}, "max": int(lengths.max()), "mean": round(float(lengths.mean()), 1)}
        if tokenizer is not None:
            length[f"over_{max_length}"] = int(np.sum(lengths > max_length))
        out.append({
            "split": split, "file": str(data.path), "examples": len(data.examples),
            "skipped": len(data.skipped), "skipped_reasons": dict(reasons.most_common()),
            "skipped_lines": [n for n, _ in data.skipped[:20]],
            "labels": _labels(data), "length": length,
            "duplicates": len(keys) - len(texts[split]),  # examples whose text (pair) came earlier in the split
            **({"note": notes[split]} if split in notes else {}),
        })
    names = list(texts)
    for s in out:  # distinct texts shared with each other split (case and outer spaces ignored)
        s["overlap"] = {o: len(texts[s["split"]] & texts[o]) for o in names if o != s["split"]}
    if "unassigned" in notes:
        out[0]["unassigned"] = notes["unassigned"]
    return out


def format_stats(task: str, stats: list[dict]) -> str:
    """The stats as a short plain-text report."""
    spec = get_task(task)
    lines = []
    for s in stats:
        lines.append(f"{spec.name} {s['split']}: {s['examples']:,} examples, {s['skipped']:,} skipped  ({s['file']})")
        for key in ("note", "unassigned"):
            if key in s:
                lines.append(f"  {'made from' if key == 'note' else 'not in any split'}: {s[key]}")
        for reason, n in s["skipped_reasons"].items():
            lines.append(f"  skipped {n:,}: {reason}")
        if s["skipped_lines"]:
            lines.append(f"  skipped lines: {', '.join(map(str, s['skipped_lines']))}"
                         + (" ..." if s["skipped"] > len(s["skipped_lines"]) else ""))
        if s["labels"]:
            total = sum(s["labels"].values())
            lines.append("  labels: " + ", ".join(f"{k} {v:,} ({100 * v / total:.1f}%)" for k, v in s["labels"].items()))
        else:
            lines.append("  labels: none (unlabelled)")
        ln = s["length"]
        extra = "".join(f", {k.replace('_', ' ')} {v:,}" for k, v in ln.items() if k.startswith("over_"))
        lines.append(f"  length ({ln['unit']}): " + ", ".join(f"p{q} {ln[f'p{q}']}" for q in PERCENTILES)
                     + f", max {ln['max']}, mean {ln['mean']}{extra}")
        overlap = ", ".join(f"{n:,} with {o}" for o, n in s["overlap"].items())
        lines.append(f"  repeated texts: {s['duplicates']:,} within the split"
                     + (f"; shared: {overlap}" if overlap else ""))
    return "\n".join(lines)
