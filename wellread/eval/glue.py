"""Score a fine-tuned model on a task, and write the GLUE leaderboard submission.

A model's classes are matched to a task's labels BY NAME (its ``config.json`` ``id2label``), never by
position: a model whose outputs are ordered (neutral, contradiction, entailment) scores MNLI exactly as
one in GLUE's order, and a model whose label names are not the task's is refused. AX and HANS have no
training data of their own; they are predicted with a model trained for MNLI (``TaskSpec.evaluate_with``).

``evaluate_model`` gives the task's GLUE metrics per labelled split (MNLI: matched and mismatched; AX:
``diagnostic-full.tsv``, scored with Gorodkin's R3; HANS: ``hans_report``'s six heuristic × gold label
accuracies and per-subcase figures). ``predict_glue`` writes GLUE's leaderboard files (``index\\tprediction``)
and a zip of them, atomically.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from wellread.data.batching import cached_encode
from wellread.data.task_files import read_split, split_files
from wellread.data.tasks import TASKS, Example, TaskSpec, get_task
from wellread.errors import WellreadError
from wellread.eval.hans import hans_report
from wellread.eval.metrics import compute_metrics, confusion, per_class
from wellread.eval.predict import logits_to_predictions, predict_logits
from wellread.io import atomic_directory, check_output_dir, model_directory, read_json
from wellread.modeling.models import load_classifier as load_weights_strictly
from wellread.modeling.models import read_config
from wellread.tokenization import PAD, check_vocabulary, load_tokenizer

SUBMISSION_ZIP = "submission.zip"
MANIFEST = "predictions.json"  # which model wrote which file, and what was skipped (not in the zip)
STSB_RANGE = (0.0, 5.0)
# Every leaderboard file, in the leaderboard's column order.
SUBMISSION_FILES = tuple(f for t in TASKS.values() for f in t.submissions.values())


# --- a fine-tuned model ---------------------------------------------------------------------------

@dataclass
class Classifier:
    """A sequence-classification model and its tokenizer, with its outputs named in a task's terms."""

    model: torch.nn.Module
    tokenizer: Tokenizer
    labels: tuple[str, ...] | None  # the task's label name of each output id; None: one regression score
    path: Path


resolve_model_dir = model_directory  # a model directory, or a run directory holding model/


def model_task(task: str | TaskSpec) -> TaskSpec:
    """The task a model must have been trained for to predict ``task`` (MNLI for AX and HANS)."""
    spec = get_task(task)
    return get_task(spec.evaluate_with) if spec.evaluate_with else spec


def output_labels(config, task: str | TaskSpec, path: Path | None = None) -> tuple[str, ...] | None:
    """The task's label name for each output id of a model ``config``, matched by name; None for a score.

    Names match exactly or ignoring case ("ENTAILMENT"). A model whose label set is not the task's
    (another task's head, HF's default ``LABEL_0``…, a classifier for a regression task) is refused.
    """
    spec = get_task(task)
    target = model_task(spec)
    where = {"file": None if path is None else Path(path) / "config.json", "field": "id2label"}
    id2label = {int(k): str(v).strip() for k, v in (getattr(config, "id2label", None) or {}).items()}
    names = [id2label.get(i, f"LABEL_{i}") for i in range(config.num_labels)]
    for_task = spec.name if target is spec else f"{spec.name} (scored with a model trained for {target.name})"
    if target.is_regression:
        if config.num_labels != 1 or getattr(config, "problem_type", None) not in (None, "regression"):
            raise WellreadError(f"the model predicts labels {names}, but {for_task} needs one regression score", **where)
        return None
    exact = {name: name for name in target.labels}
    folded = {name.lower(): name for name in target.labels}
    mapped = [exact.get(n) or folded.get(n.lower()) for n in names]
    if None in mapped or sorted(mapped) != sorted(target.labels):
        got = "one regression score" if config.num_labels == 1 and getattr(config, "problem_type", None) == "regression" \
            else f"labels {names}"
        raise WellreadError(f"the model predicts {got}, but {for_task} has labels {list(target.labels)}", **where)
    return tuple(mapped)  # type: ignore[arg-type]


def load_classifier(model_dir: str | Path, task: str | TaskSpec) -> Classifier:
    """Load a fine-tuned ``BertForSequenceClassification`` strictly, for ``task``.

    The label set is checked first (from config.json only); then every tensor the class needs must be
    present with its shape (a missing classifier is an error, never a random one), and the vocabulary
    must match the embeddings.
    """
    path = resolve_model_dir(model_dir)
    config = read_config(path)
    labels = output_labels(config, task, path)
    model = load_weights_strictly(path)
    tok = load_tokenizer(path)
    check_vocabulary(tok, config.vocab_size, path)
    return Classifier(model, tok, labels, path)


def predict(clf: Classifier, examples: Sequence[Example], *, max_length: int = 128, key: str = "eval") -> list:
    """Label names (in the task's terms) or raw scores for ``examples``, inputs truncated to ``max_length``."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    clf.model.to(device)
    max_length = min(max_length, clf.model.config.max_position_embeddings)
    feats = cached_encode(clf.tokenizer, [e.text_a for e in examples], [e.text_b for e in examples], max_length, key)
    logits = predict_logits(clf.model, feats, pad_id=clf.tokenizer.token_to_id(PAD), device=device)
    return logits_to_predictions(logits, clf.labels)


# --- evaluate -------------------------------------------------------------------------------------

def labelled_splits(task: str | TaskSpec) -> tuple[str, ...]:
    """The splits ``evaluate_model`` scores by default: dev (MNLI: both), HANS's set, AX's diagnostic-full."""
    spec = get_task(task)
    return spec.dev_splits or tuple(s for s, (_, lay) in spec.splits.items() if lay.label is not None)


def evaluate_model(model_dir: str | Path, task: str, data_dir: str | Path | None, split: str | None = None, *,
                   max_length: int = 128, plots: str | Path | None = None) -> dict:
    """Score a saved model on a task's labelled split(s).

    Returns ``{"task", "model", "max_length", "splits": {split: metrics}}``: the task's GLUE metrics as
    fractions plus ``n`` (examples) and ``skipped`` (malformed rows the reader skipped, when any); for
    HANS, ``hans_report``'s dict (``heuristics``: heuristic → gold label → accuracy, ``subcases``,
    ``counts``) with ``accuracy`` = its ``overall``. STS-B is scored on the raw (unclipped) outputs,
    as fine-tuning's dev evaluation does. Classification adds ``per_class`` (precision, recall, F1,
    support) and ``confusion`` (rows true, columns predicted, in the task's label order); with ``plots``
    (a directory) each split's confusion matrix, or for regression its error plot, is written there as PNG.
    """
    spec = get_task(task)
    splits = [spec.split_name(split)] if split else list(labelled_splits(spec))
    for s in splits:
        if spec.splits[s][1].label is None:
            raise WellreadError(f"the {s} split of {spec.name} has no labels to score; "
                                f"use {'predict' if spec.source is not None else 'predict-glue'} to write its "
                                "predictions", field="split")
    clf = load_classifier(model_dir, spec)
    max_length = min(max_length, clf.model.config.max_position_embeddings)
    out: dict[str, dict] = {}
    for s in splits:
        data = read_split(spec, data_dir, s)
        preds = predict(clf, data.examples, max_length=max_length, key=f"{spec.name}-{s}")
        if spec.name == "hans":
            report = hans_report(data.examples, preds)
            metrics = {"accuracy": report["overall"], **report}
        else:
            refs = [e.label for e in data.examples]
            metrics = {**compute_metrics(spec, preds, refs), "n": len(data.examples)}
            if spec.labels is not None:
                metrics["per_class"] = per_class(preds, refs, spec.labels)
                metrics["confusion"] = {"labels": list(spec.labels),
                                        "matrix": confusion(preds, refs, spec.labels).tolist()}
            if plots is not None:
                metrics["plot"] = str(_plot(spec, s, preds, refs, Path(plots)))
        if data.skipped:
            metrics["skipped"] = len(data.skipped)
        out[s] = metrics
    result = {"task": spec.name, "model": str(clf.path), "max_length": max_length, "splits": out}
    if spec.source is not None:
        result["task_file"] = str(spec.source.path)
    return result


def _plot(spec: TaskSpec, split: str, preds: list, refs: list, folder: Path) -> Path:
    from wellread.report.task_plots import confusion_png, errors_png

    folder.mkdir(parents=True, exist_ok=True)
    if spec.labels is None:
        return errors_png(preds, refs, folder / f"errors-{spec.name}-{split}.png", f"{spec.name} {split}")
    return confusion_png(confusion(preds, refs, spec.labels), spec.labels,
                         folder / f"confusion-{spec.name}-{split}.png", f"{spec.name} {split}")


def format_evaluation(result: Mapping) -> str:
    """A short human-readable report of ``evaluate_model``'s result."""
    lines = []
    for split, m in result["splits"].items():
        scores = ", ".join(f"{k} {m[k]:.4f}" for k in ("mcc", "accuracy", "f1", "macro_f1", "pearson", "spearman")
                           if k in m)
        skipped = f", {m['skipped']} rows skipped" if m.get("skipped") else ""
        lines.append(f"{result['task']} {split}: {scores} ({m['n']:,} examples{skipped})")
        if "per_class" in m and "task_file" in result:  # a GLUE task's report stays one line per split
            width = max(len(c) for c in m["per_class"])
            lines.append(f"  {'class':<{width}}  precision  recall      f1  support")
            lines += [f"  {c:<{width}}  {v['precision']:>9.4f}  {v['recall']:>6.4f}  {v['f1']:>6.4f}  "
                      f"{v['support']:>7,}" for c, v in m["per_class"].items()]
            cm = m["confusion"]
            lines.append("  confusion (rows true, columns predicted): " + "; ".join(
                f"{t} [{' '.join(map(str, row))}]" for t, row in zip(cm["labels"], cm["matrix"])))
        if "plot" in m:
            lines.append(f"  plot: {m['plot']}")
        if "heuristics" in m:
            golds = ("entailment", "non-entailment")
            width = max(len(h) for h in m["heuristics"]) if m["heuristics"] else 9
            lines.append(f"  {'heuristic':<{width}}  " + "  ".join(f"{g:>14}" for g in golds))
            for h, accs in m["heuristics"].items():
                lines.append(f"  {h:<{width}}  " + "  ".join(f"{accs[g]:>14.4f}" if g in accs else f"{'-':>14}"
                                                             for g in golds))
            sub_width = max(len(s) for s in m["subcases"])
            lines.append("  subcases:")
            lines += [f"    {s:<{sub_width}}  {a:.4f}" for s, a in m["subcases"].items()]
    return "\n".join(lines)


# --- predict-glue ---------------------------------------------------------------------------------

def _models_from_dir(d: Path) -> dict[str, Path]:
    """task → model dir from a directory: a fine-tuning run, or a ``best.json``/``results.json`` table."""
    if not d.is_dir():
        raise WellreadError("not a directory, nor an entry TASK=MODEL_DIR", file=d, field="models")
    for name in ("best.json", "results.json"):
        f = d / name
        if not f.is_file():
            continue
        data = read_json(f)
        if isinstance(data, dict) and isinstance(data.get("task"), str) and (d / "model" / "config.json").is_file():
            return {get_task(data["task"]).name: d / "model"}  # a `wellread finetune` run
        table = data.get("best", data) if isinstance(data, dict) else None
        found: dict[str, Path] = {}
        for key, value in (table.items() if isinstance(table, dict) else ()):
            try:
                task = get_task(key).name
            except WellreadError:
                continue  # other keys (settings, scores...) are not ours to read
            if isinstance(value, dict):
                value = value.get("model")
            if not isinstance(value, str):
                raise WellreadError("expected a model directory (a string, or an object with \"model\")",
                                    file=f, field=key)
            found[task] = d / value  # a relative path is relative to the table's directory
        if found:
            return found
        raise WellreadError("expected an object mapping task -> model directory (or a fine-tuning run's "
                            "results.json beside model/)", file=f)
    raise WellreadError("holds no best.json or results.json naming a model per task", file=d, field="models")


def parse_models(entries: Sequence[str]) -> dict[str, Path]:
    """task → model dir from ``--models`` entries: ``TASK=DIR`` (comma-separated allowed) or a directory.

    A directory is a fine-tuning run (``results.json`` + ``model/``) or holds ``best.json`` /
    ``results.json`` mapping task → model directory. ``TASK=DIR`` entries override a directory's.
    """
    explicit: dict[str, Path] = {}
    from_dirs: dict[str, Path] = {}
    for entry in entries:
        for part in (p.strip() for p in str(entry).split(",")):
            if not part:
                continue
            if "=" in part:
                name, _, d = part.partition("=")
                task = get_task(name.strip()).name
                if task in explicit:
                    raise WellreadError(f"two models given for {task}", field="models")
                if not d.strip():
                    raise WellreadError(f"no model directory after {name}=", field="models")
                explicit[task] = Path(d.strip())
                continue
            for task, d in _models_from_dir(Path(part)).items():
                if task in from_dirs and from_dirs[task] != d:
                    raise WellreadError(f"two models given for {task} ({from_dirs[task]}, {d})", field="models")
                from_dirs[task] = d
    models = {**from_dirs, **explicit}
    if not models:
        raise WellreadError("no models given", field="models")
    return models


def _test_file(spec: TaskSpec, data_dir: Path, split: str) -> str | None:
    """Why ``split`` of ``spec`` cannot be predicted from ``data_dir`` (None when its file is there)."""
    try:
        present = split_files(spec, data_dir)
    except WellreadError:
        return f"no {spec.folder}/ folder in {data_dir}"
    if split not in present:
        where = next(iter(present.values())).parent
        return f"no {spec.splits[split][0]} in {where}"
    return None


def _format_prediction(spec: TaskSpec, value: str | float) -> str:
    if spec.is_regression:
        lo, hi = STSB_RANGE
        return f"{min(max(float(value), lo), hi):.3f}"
    return str(value)


def _zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """A zip of ``files`` at its top level, byte-identical for identical content (fixed timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def predict_glue(models: Mapping[str, str | Path], data_dir: str | Path, out: str | Path, *,
                 max_length: int = 128) -> dict:
    """Write GLUE's leaderboard files for the tasks with a model and a test file, and ``submission.zip``.

    ``models`` maps a task to a model directory; AX is predicted with MNLI's model unless given its own.
    Each file is ``index\\tprediction``: the test file's index (QQP: id) column, then the label name for
    the NLI tasks (MNLI, AX: entailment/neutral/contradiction; QNLI, RTE: entailment/not_entailment), 0/1
    for CoLA, SST-2, MRPC, QQP and WNLI, and STS-B's score clipped to [0, 5]. Files that cannot be
    written (no model, no test file) are listed in the result's ``skipped`` with the reason. ``out`` is
    a directory built atomically: the files, ``submission.zip`` and ``predictions.json``.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise WellreadError("no such data directory", file=data_dir)
    plan = {get_task(t).name: Path(d) for t, d in models.items()}
    for task in plan:
        if not TASKS[task].submissions:
            raise WellreadError(f"{task} has no leaderboard file (evaluate it with `wellread evaluate`)", field="models")
    if "mnli" in plan and "ax" not in plan:
        plan["ax"] = plan["mnli"]
    out = check_output_dir(out, allowed={*SUBMISSION_FILES, SUBMISSION_ZIP, MANIFEST})
    # Refuse a wrong model before any prediction is made (config.json only: cheap).
    for task, d in plan.items():
        plan[task] = resolve_model_dir(d)
        output_labels(read_config(plan[task]), task, plan[task])
    files: dict[str, bytes] = {}
    written: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    loaded: dict[tuple[Path, str], Classifier] = {}
    for spec in TASKS.values():
        for split, fname in spec.submissions.items():
            if spec.name not in plan:
                skipped[fname] = f"no model for {spec.name}" + (" (nor for mnli)" if spec.evaluate_with else "")
                continue
            reason = _test_file(spec, data_dir, split)
            if reason is not None:
                skipped[fname] = reason
                continue
            key = (plan[spec.name], model_task(spec).name)
            if key not in loaded:
                loaded[key] = load_classifier(plan[spec.name], spec)
            data = read_split(spec, data_dir, split)
            preds = predict(loaded[key], data.examples, max_length=max_length, key=f"{spec.name}-{split}")
            rows = ["index\tprediction"] + [f"{e.meta['index']}\t{_format_prediction(spec, p)}"
                                            for e, p in zip(data.examples, preds)]
            files[fname] = ("\n".join(rows) + "\n").encode("utf-8")
            written[fname] = {"task": spec.name, "split": split, "model": str(plan[spec.name]),
                              "model_task": model_task(spec).name,
                              "test_file": str(data.path), "rows": len(data.examples)}
    if not files:
        raise WellreadError("nothing to submit: " + "; ".join(f"{f}: {r}" for f, r in skipped.items()
                                                              if not r.startswith("no model")), file=data_dir)
    manifest = {"data_dir": str(data_dir), "max_length": max_length, "files": written, "skipped": skipped}
    with atomic_directory(out) as tmp:
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
        (tmp / SUBMISSION_ZIP).write_bytes(_zip_bytes(files))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"out": str(out), "zip": str(out / SUBMISSION_ZIP), **manifest}


def format_submission(result: Mapping) -> str:
    """What ``predict_glue`` wrote and what it skipped, one line each."""
    lines = [f"wrote {f} ({w['rows']:,} rows, {w['model_task']} model {w['model']})" for f, w in result["files"].items()]
    lines += [f"skipped {f}: {r}" for f, r in result["skipped"].items()]
    lines.append(f"-> {result['zip']} ({len(result['files'])} of {len(SUBMISSION_FILES)} leaderboard files)")
    return "\n".join(lines)
