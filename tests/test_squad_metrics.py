"""SQuAD's official metrics on hand-written cases: each normalisation rule, the max over gold answers,
v2.0's HasAns/NoAns split and its null-threshold search on a case whose right threshold is known."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from wellread.eval.squad import best_over_gold, exact_match, f1, find_best_threshold, normalize_answer, squad_scores


def test_lower_case():
    assert normalize_answer("Denver BRONCOS") == "denver broncos"
    assert exact_match("Denver Broncos", "denver broncos") == 1


def test_ascii_punctuation_is_removed_but_not_other_symbols():
    assert normalize_answer("Denver, Broncos!") == "denver broncos"
    assert normalize_answer("U.S.") == "us"
    assert normalize_answer("«x»") == "«x»", "the official script removes string.punctuation (ASCII) only"


def test_articles_are_removed_as_whole_words_only():
    assert normalize_answer("the Broncos") == "broncos"
    assert normalize_answer("a dog and an apple") == "dog and apple"
    assert normalize_answer("theatre anthem") == "theatre anthem"


def test_punctuation_goes_before_articles():
    # "the-end": punctuation first gives "theend" (no article left); articles first would give "end"
    assert normalize_answer("the-end") == "theend"


def test_white_space_is_collapsed():
    assert normalize_answer("  Denver \n\t Broncos ") == "denver broncos"


def test_f1_counts_shared_tokens():
    assert f1("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)  # p 2/3, r 1
    assert f1("Broncos Broncos", "Broncos") == pytest.approx(2 * 0.5 * 1 / 1.5)  # a bag: one match
    assert f1("Carolina", "Denver Broncos") == 0.0
    assert f1("", "Denver") == 0.0 and f1("", "") == 1.0


def test_maximum_over_gold_answers():
    assert best_over_gold("Broncos", ["Denver Broncos", "Broncos"]) == (1, 1.0)
    em, score = best_over_gold("Denver", ["Carolina Panthers", "Denver Broncos", "the Denver Broncos team"])
    assert em == 0 and score == pytest.approx(2 / 3)


def test_v2_drops_gold_answers_that_normalise_to_nothing():
    assert best_over_gold("", ["the"], v2=True) == (1, 1.0)
    assert best_over_gold("", [], v2=True) == (1, 1.0)


def test_v1_scores_are_percentages_and_missing_predictions_score_zero():
    gold = {"q1": ["Denver Broncos"], "q2": ["1990", "in 1990"], "q3": ["Paris"]}
    r = squad_scores(gold, {"q1": "the Denver Broncos", "q2": "1990s", "x": "?"}, v2=False)
    assert r["exact_match"] == pytest.approx(100 / 3)
    assert r["f1"] == pytest.approx(100 / 3)
    assert r["missing"] == 1 and r["unknown_ids"] == 1 and r["total"] == 3


def test_v2_has_ans_and_no_ans():
    gold = {"a1": ["Denver"], "a2": ["Paris"], "n1": [], "n2": []}
    r = squad_scores(gold, {"a1": "Denver", "a2": "", "n1": "", "n2": "Lyon"}, v2=True)
    assert (r["HasAns_exact"], r["HasAns_total"]) == (50.0, 2)
    assert (r["NoAns_exact"], r["NoAns_total"]) == (50.0, 2)
    assert r["exact"] == 50.0 and "best_f1" not in r


def test_best_null_threshold_on_a_case_with_a_known_answer():
    # Answer null when the null odds exceed t. a1 and a2 are answered right, n1 and n2 are unanswerable
    # but were given answers. Odds: a1 -2, a2 0.2, n2 0.5, n1 3. Any t in [0.2, 0.5) gets all four right;
    # the official search reports the odds of the question after which the score peaks: 0.2.
    gold = {"a1": ["Denver"], "a2": ["Paris"], "n1": [], "n2": []}
    preds = {"a1": "Denver", "a2": "Paris", "n1": "Lyon", "n2": "Nice"}
    odds = {"a1": -2.0, "a2": 0.2, "n1": 3.0, "n2": 0.5}
    scores = {q: best_over_gold(preds[q], gold[q], v2=True)[0] for q in gold}
    assert find_best_threshold(preds, scores, odds, {q: bool(g) for q, g in gold.items()}) == (100.0, 0.2)
    r = squad_scores(gold, preds, v2=True, na_probs=odds)
    assert (r["best_exact"], r["best_exact_thresh"], r["best_f1"], r["best_f1_thresh"]) == (100.0, 0.2, 100.0, 0.2)
    assert r["exact"] == 75.0, "at the default na_prob_thresh 1.0 only n1 (odds 3) is answered null"
    at = {t: squad_scores(gold, preds, v2=True, na_probs=odds, na_prob_thresh=t)["exact"] for t in (-3, 0.1, 0.2, 0.5)}
    assert at == {-3: 50.0, 0.1: 75.0, 0.2: 100.0, 0.5: 75.0}


def _run(*args):
    return subprocess.run([sys.executable, "-m", "wellread", *args], cwd=REPO, capture_output=True, text=True)


def test_evaluate_scores_a_predictions_file_like_the_official_script(tmp_path):
    data = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "The Denver Broncos won in 2016.",
            "qas": [{"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 4},
                                                                      {"text": "The Denver Broncos", "answer_start": 0}]},
                    {"id": "q2", "question": "When?", "answers": [{"text": "2016", "answer_start": 26}]}]}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(data))
    (tmp_path / "p.json").write_text(json.dumps({"q1": "broncos", "q2": "2016"}))
    p = _run("evaluate", "--task", "squad", "--data-dir", str(tmp_path / "dev.json"), "--predictions",
             str(tmp_path / "p.json"), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["exact_match"] == 50.0 and r["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    (tmp_path / "bad.json").write_text(json.dumps({"q1": 3}))
    p = _run("evaluate", "--task", "squad", "--data-dir", str(tmp_path / "dev.json"), "--predictions",
             str(tmp_path / "bad.json"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "q1" in p.stderr and "expected a string" in p.stderr
