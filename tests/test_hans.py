"""HANS: 3-way MNLI predictions mapped to 2-way by name, accuracy per heuristic × gold label and subcase."""

from __future__ import annotations

import pytest

from wellread.data.task_files import read_split
from wellread.data.tasks import Example, get_task
from wellread.errors import WellreadError
from wellread.eval.hans import hans_report, to_two_way
from wellread.eval.metrics import compute_metrics

HEAD = "\t".join(["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                  "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"])
# (gold, heuristic, subcase) for 12 examples: two per heuristic × gold label
ROWS = [
    ("non-entailment", "lexical_overlap", "ln_subject/object_swap"),
    ("non-entailment", "lexical_overlap", "ln_passive"),
    ("entailment", "lexical_overlap", "le_relative_clause"),
    ("entailment", "lexical_overlap", "le_relative_clause"),
    ("non-entailment", "subsequence", "sn_NP/S"),
    ("non-entailment", "subsequence", "sn_NP/S"),
    ("entailment", "subsequence", "se_PP_on_obj"),
    ("entailment", "subsequence", "se_PP_on_obj"),
    ("non-entailment", "constituent", "cn_embedded_under_if"),
    ("non-entailment", "constituent", "cn_embedded_under_if"),
    ("entailment", "constituent", "ce_adverb"),
    ("entailment", "constituent", "ce_adverb"),
]
# a model that leans on the heuristics: says entailment almost always
PREDICTIONS = ["entailment", "contradiction", "entailment", "entailment",
               "entailment", "entailment", "entailment", "neutral",
               "neutral", "contradiction", "entailment", "entailment"]


@pytest.fixture
def hans(tmp_path):
    lines = [HEAD] + ["\t".join([g, "( a )", "( b )", "(ROOT a)", "(ROOT b)", f"premise {i} .", f"hypothesis {i} .",
                                 f"ex{i}", h, s, "temp1"]) for i, (g, h, s) in enumerate(ROWS)]
    (tmp_path / "HANS").mkdir()
    (tmp_path / "HANS" / "heuristics_evaluation_set.txt").write_text("\n".join(lines) + "\n")
    return read_split("hans", tmp_path, "evaluation").examples


def test_three_way_maps_to_two_way_by_name():
    assert [to_two_way(x) for x in ("entailment", "neutral", "contradiction", "Non-Entailment")] == [
        "entailment", "non-entailment", "non-entailment", "non-entailment"]
    with pytest.raises(WellreadError, match="cannot map prediction 'maybe'"):
        to_two_way("maybe")


def test_six_numbers_per_heuristic_and_gold_label(hans):
    r = hans_report(hans, PREDICTIONS)
    assert r["heuristics"] == {
        "lexical_overlap": {"entailment": 1.0, "non-entailment": 0.5},
        "subsequence": {"entailment": 0.5, "non-entailment": 0.0},
        "constituent": {"entailment": 1.0, "non-entailment": 1.0},
    }
    assert r["overall"] == pytest.approx(8 / 12) and r["n"] == 12
    assert r["subcases"]["ln_passive"] == 1.0 and r["subcases"]["ln_subject/object_swap"] == 0.0
    assert r["subcases"]["sn_NP/S"] == 0.0 and r["subcases"]["se_PP_on_obj"] == 0.5
    assert r["counts"]["constituent"] == {"entailment": 2, "non-entailment": 2}
    assert compute_metrics("hans", PREDICTIONS, [e.label for e in hans]) == {"accuracy": pytest.approx(8 / 12)}


def test_ids_need_the_models_id2label(hans):
    mnli = get_task("mnli")
    ids = [mnli.label2id[p] for p in PREDICTIONS]
    assert hans_report(hans, ids, mnli.id2label) == hans_report(hans, PREDICTIONS)
    # a model config in the hub's order gives the same report when its own id2label is passed
    hub = ["entailment", "neutral", "contradiction"]
    assert hans_report(hans, [hub.index(p) for p in PREDICTIONS], hub) == hans_report(hans, PREDICTIONS)
    with pytest.raises(WellreadError, match="pass id2label"):
        hans_report(hans, ids)


def test_mismatched_or_unlabelled_input_is_refused(hans):
    with pytest.raises(WellreadError, match="11 predictions for 12 HANS examples"):
        hans_report(hans, PREDICTIONS[:11])
    with pytest.raises(WellreadError, match="not a labelled HANS example"):
        hans_report([Example("x", "a", "b", None, None)], ["entailment"])
