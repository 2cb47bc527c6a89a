"""SQuAD's official metrics: exact match and F1 (v1.1), plus HasAns/NoAns and the best null threshold (v2.0).

Re-implemented from the official evaluation scripts (``evaluate-v1.1.py``, ``evaluate-v2.0.py``) so the
numbers are the ones the leaderboard gives:

- the answer normalisation lower-cases, removes punctuation (``string.punctuation``), removes the
  articles a/an/the as whole words, and collapses white space — in that order;
- EM and F1 (bag-of-tokens overlap) take the maximum over the gold answers;
- v2.0: unanswerable questions have the empty string as their only gold answer, and an empty
  prediction scores 1 there; with a file of null odds (``na_probs``), the threshold above which the
  null answer is taken is searched exactly as the official ``find_best_thresh`` does.

Scores are percentages (0-100), as the official scripts print them.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping
from pathlib import Path

from wellread.errors import WellreadError
from wellread.io import read_json

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised texts; two empty texts agree (v2.0), one empty scores 0."""
    pred_toks = normalize_answer(prediction).split()
    gold_toks = normalize_answer(gold).split()
    if not pred_toks or not gold_toks:
        return float(pred_toks == gold_toks)
    common = collections.Counter(pred_toks) & collections.Counter(gold_toks)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def best_over_gold(prediction: str, golds: list[str], *, v2: bool = False) -> tuple[int, float]:
    """(EM, F1) of one prediction: the maximum over the gold answers.

    v2.0 (as its script does) first drops gold answers that normalise to nothing, and a question
    left without any has the empty string as its one gold answer.
    """
    if v2:
        golds = [g for g in golds if normalize_answer(g)] or [""]
    return max(exact_match(prediction, g) for g in golds), max(f1(prediction, g) for g in golds)


def _pct(values, n: int) -> float:
    return 100.0 * sum(values) / n if n else 0.0


def find_best_threshold(preds: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                        has_ans: Mapping[str, bool]) -> tuple[float, float]:
    """(best score in %, threshold): the official search over the null odds.

    Start with every question answered null (credit for the unanswerable ones), then walk the
    questions in increasing null odds, letting each one's prediction stand: the threshold is the
    null odds of the question after which the running score was highest.
    """
    cur = best = sum(1 for q in scores if not has_ans[q])
    thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds.get(qid) else 0
        cur += diff
        if cur > best:
            best, thresh = cur, na_probs[qid]
    return _pct([best], len(scores)), thresh


def squad_scores(gold: Mapping[str, list[str]], preds: Mapping[str, str], *, v2: bool,
                 na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict:
    """The official result dict for predictions ``preds`` (id -> text) against ``gold`` (id -> answers).

    A question without a prediction scores 0 (and is counted in ``missing``). v1.1 gives
    ``exact_match`` and ``f1``; v2.0 gives ``exact``, ``f1``, ``total``, the HasAns/NoAns breakdown and,
    with ``na_probs``, ``best_exact``/``best_f1`` and their thresholds.
    """
    em: dict[str, float] = {}
    fs: dict[str, float] = {}
    for qid, answers in gold.items():
        if qid in preds:
            em[qid], fs[qid] = best_over_gold(preds[qid], answers, v2=v2)
        else:
            em[qid], fs[qid] = 0, 0.0
    missing = sum(1 for q in gold if q not in preds)
    extra = sum(1 for q in preds if q not in gold)
    n = len(gold)
    if not v2:
        return {"exact_match": _pct(em.values(), n), "f1": _pct(fs.values(), n), "total": n,
                "missing": missing, "unknown_ids": extra}
    has_ans = {q: bool(answers) for q, answers in gold.items()}
    probs = na_probs if na_probs is not None else dict.fromkeys(gold, 0.0)
    em_t, f1_t = dict(em), dict(fs)
    for qid in gold:  # the official apply_no_ans_threshold
        if probs.get(qid, 0.0) > na_prob_thresh:
            em_t[qid] = f1_t[qid] = float(not has_ans[qid])
    out: dict = {"exact": _pct(em_t.values(), n), "f1": _pct(f1_t.values(), n), "total": n}
    for name, want in (("HasAns", True), ("NoAns", False)):
        ids = [q for q in gold if has_ans[q] == want]
        if ids:
            out[f"{name}_exact"] = _pct((em_t[q] for q in ids), len(ids))
            out[f"{name}_f1"] = _pct((f1_t[q] for q in ids), len(ids))
            out[f"{name}_total"] = len(ids)
    if na_probs is not None:
        scored = {q: em[q] for q in gold}
        out["best_exact"], out["best_exact_thresh"] = find_best_threshold(preds, scored, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = find_best_threshold(preds, {q: fs[q] for q in gold}, probs, has_ans)
    out["missing"], out["unknown_ids"] = missing, extra
    return out


def read_predictions(path: str | Path, *, what: str = "predictions") -> dict:
    """A JSON object id -> answer text (or id -> number for null odds), as the official scripts read."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise WellreadError(f"{what} must be a JSON object mapping question id -> "
                            f"{'answer text' if what == 'predictions' else 'a number'}", file=path)
    want = str if what == "predictions" else (int, float)
    for k, v in data.items():
        if not isinstance(v, want) or isinstance(v, bool):
            raise WellreadError(f"the value for id {k!r} is {type(v).__name__}, expected "
                                f"{'a string' if what == 'predictions' else 'a number'}", file=path, field=k)
    return data


def format_scores(r: dict, *, task: str) -> str:
    """The scores as a short report, one metric a line."""
    keys = [k for k in r if isinstance(r[k], float)]
    lines = [f"{task}: {r.get('total')} questions" + (f", {r['missing']} without a prediction (scored 0)"
                                                      if r.get("missing") else "")]
    lines += [f"  {k:<18} {r[k]:.4f}" if "thresh" in k else f"  {k:<18} {r[k]:.2f}" for k in keys]
    return "\n".join(lines)


def score_file(task: str, data_dir: str | Path, predictions: str | Path, *, null_odds: str | Path | None = None) -> dict:
    """Score a predictions file (any system's) against a SQuAD file, as the official script does."""
    from wellread.data.squad import read_squad, squad_path

    sf = read_squad(squad_path(task, data_dir), task)
    preds = read_predictions(predictions)
    odds = read_predictions(null_odds, what="null odds") if null_odds is not None else None
    if odds is not None and task != "squad_v2":
        raise WellreadError("null odds apply to squad_v2 only", field="null_odds")
    r = squad_scores(sf.gold(), preds, v2=task == "squad_v2", na_probs=odds)
    return {"task": task, "file": str(sf.path), "predictions": str(predictions), **r}
