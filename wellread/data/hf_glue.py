"""Read GLUE from a local Hugging Face ``datasets`` copy: the hub's parquet files or ``save_to_disk`` arrow.

Layouts accepted under a root (or the config folder itself): ``<config>/<split>-*.parquet`` (the hub's
``nyu-mll/glue``), ``<config>/<split>.parquet``, and ``<config>/<split>/*.arrow`` with its
``dataset_info.json`` (``DatasetDict.save_to_disk``). Integer labels are turned into names through the
ClassLabel names the files carry (the ``huggingface`` schema metadata or ``dataset_info.json``), else
the hub's known order, then mapped by NAME onto the task's canonical labels: the hub's MNLI is
entailment=0, neutral=1, contradiction=2, ours is contradiction, entailment, neutral.
"""

from __future__ import annotations

from pathlib import Path

from wellread.data.arrow_files import record_batches as _batches
from wellread.data.tasks import TASKS, Example, SplitData, TaskSpec
from wellread.errors import WellreadError


def _dirs(spec: TaskSpec, root: Path) -> list[Path]:
    """Where this task's files may be: ``root/<config>``, or ``root`` unless it is another task's config."""
    assert spec.hf is not None
    dirs = [root / spec.hf.config]
    others = {t.hf.config for t in TASKS.values() if t.hf is not None and t.name != spec.name}
    if root.name.lower() not in others:
        dirs.append(root)
    return dirs


def find_files(spec: TaskSpec, root: Path, split: str) -> list[Path]:
    """The parquet or arrow files of ``split`` in a HF copy under ``root``; [] when there are none."""
    if spec.hf is None or split not in spec.hf.splits:
        return []
    hs = spec.hf.splits[split]
    for d in _dirs(spec, root):
        if not d.is_dir():
            continue
        for files in (sorted(d.glob(f"{hs}-*.parquet")), sorted(d.glob(f"{hs}.parquet")),
                      sorted((d / hs).glob("*.parquet")), sorted((d / hs).glob("*.arrow"))):
            if files:
                return files
    return []


def read_hf_split(spec: TaskSpec, root: Path, split: str) -> SplitData:
    """Read ``split`` of ``spec`` from a HF ``datasets`` copy, labels mapped by name to ours."""
    assert spec.hf is not None
    hf = spec.hf
    files = find_files(spec, root, split)
    if not files:
        raise WellreadError(f"no {hf.splits.get(split, split)} files of {hf.config} here", file=root)
    unlabelled = split in spec.test_splits
    examples: list[Example] = []
    for path in files:
        row_no = 0
        for cols, names in _batches(path):
            needed = [c for c in (hf.text_a, hf.text_b, "label") if c is not None]
            missing = [c for c in needed if c not in cols]
            if missing:
                raise WellreadError(f"lacks column(s) {', '.join(missing)} (columns: {', '.join(cols)})",
                                    file=path, field=missing[0])
            names = names or (list(hf.label_names) if hf.label_names else None)
            n = len(cols[hf.text_a])
            idx = cols.get("idx") or [None] * n
            for i in range(n):
                row_no += 1
                index = str(idx[i]) if idx[i] is not None else str(len(examples))
                label = None if unlabelled else _label(spec, names, cols["label"][i], path, row_no)
                examples.append(Example(
                    f"{split}-{index}", cols[hf.text_a][i], None if hf.text_b is None else cols[hf.text_b][i],
                    label, {"index": index} if unlabelled else None))
    if not examples:
        raise WellreadError(f"the {split} split of {spec.name} has no examples", file=files[0])
    return SplitData(spec, split, files[0], examples, [], files[0].suffix[1:])


def _label(spec: TaskSpec, names: list[str] | None, value: object, path: Path, row: int) -> str | float:
    """A HF label value (ClassLabel int, name, or STS-B float) as our canonical label."""
    if spec.labels is None:
        try:
            score = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise WellreadError(f"score {value!r} is not a number", file=path, line=row, field="label") from None
        if not 0.0 <= score <= 5.0:
            raise WellreadError(f"score {score} is outside 0-5", file=path, line=row, field="label")
        return score
    name = value
    if isinstance(value, int) and not isinstance(value, bool):
        if names is None or not 0 <= value < len(names):
            raise WellreadError(f"label id {value} has no name (names: {names})", file=path, line=row, field="label")
        name = names[value]
    assert spec.hf is not None
    name = spec.hf.to_canonical.get(str(name), str(name))
    if name not in spec.labels:
        raise WellreadError(f"label {value!r} is not one of {', '.join(spec.labels)}", file=path, line=row,
                            field="label")
    return name
