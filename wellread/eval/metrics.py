"""GLUE's metrics, its overall score, and the published figures to compare against.

Metrics are computed directly with numpy (tests check them against scikit-learn and scipy) and are
returned as fractions (accuracy 0.832, not 83.2). ``glue_score`` is a mean, so its result is on the
scale of its inputs: the paper's table (percent) gives percent.

The GLUE score as the paper (and the GLUE leaderboard) computes it: the unweighted mean over the nine
tasks CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI, where a task with two metrics (MRPC F1/acc,
QQP F1/acc, STS-B Pearson/Spearman) counts as their mean, MNLI counts once as the mean of matched and
mismatched accuracy, and the diagnostic AX is NOT included. From the paper's per-task test figures
this gives Tiny 64.14, Mini 65.76, Small 71.17, Medium 73.51: the printed 65.8, 71.2, 73.5 and, for
Tiny, 64.1 against a printed 64.2 (the leaderboard averages unrounded per-task figures). Counting
MNLI-m and MNLI-mm as two tasks gives 64.8/66.6/71.8/74.1 and adding AX gives 59.8/61.8/66.9/69.2,
neither of which matches.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np

from wellread.data.tasks import TaskSpec, get_task
from wellread.errors import WellreadError
from wellread.eval.hans import to_two_way


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions equal to the reference."""
    p, r = _pair(predictions, references)
    return float(np.mean(p == r))


def f1(predictions: Sequence, references: Sequence, positive: object = 1) -> float:
    """F1 of the positive class, 2·TP / (2·TP + FP + FN); 0 when there is no positive anywhere (as sklearn)."""
    p, r = _pair(predictions, references)
    pp, rp = p == positive, r == positive
    tp = int(np.sum(pp & rp))
    denom = int(np.sum(pp)) + int(np.sum(rp))
    return 0.0 if denom == 0 else 2.0 * tp / denom


def confusion(predictions: Sequence, references: Sequence, labels: Sequence) -> np.ndarray:
    """Counts ``cm[i, j]`` of examples whose reference is ``labels[i]`` and prediction ``labels[j]``."""
    p, r = _pair(predictions, references)
    index = {name: i for i, name in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for a, b in zip(r.tolist(), p.tolist()):
        cm[index[a], index[b]] += 1
    return cm


def per_class(predictions: Sequence, references: Sequence, labels: Sequence) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (0 where undefined, as sklearn's zero_division=0)."""
    cm = confusion(predictions, references, labels)
    tp, predicted, support = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    out = {}
    for i, name in enumerate(labels):
        prec = tp[i] / predicted[i] if predicted[i] else 0.0
        rec = tp[i] / support[i] if support[i] else 0.0
        f = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[str(name)] = {"precision": float(prec), "recall": float(rec), "f1": float(f), "support": int(support[i])}
    return out


def macro_f1(predictions: Sequence, references: Sequence, labels: Sequence | None = None) -> float:
    """The unweighted mean of the per-class F1 over ``labels`` (default: the classes seen in either)."""
    if labels is None:
        p, r = _pair(predictions, references)
        labels = sorted(set(p.tolist()) | set(r.tolist()))
    return float(np.mean([c["f1"] for c in per_class(predictions, references, labels).values()]))


def mcc(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation; for more than two classes Gorodkin's R_K (GLUE's AX "R3"), as sklearn.

    R_K = (c·s − Σ_k p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)) with c correct, s samples, p_k / t_k
    the predicted / true counts of class k; 0 when a factor of the denominator is 0 (a constant
    predictor), which is how a model that always says "acceptable" gets CoLA 0.0.
    """
    p, r = _pair(predictions, references)
    classes, inv = np.unique(np.concatenate([r, p]), return_inverse=True)
    k, n = len(classes), len(r)
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (inv[:n], inv[n:]), 1.0)
    t, q = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    cov_tp = c * s - t @ q
    cov_pp = s * s - q @ q
    cov_tt = s * s - t @ t
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / math.sqrt(cov_tt * cov_pp))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; NaN when either side is constant (r is undefined there)."""
    a, b = (np.asarray(v, dtype=np.float64) for v in _pair(x, y))
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float("nan") if denom == 0 else float(np.clip((a @ b) / denom, -1.0, 1.0))


def _rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their average rank (scipy.stats.rankdata's "average")."""
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inv]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    a, b = (np.asarray(v, dtype=np.float64) for v in _pair(x, y))
    return pearson(_rank(a), _rank(b))


def _pair(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(list(predictions)), np.asarray(list(references))
    if p.shape != r.shape or p.ndim != 1:
        raise WellreadError(f"{len(p)} predictions for {len(r)} references", field="predictions")
    if len(r) == 0:
        raise WellreadError("no predictions to score", field="predictions")
    return p, r


def _as_names(spec: TaskSpec, values: Sequence, what: str) -> np.ndarray:
    """Label names for predictions/references given as names or as ids in the task's canonical order."""
    assert spec.labels is not None
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            if not 0 <= v < len(spec.labels):
                raise WellreadError(f"{what}[{i}] = {v} is not a label id of {spec.name}", field=what)
            v = spec.labels[v]
        elif v is None:
            raise WellreadError(f"{what}[{i}] has no label (an unlabelled split cannot be scored)", field=what)
        else:
            v = str(v)
        out.append(v)
    return np.asarray(out, dtype=object)


def compute_metrics(task: str | TaskSpec, predictions: Sequence, references: Sequence) -> dict[str, float]:
    """The task's GLUE metrics, e.g. ``{"f1": .., "accuracy": ..}`` for MRPC, as fractions.

    Classification predictions and references are label names (or ids in the task's canonical order);
    STS-B takes scores. HANS takes 3-way MNLI predictions, mapped to 2-way by name.
    """
    spec = get_task(task)
    if spec.is_regression:
        if any(v is None for v in references):
            raise WellreadError("a reference has no score (an unlabelled split cannot be scored)", field="references")
        p, r = (np.asarray(list(v), dtype=np.float64) for v in (predictions, references))
    else:
        if spec.name == "hans":
            predictions = [to_two_way(v) for v in predictions]
        p, r = _as_names(spec, predictions, "predictions"), _as_names(spec, references, "references")
        unknown = sorted(set(p.tolist()) - set(spec.labels or ()))
        if unknown:
            raise WellreadError(f"prediction {unknown[0]!r} is not a label of {spec.name} "
                                f"({', '.join(spec.labels or ())})", field="predictions")
    fns = {"accuracy": accuracy, "mcc": mcc, "pearson": pearson, "spearman": spearman,
           "f1": lambda a, b: f1(a, b, positive=spec.positive_label),
           "macro_f1": lambda a, b: macro_f1(a, b, spec.labels)}
    return {m: fns[m](p, r) for m in (*spec.metrics, *spec.report_metrics)}


def task_score(task: str | TaskSpec, metrics: Mapping[str, float]) -> float:
    """One number per task as GLUE counts it: the mean of the task's metrics (F1/acc, Pearson/Spearman)."""
    spec = get_task(task)
    missing = [m for m in spec.metrics if m not in metrics]
    if missing:
        raise WellreadError(f"{spec.name} needs metric(s) {', '.join(missing)} (have: {', '.join(metrics)})",
                            field=spec.name)
    return float(np.mean([metrics[m] for m in spec.metrics]))


# The GLUE score's columns: (column, task). MNLI's two are averaged into one task before the mean.
GLUE_SCORE_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
_MNLI_COLUMNS = {"mnlim": "mnli-m", "mnlimatched": "mnli-m", "devmatched": "mnli-m", "testmatched": "mnli-m",
                 "mnlimm": "mnli-mm", "mnlimismatched": "mnli-mm", "devmismatched": "mnli-mm",
                 "testmismatched": "mnli-mm"}


def glue_score(per_task: Mapping[str, Mapping[str, float] | float]) -> float:
    """The GLUE score as the paper computes it (see the module docstring): mean over nine tasks.

    ``per_task`` maps a column to its metrics, e.g. ``{"cola": {"mcc": 0.27}, "mrpc": {"f1": .., "accuracy": ..},
    "mnli-m": {"accuracy": ..}, "mnli-mm": {"accuracy": ..}, ...}``, as ``compute_metrics`` returns them
    or as a row of ``PAPER_GLUE_TEST``. Names are matched loosely ("SST-2", "MNLI-mm", "dev_matched");
    other keys (AX, "score") are ignored. The result is on the inputs' scale.
    """
    cols: dict[str, Mapping[str, float]] = {}
    for key, value in per_task.items():
        norm = re.sub(r"[^a-z0-9]", "", key.lower())
        if norm in _MNLI_COLUMNS:
            cols[_MNLI_COLUMNS[norm]] = value  # type: ignore[assignment]
            continue
        try:
            name = get_task(key).name
        except WellreadError:
            continue
        if name == "mnli":
            raise WellreadError("give MNLI as two columns, mnli-m and mnli-mm (matched, mismatched)", field=key)
        if name in GLUE_SCORE_TASKS:
            if not isinstance(value, Mapping):
                raise WellreadError(f"{key}: expected a mapping of metric -> value, got {value!r}", field=key)
            cols[name] = value
    missing = [t for t in GLUE_SCORE_TASKS if t != "mnli" and t not in cols]
    missing += [c for c in ("mnli-m", "mnli-mm") if c not in cols]
    if missing:
        raise WellreadError(f"the GLUE score needs all nine tasks; missing: {', '.join(missing)}", field=missing[0])
    scores = [task_score(t, cols[t]) for t in GLUE_SCORE_TASKS if t != "mnli"]
    scores.append((task_score("mnli", cols["mnli-m"]) + task_score("mnli", cols["mnli-mm"])) / 2.0)
    return float(np.mean(scores))


# --- published figures (../shared/REFERENCE.md), in percent ---------------------------------------

def _row(score, cola, sst2, mrpc, stsb, qqp, m, mm, qnli, rte, wnli, ax) -> dict:
    return {"score": score, "cola": {"mcc": cola}, "sst2": {"accuracy": sst2},
            "mrpc": {"f1": mrpc[0], "accuracy": mrpc[1]}, "stsb": {"pearson": stsb[0], "spearman": stsb[1]},
            "qqp": {"f1": qqp[0], "accuracy": qqp[1]}, "mnli-m": {"accuracy": m}, "mnli-mm": {"accuracy": mm},
            "qnli": {"accuracy": qnli}, "rte": {"accuracy": rte}, "wnli": {"accuracy": wnli}, "ax": {"mcc": ax}}


# Turc et al. 2019, GLUE test set; "score" is the printed GLUE score.
PAPER_GLUE_TEST: dict[str, dict] = {
    "tiny": _row(64.2, 0.0, 83.2, (81.1, 71.1), (74.3, 73.6), (62.2, 83.4), 70.2, 70.3, 81.5, 57.2, 62.3, 21.0),
    "mini": _row(65.8, 0.0, 85.9, (81.1, 71.8), (75.4, 73.3), (66.4, 86.2), 74.8, 74.3, 84.1, 57.9, 62.3, 26.1),
    "small": _row(71.2, 27.8, 89.7, (83.4, 76.2), (78.8, 77.0), (68.1, 87.0), 77.6, 77.0, 86.4, 61.8, 62.3, 28.6),
    "medium": _row(73.5, 38.0, 89.6, (86.6, 81.6), (80.4, 78.4), (69.6, 87.9), 80.0, 79.1, 87.7, 62.2, 62.3, 30.5),
}


def _olm(cola, sst2, mrpc_acc_f1, stsb, qqp, m, mm, qnli, rte, wnli) -> dict:
    # The source gives QQP as one number without naming the metric, so it is kept as "reported";
    # no GLUE score is computed from these rows.
    return {"cola": {"mcc": cola}, "sst2": {"accuracy": sst2},
            "mrpc": {"accuracy": mrpc_acc_f1[0], "f1": mrpc_acc_f1[1]},
            "stsb": {"pearson": stsb[0], "spearman": stsb[1]}, "qqp": {"reported": qqp},
            "mnli-m": {"accuracy": m}, "mnli-mm": {"accuracy": mm}, "qnli": {"accuracy": qnli},
            "rte": {"accuracy": rte}, "wnli": {"accuracy": wnli}}


# GLUE dev: the original Tiny against a Tiny re-trained on a December 2022 crawl (OLM project).
OLM_GLUE_DEV: dict[str, dict] = {
    "original tiny": _olm(0.0, 79.8, (68.4, 81.2), (67.2, 69.3), 77.7, 65.4, 66.7, 77.5, 57.8, 49.3),
    "olm tiny (dec 2022)": _olm(0.0, 79.7, (68.4, 81.2), (-16.0, -13.6), 62.9, 53.2, 54.7, 62.0, 56.0, 53.5),
}

# MNLI dev accuracy (matched, mismatched) of the PyTorch ports fine-tuned 4 epochs (prajjwal1 model cards).
PRAJJWAL1_MNLI_DEV: dict[str, dict[str, float]] = {
    "tiny": {"mnli-m": 60.0, "mnli-mm": 61.6},
    "mini": {"mnli-m": 68.0, "mnli-mm": 69.2},
    "small": {"mnli-m": 72.1, "mnli-mm": 73.8},
    "medium": {"mnli-m": 75.9, "mnli-mm": 77.0},
}


def cell_score(task: str, dev: dict) -> float:
    """The selection score of a cell: the task's GLUE metric (averaged over metrics and dev splits);
    for extractive QA (squad, squad_v2) the official F1 on the held-out questions, as a fraction."""
    if task in ("squad", "squad_v2"):
        return dev["test/f1"] / 100
    spec = get_task(task)
    scores = []
    for split in spec.dev_splits:
        scores.append(task_score(spec, {m: dev[f"{split}/{m}"] for m in spec.metrics}))
    return sum(scores) / len(scores)


def best_glue_columns(tasks: dict) -> dict[str, dict[str, float]]:
    """Best cells' dev metrics as glue_score columns (MNLI split into matched / mismatched)."""
    cols: dict[str, dict[str, float]] = {}
    for task, t in tasks.items():
        if t["best"] is None or task in ("squad", "squad_v2"):  # not GLUE columns
            continue
        spec = get_task(task)
        if spec.source is not None:
            continue  # a task file: not a GLUE column
        dev = t["best"]["dev"]
        if task == "mnli":
            for split, col in zip(spec.dev_splits, ("mnli-m", "mnli-mm")):
                cols[col] = {m: dev[f"{split}/{m}"] for m in spec.metrics}
        else:
            cols[task] = {m: dev[f"{spec.dev_splits[0]}/{m}"] for m in spec.metrics}
    return cols
