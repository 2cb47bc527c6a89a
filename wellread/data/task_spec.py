"""What a task is: ``TaskSpec`` (files, column layouts, labels, metrics), ``Example``, ``SplitData``.

The built-in tasks (``tasks.TASKS``) and a user's task files (``own_task``) are instances of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wellread.errors import WellreadError


@dataclass(frozen=True, slots=True)
class Example:
    """One row of a task: a sentence (pair), its label name / score (None when unlabelled), extras.

    ``meta`` holds what some tasks need beyond the text: the test ``index`` (for submissions), HANS's
    heuristic/subcase/template, the AX diagnostic categories.
    """

    guid: str
    text_a: str
    text_b: str | None
    label: str | float | None
    meta: dict | None = None


@dataclass(frozen=True)
class Layout:
    """The columns of one split's file.

    With ``header`` (the column names the header line must include, compared case-insensitively) the
    columns are named; a row must have as many fields as the header. Without a header they are
    0-based positions and a row must have ``n_columns`` fields. ``label=None`` means unlabelled.
    """

    text_a: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    index: str | int | None = None
    header: tuple[str, ...] | None = None
    n_columns: int | None = None
    meta: tuple[str, ...] = ()  # optional header columns copied into Example.meta when present
    skip_malformed: bool = False  # skip (and count) rows with a wrong column count or a bad label

    def __post_init__(self) -> None:
        assert (self.header is None) != (self.n_columns is None), "a layout has a header or a column count"


@dataclass(frozen=True)
class HFSpec:
    """Where a task is in a Hugging Face ``datasets`` copy of GLUE (config, split and column names).

    ``label_names`` is the ClassLabel order the hub's GLUE uses, a fallback when the files do not
    carry it; ``to_canonical`` maps those names onto ours (identity for a name not listed).
    """

    config: str
    text_a: str
    text_b: str | None
    splits: Mapping[str, str]  # our split -> HF split
    label_names: tuple[str, ...] | None
    to_canonical: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """A task: files, column layouts, labels (canonical order), metrics, submission file names."""

    name: str
    folder: str
    splits: Mapping[str, tuple[str, Layout]]  # split -> (file name, layout)
    labels: tuple[str, ...] | None  # canonical order (= a model's id2label); None for regression
    metrics: tuple[str, ...]  # the first is the main one
    dev_splits: tuple[str, ...]  # labelled splits to select hyper-parameters on
    submissions: Mapping[str, str] = field(default_factory=dict)  # test split -> leaderboard file
    aliases: tuple[str, ...] = ()
    folder_aliases: tuple[str, ...] = ()
    split_aliases: Mapping[str, str] = field(default_factory=dict)
    file_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # split -> other names its file has
    positive_label: str | None = None  # the class F1 is computed for
    evaluate_with: str | None = None  # the task whose model predicts this one (AX, HANS: "mnli")
    hf: HFSpec | None = None
    report_metrics: tuple[str, ...] = ()  # computed and shown beside ``metrics`` but not selected on
    source: Any = field(default=None, compare=False)  # a task file's reader (own_task.OwnTask); None: built in

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def main_metric(self) -> str:
        return self.metrics[0]

    @property
    def test_splits(self) -> tuple[str, ...]:
        """Unlabelled splits, predicted for the leaderboard."""
        return tuple(s for s, (_, lay) in self.splits.items() if lay.label is None)

    @property
    def label2id(self) -> dict[str, int]:
        return {} if self.labels is None else {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return {} if self.labels is None else dict(enumerate(self.labels))

    def file_names(self, split: str) -> tuple[str, ...]:
        """The names ``split``'s file may have in a task folder, the official one first."""
        return (self.splits[split][0], *self.file_aliases.get(split, ()))

    def split_name(self, split: str) -> str:
        """Our name for ``split`` (accepts HF's ``validation``…); unknown -> WellreadError."""
        s = split.strip().lower().replace("-", "_")
        s = self.split_aliases.get(s, s)
        if s in self.splits:
            return s
        for ours, theirs in (self.hf.splits.items() if self.hf else ()):
            if s == theirs:
                return ours
        raise WellreadError(f"task {self.name} has no split {split!r} (splits: {', '.join(self.splits)})",
                            field="split")


@dataclass
class SplitData:
    """The examples of one split, the rows skipped (1-based line number, reason) and where they came from."""

    task: TaskSpec
    split: str
    path: Path
    examples: list[Example]
    skipped: list[tuple[int, str]]
    source: str = "tsv"  # "tsv", "parquet" or "arrow"
