"""Finding and reading a task's split files: the official GLUE layout (``glue_data/<Folder>/<split>.tsv``)
or a local Hugging Face ``datasets`` copy (``hf_glue``).

TSV files are read line by line with quoting off: GLUE sentences hold unbalanced ``"`` that a CSV
quote rule would use to swallow the following lines. A UTF-8 byte-order mark and ``\\r\\n`` endings
are tolerated. Labels come out as the canonical names (``"0"``/``"1"`` for the 0/1 tasks, MNLI's
``contradiction``/``entailment``/``neutral``), STS-B scores as floats, test labels as ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from wellread.data import hf_glue
from wellread.data.tasks import _BY_NAME, TASKS, Example, Layout, SplitData, TaskSpec, _norm, get_task
from wellread.errors import WellreadError
from wellread.io import open_text

# --- finding the files ---------------------------------------------------------------------------

def _listing(d: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in d.iterdir() if not p.name.startswith("."))
    return ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") if names else "nothing"


def _present(spec: TaskSpec, d: Path) -> dict[str, Path]:
    """split -> file, for the splits of ``spec`` whose file is in ``d``."""
    found = {}
    for split in spec.splits:
        for name in spec.file_names(split):
            if (d / name).is_file():
                found[split] = d / name
                break
    return found


def _is_task_dir(spec: TaskSpec, d: Path) -> bool:
    return bool(_present(spec, d))


def task_dir(task: str | TaskSpec, data_dir: str | Path) -> Path | None:
    """The folder holding ``task``'s GLUE files: ``data_dir`` itself or its ``<Folder>/``; None if absent."""
    spec = get_task(task)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise WellreadError("no such data directory", file=data_dir)
    wanted = {_norm(n) for n in (spec.folder, *spec.folder_aliases)}
    present = _present(spec, data_dir)
    if present:
        # train.tsv is in many task folders: refuse another task's folder rather than misread it
        other = _BY_NAME.get(_norm(data_dir.name))
        if other is not None and other != spec.name and _norm(data_dir.name) not in wanted:
            theirs = {n for s in TASKS[other].splits for n in TASKS[other].file_names(s)}
            if all(p.name in theirs for p in present.values()):
                raise WellreadError(f"this is the folder of task {other}, not {spec.name}", file=data_dir)
        return data_dir
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and _norm(child.name) in wanted and _is_task_dir(spec, child):
            return child
    return None


def _glue_dir(spec: TaskSpec, data_dir: str | Path | None) -> Path:
    if data_dir is None:
        raise WellreadError(f"{spec.name} is a built-in task: give --data-dir (the GLUE root, a task folder, or a "
                            "Hugging Face datasets copy)", field="data_dir")
    return Path(data_dir)


def split_files(task: str | TaskSpec, data_dir: str | Path | None) -> dict[str, Path]:
    """The splits of ``task`` present under ``data_dir`` (GLUE TSV layout, else a HF copy) and their files."""
    spec = get_task(task)
    if spec.source is not None:
        return spec.source.files()
    folder = task_dir(spec, _glue_dir(spec, data_dir))
    if folder is not None:
        return _present(spec, folder)

    found = {s: files[0] for s in spec.splits if (files := hf_glue.find_files(spec, Path(data_dir), s))}
    if not found:
        raise WellreadError(
            f"no {spec.folder}/ folder (nor a Hugging Face datasets copy of {spec.name}) here; found: "
            f"{_listing(Path(data_dir))}", file=data_dir)
    return found


def read_split(task: str | TaskSpec, data_dir: str | Path | None, split: str) -> SplitData:
    """Read one split of a task from a GLUE root, a task folder, or a HF ``datasets`` copy.

    Raises WellreadError (file, line, field) on a wrong column count, a label outside the task's set,
    a bad score, an empty split or a missing folder/file (listing what is there). QQP's training file
    is the exception: rows with a wrong column count or a label that is not 0/1 are skipped and listed
    in ``skipped`` (the GLUE release has a few, broken by newlines inside questions).
    """
    spec = get_task(task)
    split = spec.split_name(split)
    if spec.source is not None:  # a task file: its splits were read and checked when it was loaded
        return spec.source.read(split)
    folder = task_dir(spec, _glue_dir(spec, data_dir))
    if folder is None:
        if spec.hf is not None and hf_glue.find_files(spec, Path(data_dir), split):
            return hf_glue.read_hf_split(spec, Path(data_dir), split)
        split_files(spec, data_dir)  # raises, listing what is there (or finds HF files of other splits)
        raise WellreadError(f"no {split} split of {spec.name} here; found: {_listing(Path(data_dir))}",
                            file=data_dir)
    fname, layout = spec.splits[split]
    path = _present(spec, folder).get(split)
    if path is None:
        raise WellreadError(f"no {fname} for the {split} split of {spec.name}; found: {_listing(folder)}",
                            file=folder / fname)
    examples: list[Example] = []
    skipped: list[tuple[int, str]] = []
    for lineno, item in _read_rows(spec, split, layout, path):
        if isinstance(item, str):
            skipped.append((lineno, item))
        else:
            examples.append(item)
    if not examples:
        extra = f" ({len(skipped)} rows skipped)" if skipped else ""
        raise WellreadError(f"the {split} split of {spec.name} has no examples{extra}", file=path)
    return SplitData(spec, split, path, examples, skipped, "tsv")


def _resolve(layout: Layout, header: list[str] | None, path: Path) -> dict[str, int | None]:
    """Column positions of the layout's fields, from the header names (or the fixed positions)."""
    cols = {"text_a": layout.text_a, "text_b": layout.text_b, "label": layout.label, "index": layout.index}
    if header is None:
        return cols  # positions already
    pos = {name: i for i, name in enumerate(header)}
    missing = [n for n in layout.header or () if n not in pos]
    if missing:
        raise WellreadError(f"header lacks column(s) {', '.join(missing)} (header: {' | '.join(header)})",
                            file=path, line=1, field=missing[0])
    return {k: (v if v is None or isinstance(v, int) else pos[v]) for k, v in cols.items()}


def _read_rows(spec: TaskSpec, split: str, layout: Layout, path: Path) -> Iterator[tuple[int, Example | str]]:
    """Yield (line number, Example) for each row, or (line number, reason) for a row skipped."""
    labels = set(spec.labels or ())
    with open_text(path) as f:  # a byte that is not UTF-8 is an error naming its line
        header: list[str] | None = None
        n_cols = layout.n_columns
        cols: dict[str, int | None] = {}
        meta_cols: list[tuple[str, int]] = []
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").removesuffix("\r")
            if lineno == 1 and layout.header is not None:
                header = [h.strip().lstrip("\ufeff").lower() for h in line.split("\t")]
                n_cols = len(header)
                cols = _resolve(layout, header, path)
                meta_cols = [(m, header.index(m)) for m in layout.meta if m in header]
                continue
            if lineno == 1:
                cols = _resolve(layout, None, path)
            if not line.strip():
                yield lineno, "blank line"
                continue
            row = line.split("\t")
            if len(row) != n_cols:
                msg = f"expected {n_cols} tab-separated columns, found {len(row)}"
                if layout.skip_malformed:
                    yield lineno, f"wrong column count ({len(row)}, expected {n_cols})"
                    continue
                raise WellreadError(msg, file=path, line=lineno, field="columns")
            label: str | float | None = None
            li = cols["label"]
            if li is not None:
                value = row[li].strip()
                name = header[li] if header else f"column {li + 1 if li >= 0 else n_cols}"
                if spec.labels is None:
                    label = _score(value, path, lineno, name)
                elif value in labels:
                    label = value
                elif layout.skip_malformed:
                    yield lineno, f"label {value!r} is not one of {'/'.join(spec.labels)}"
                    continue
                else:
                    raise WellreadError(f"label {value!r} is not one of {', '.join(spec.labels)}",
                                        file=path, line=lineno, field=name)
            ii = cols["index"]
            index = row[ii].strip() if ii is not None else str(_row_number(lineno, header))
            meta: dict | None = {m: row[i] for m, i in meta_cols} if meta_cols else None
            if li is None:
                meta = {**(meta or {}), "index": index}
            tb = cols["text_b"]
            yield lineno, Example(f"{split}-{index}", row[cols["text_a"]], None if tb is None else row[tb], label, meta)


def _row_number(lineno: int, header: list[str] | None) -> int:
    """The 0-based data-row number of a physical line (the header is not a row)."""
    return lineno - 1 - (header is not None)


def _score(value: str, path: Path, lineno: int, name: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise WellreadError(f"score {value!r} is not a number", file=path, line=lineno, field=name) from None
    if not 0.0 <= score <= 5.0:
        raise WellreadError(f"score {score} is outside 0-5", file=path, line=lineno, field=name)
    return score
