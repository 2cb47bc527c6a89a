"""HANS (McCoy et al. 2019): score an MNLI model on the three syntactic heuristics.

An MNLI model predicts three classes; HANS has two. A prediction is mapped BY NAME: entailment stays
entailment, neutral and contradiction become non-entailment. Accuracy is reported per heuristic ×
gold label (the six numbers of McCoy et al. and Bhargava et al.: models that lean on a heuristic get
near 100% on its entailed half and near 0% on the other), per subcase, and overall.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from wellread.data.tasks import Example
from wellread.errors import WellreadError

HANS_LABELS = ("entailment", "non-entailment")
HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
_TWO_WAY = {"entailment": "entailment", "neutral": "non-entailment", "contradiction": "non-entailment",
            "non-entailment": "non-entailment", "non_entailment": "non-entailment",
            "not_entailment": "non-entailment"}


def to_two_way(label: str) -> str:
    """An MNLI (or already 2-way) label name as a HANS label."""
    key = str(label).strip().lower()
    if key not in _TWO_WAY:
        raise WellreadError(f"cannot map prediction {label!r} to HANS's entailment / non-entailment",
                            field="predictions")
    return _TWO_WAY[key]


def hans_report(examples: Sequence[Example], predicted_labels: Sequence[str | int],
                id2label: Sequence[str] | Mapping[int, str] | None = None) -> dict:
    """Accuracy of MNLI predictions on HANS examples (as ``read_split("hans", dir, "evaluation")`` gives).

    ``predicted_labels`` are label names; ids are accepted only with the model's ``id2label``, so a
    class order is never assumed. Returns ``{"overall", "n", "heuristics": {h: {gold: acc}},
    "subcases": {subcase: acc}, "counts": {h: {gold: n}}}`` with accuracies as fractions.
    """
    if len(examples) != len(predicted_labels):
        raise WellreadError(f"{len(predicted_labels)} predictions for {len(examples)} HANS examples",
                            field="predictions")
    if not examples:
        raise WellreadError("no HANS examples to score", field="examples")
    right: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    sub: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    correct = 0
    for i, (ex, pred) in enumerate(zip(examples, predicted_labels)):
        if isinstance(pred, int) and not isinstance(pred, bool):
            if id2label is None:
                raise WellreadError(f"prediction {i} is an id ({pred}); pass id2label to name it", field="predictions")
            pred = id2label[pred]
        meta = ex.meta or {}
        if ex.label not in HANS_LABELS or "heuristic" not in meta or "subcase" not in meta:
            raise WellreadError(f"example {ex.guid} is not a labelled HANS example", field="examples")
        hit = int(to_two_way(pred) == ex.label)
        correct += hit
        for counter in (right[(meta["heuristic"], ex.label)], sub[meta["subcase"]]):
            counter[0] += hit
            counter[1] += 1
    heuristics = [h for h in HEURISTICS if any(k[0] == h for k in right)]
    heuristics += sorted({k[0] for k in right} - set(heuristics))
    return {
        "overall": correct / len(examples),
        "n": len(examples),
        "heuristics": {h: {g: right[(h, g)][0] / right[(h, g)][1] for g in HANS_LABELS if (h, g) in right}
                       for h in heuristics},
        "subcases": {s: c / n for s, (c, n) in sorted(sub.items())},
        "counts": {h: {g: right[(h, g)][1] for g in HANS_LABELS if (h, g) in right} for h in heuristics},
    }
