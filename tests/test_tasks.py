"""The GLUE / AX / HANS readers, on fixtures written to the GLUE file specification and on real GLUE."""

from __future__ import annotations

import csv
import io
import json
import os
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from wellread.data.task_files import read_split, split_files
from wellread.data.tasks import TASKS, Example, get_task
from wellread.errors import WellreadError

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
GLUE = DATA / "glue"
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason=f"real GLUE data not found at {GLUE} (set WELLREAD_DATA)")


def write(root: Path, folder: str, name: str, lines: list[str], *, bom: bool = False, eol: str = "\n") -> Path:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + (eol.join(lines) + eol).encode("utf-8"))
    return path


def tsv(*cols: object) -> str:
    return "\t".join(map(str, cols))


# --- the table -----------------------------------------------------------------------------------

def test_task_names_aliases_and_did_you_mean():
    assert get_task("SST-2").name == get_task("sst2").name == "sst2"
    assert get_task("STS-B").name == get_task("stsb").name == "stsb"
    assert get_task("MNLI-mm").name == get_task("mnli-m").name == "mnli"
    assert get_task("diagnostic").name == "ax"
    with pytest.raises(WellreadError, match="did you mean mrpc"):
        get_task("mrcp")


def test_table_holds_the_glue_facts():
    assert {t: TASKS[t].folder for t in TASKS} == {
        "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
        "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "ax": "AX", "hans": "HANS"}
    subs = sorted(f for t in TASKS.values() for f in t.submissions.values())
    assert subs == sorted(["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                           "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"])
    mnli = get_task("mnli")
    assert mnli.labels == ("contradiction", "entailment", "neutral")
    assert mnli.id2label == {0: "contradiction", 1: "entailment", 2: "neutral"}
    assert mnli.dev_splits == ("dev_matched", "dev_mismatched")
    assert mnli.test_splits == ("test_matched", "test_mismatched")
    assert get_task("stsb").is_regression and get_task("stsb").metrics == ("pearson", "spearman")
    assert get_task("mrpc").metrics == ("f1", "accuracy") and get_task("cola").main_metric == "mcc"
    assert get_task("ax").evaluate_with == "mnli" and get_task("ax").metrics == ("mcc",)
    assert get_task("rte").split_name("validation") == "dev"


# --- one fixture per format ----------------------------------------------------------------------

def test_cola_has_no_header_in_train_dev_but_test_has_one(tmp_path):
    write(tmp_path, "CoLA", "train.tsv", [tsv("gj04", 1, "", "The sailors rode the breeze."),
                                          tsv("gj04", 0, "*", "The more does Bill smoke.")])
    write(tmp_path, "CoLA", "test.tsv", [tsv("index", "sentence"), tsv(0, "Bill whistled past the house.")])
    train = read_split("cola", tmp_path, "train")
    assert [(e.text_a, e.label) for e in train.examples] == [("The sailors rode the breeze.", "1"),
                                                              ("The more does Bill smoke.", "0")]
    test = read_split("CoLA", tmp_path, "test").examples
    assert test == [Example("test-0", "Bill whistled past the house.", None, None, {"index": "0"})]


def test_sst2_header_and_crlf_endings(tmp_path):
    write(tmp_path, "SST-2", "dev.tsv", [tsv("sentence", "label"), tsv("a charming journey . ", 1),
                                         tsv("dull .", 0)], eol="\r\n")
    dev = read_split("sst-2", tmp_path, "dev").examples
    assert [(e.text_a, e.label) for e in dev] == [("a charming journey . ", "1"), ("dull .", "0")]


def test_mrpc_bom_and_unbalanced_quotes_keep_every_row(tmp_path):
    head = tsv("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    # a field that opens with an unbalanced quote: a CSV quote rule would read on into the next rows
    rows = [tsv(1, 702876, 702977, '"The foodservice pie business does not fit', "He said the pie business."),
            tsv(0, 2108705, 2108831, "Yucaipa owned Dominick's.", 'Yucaipa bought "Dominick\'s.'),
            tsv(1, 1330381, 1330521, "The third row.", "The third row too.")]
    path = write(tmp_path, "MRPC", "train.tsv", [head, *rows], bom=True)
    # the fixture is a real trap: a CSV reader with the default quote rule merges rows
    assert len(list(csv.reader(io.StringIO(path.read_text("utf-8-sig")), delimiter="\t"))) < 4
    train = read_split("mrpc", tmp_path, "train").examples
    assert len(train) == 3
    assert train[0].text_a == '"The foodservice pie business does not fit' and train[0].label == "1"
    assert train[1].text_b == 'Yucaipa bought "Dominick\'s.' and train[1].label == "0"
    assert train[2].text_a == "The third row."
    write(tmp_path, "MRPC", "test.tsv", [tsv("index", "#1 ID", "#2 ID", "#1 String", "#2 String"),
                                         tsv(7, 1, 2, "A.", "B.")], bom=True)
    assert read_split("mrpc", tmp_path, "test").examples == [Example("test-7", "A.", "B.", None, {"index": "7"})]


def test_stsb_scores_are_floats_and_test_has_no_score(tmp_path):
    head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    write(tmp_path, "STS-B", "train.tsv", ["\t".join(head + ["score"]),
                                           tsv(0, "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                               "A plane is taking off.", "An air plane is taking off.", "5.000"),
                                           tsv(1, "main-news", "x", "2012", "0002", "none", "none", "a", "b", "0.8")])
    write(tmp_path, "STS-B", "test.tsv", ["\t".join(head), tsv(0, "g", "f", "y", "o", "s", "s", "c", "d")])
    train = read_split("stsb", tmp_path, "train").examples
    assert [e.label for e in train] == [5.0, 0.8] and train[0].text_b == "An air plane is taking off."
    assert read_split("stsb", tmp_path, "test").examples[0].label is None
    write(tmp_path, "STS-B", "dev.tsv", ["\t".join(head + ["score"]), tsv(0, *"gfyoss", "a", "b", "5.5")])
    with pytest.raises(WellreadError, match=r"dev.tsv:2 \(field score\): score 5.5 is outside 0-5"):
        read_split("stsb", tmp_path, "dev")


def test_qqp_malformed_training_rows_are_skipped_and_counted(tmp_path):
    head = tsv("id", "qid1", "qid2", "question1", "question2", "is_duplicate")
    write(tmp_path, "QQP", "train.tsv", [
        head,
        tsv(0, 1, 2, "How do I learn Python?", "What is the best way to learn Python?", 1),
        tsv(1, 3, 4, "Why is the sky", ""),  # a question broken by a newline: 5 columns ...
        tsv(" blue?", "Why is the sky blue?", 0),  # ... and the rest on the next line
        tsv(2, 5, 6, "Is this a question?", "Is that one?", ""),  # empty label
        tsv(3, 7, 8, "Q?", "R?", "yes"),  # not 0/1
        tsv(4, 9, 10, "Last?", "Final?", 0),
    ])
    train = read_split("qqp", tmp_path, "train")
    assert [e.guid for e in train.examples] == ["train-0", "train-4"]
    assert [n for n, _ in train.skipped] == [3, 4, 5, 6]
    assert "wrong column count (5, expected 6)" in train.skipped[0][1]
    assert "label '' is not one of 0/1" in train.skipped[2][1]
    # dev is not forgiven: a malformed row there is an error with its line
    write(tmp_path, "QQP", "dev.tsv", [head, tsv(0, 1, 2, "a", "b", 1), tsv(1, 3, 4, "c")])
    with pytest.raises(WellreadError, match=r"QQP/dev.tsv:3 \(field columns\): expected 6 tab-separated columns, found 4"):
        read_split("qqp", tmp_path, "dev")
    write(tmp_path, "QQP", "train.tsv", [head, tsv(0, 1, 2, "a", "b", 7), tsv(1, 1, 2, "a")])
    with pytest.raises(WellreadError, match=r"the train split of qqp has no examples \(2 rows skipped\)"):
        read_split("qqp", tmp_path, "train")
    write(tmp_path, "QQP", "test.tsv", [tsv("id", "question1", "question2"), tsv(0, "x?", "y?")])
    assert read_split("qqp", tmp_path, "test").examples[0].meta == {"index": "0"}


MNLI_BASE = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]


def mnli_row(i: int, a: str, b: str, *labels: str) -> str:
    return tsv(i, 100 + i, f"{100 + i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b, *labels)


def test_mnli_gold_label_is_the_last_column_and_mapped_by_name(tmp_path):
    write(tmp_path, "MNLI", "train.tsv", ["\t".join(MNLI_BASE + ["label1", "gold_label"]),
                                          mnli_row(0, "P0", "H0", "neutral", "neutral"),
                                          mnli_row(1, "P1", "H1", "contradiction", "contradiction")])
    dev_head = "\t".join(MNLI_BASE + [f"label{i}" for i in range(1, 6)] + ["gold_label"])
    # label1..label5 disagree with gold on purpose: only the last column is the gold label
    write(tmp_path, "MNLI", "dev_matched.tsv", [dev_head,
                                                mnli_row(0, "P", "H", "neutral", "entailment", "entailment",
                                                         "neutral", "neutral", "entailment")])
    write(tmp_path, "MNLI", "dev_mismatched.tsv", [dev_head,
                                                   mnli_row(5, "Q", "K", "entailment", "contradiction",
                                                            "contradiction", "entailment", "entailment",
                                                            "contradiction")])
    write(tmp_path, "MNLI", "test_matched.tsv", ["\t".join(MNLI_BASE), mnli_row(9, "T", "U")])
    train = read_split("mnli", tmp_path, "train").examples
    assert [(e.text_a, e.text_b, e.label) for e in train] == [("P0", "H0", "neutral"), ("P1", "H1", "contradiction")]
    assert read_split("mnli", tmp_path, "dev_matched").examples[0].label == "entailment"
    assert read_split("mnli", tmp_path, "validation_mismatched").examples[0].label == "contradiction"
    test = read_split("mnli", tmp_path / "MNLI", "test_matched").examples  # the task folder itself
    assert test == [Example("test_matched-9", "T", "U", None, {"index": "9"})]
    assert set(split_files("mnli", tmp_path)) == {"train", "dev_matched", "dev_mismatched", "test_matched"}


@pytest.mark.parametrize("task,folder,a,b,labels", [
    ("qnli", "QNLI", "question", "sentence", ("entailment", "not_entailment")),
    ("rte", "RTE", "sentence1", "sentence2", ("entailment", "not_entailment")),
    ("wnli", "WNLI", "sentence1", "sentence2", ("0", "1")),
])
def test_index_pair_label_tasks(tmp_path, task, folder, a, b, labels):
    write(tmp_path, folder, "train.tsv", [tsv("index", a, b, "label"), tsv(0, "x", "y", labels[1]),
                                          tsv(1, "z", "w", labels[0])])
    write(tmp_path, folder, "test.tsv", [tsv("index", a, b), tsv(0, "t", "u")])
    train = read_split(task, tmp_path, "train").examples
    assert [(e.text_a, e.text_b, e.label) for e in train] == [("x", "y", labels[1]), ("z", "w", labels[0])]
    assert read_split(task, tmp_path, "test").examples == [Example("test-0", "t", "u", None, {"index": "0"})]


def test_ax_diagnostic_and_diagnostic_full(tmp_path):
    write(tmp_path, "diagnostic", "diagnostic.tsv", [tsv("index", "sentence1", "sentence2"),
                                                     tsv(0, "The cat sat.", "The cat did not sit.")])
    write(tmp_path, "diagnostic", "diagnostic-full.tsv", [
        tsv("Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge", "Domain",
            "Premise", "Hypothesis", "Label"),
        tsv("", "", "Negation", "", "Artificial", "The cat sat.", "The cat did not sit.", "contradiction"),
        tsv("Lexical entailment", "", "", "", "News", "A dog barked.", "An animal barked.", "entailment"),
    ])
    test = read_split("ax", tmp_path, "test").examples
    assert test == [Example("test-0", "The cat sat.", "The cat did not sit.", None, {"index": "0"})]
    full = read_split("AX", tmp_path, "full").examples
    assert [e.label for e in full] == ["contradiction", "entailment"]
    assert full[0].meta["logic"] == "Negation" and full[1].meta["lexical semantics"] == "Lexical entailment"
    # the file as GLUE's download names it, AX.tsv, is read as the same split
    (tmp_path / "diagnostic" / "diagnostic.tsv").rename(tmp_path / "diagnostic" / "AX.tsv")
    assert read_split("ax", tmp_path / "diagnostic", "test").examples == test


HANS_HEAD = tsv("gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template")


def hans_row(gold: str, a: str, b: str, pair: str, heuristic: str, subcase: str) -> str:
    return tsv(gold, "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b, pair, heuristic, subcase, "temp1")


def test_hans_evaluation_set(tmp_path):
    write(tmp_path, "HANS", "heuristics_evaluation_set.txt", [
        HANS_HEAD,
        hans_row("non-entailment", "The doctor saw the lawyer .", "The lawyer saw the doctor .", "ex0",
                 "lexical_overlap", "ln_subject/object_swap"),
        hans_row("entailment", "The actor slept .", "The actor slept .", "ex1", "subsequence", "se_PP_on_obj"),
    ])
    exs = read_split("hans", tmp_path, "evaluation").examples
    assert exs[0].guid == "evaluation-ex0" and exs[0].label == "non-entailment"
    assert exs[0].meta == {"heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap", "template": "temp1"}
    assert read_split("hans", tmp_path / "HANS", "test").examples[1].label == "entailment"
    # kept beside MNLI's files, HANS is still found (its file name is its own)
    (tmp_path / "HANS").rename(tmp_path / "MNLI")
    assert len(read_split("hans", tmp_path / "MNLI", "evaluation").examples) == 2


# --- bad input: one clear error naming file, line and field ----------------------------------------

def test_wrong_column_count_names_file_and_line(tmp_path):
    write(tmp_path, "RTE", "dev.tsv", [tsv("index", "sentence1", "sentence2", "label"), tsv(0, "a", "b", "entailment"),
                                       tsv(1, "a", "b")])
    with pytest.raises(WellreadError) as e:
        read_split("rte", tmp_path, "dev")
    assert e.value.file.endswith("RTE/dev.tsv") and e.value.line == 3 and e.value.field == "columns"


def test_label_outside_the_set_is_an_error_in_train_too(tmp_path):
    write(tmp_path, "CoLA", "train.tsv", [tsv("gj04", 1, "", "Fine."), tsv("gj04", 2, "", "Odd label.")])
    with pytest.raises(WellreadError, match=r"train.tsv:2 \(field column 2\): label '2' is not one of 0, 1"):
        read_split("cola", tmp_path, "train")
    write(tmp_path, "MNLI", "train.tsv", ["\t".join(MNLI_BASE + ["label1", "gold_label"]),
                                          mnli_row(0, "P", "H", "neutral", "-")])
    with pytest.raises(WellreadError, match=r"\(field gold_label\): label '-'"):
        read_split("mnli", tmp_path, "train")


def test_empty_split_and_missing_header_column(tmp_path):
    write(tmp_path, "SST-2", "train.tsv", [tsv("sentence", "label")])
    with pytest.raises(WellreadError, match="the train split of sst2 has no examples"):
        read_split("sst2", tmp_path, "train")
    write(tmp_path, "SST-2", "dev.tsv", [tsv("text", "label"), tsv("a", 1)])
    with pytest.raises(WellreadError, match=r"dev.tsv:1 \(field sentence\): header lacks column\(s\) sentence"):
        read_split("sst2", tmp_path, "dev")


def test_missing_task_folder_lists_what_was_found(tmp_path):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "SST-2").mkdir()
    with pytest.raises(WellreadError, match=r"no MRPC/ folder .* found: CoLA/, SST-2/"):
        read_split("mrpc", tmp_path, "train")
    write(tmp_path, "RTE", "train.tsv", [tsv("index", "sentence1", "sentence2", "label"), tsv(0, "a", "b", "entailment")])
    with pytest.raises(WellreadError, match=r"no dev.tsv for the dev split of rte; found: train.tsv"):
        read_split("rte", tmp_path, "dev")
    with pytest.raises(WellreadError, match="this is the folder of task rte, not cola"):
        read_split("cola", tmp_path / "RTE", "train")
    with pytest.raises(WellreadError, match="has no split 'dev_matched'"):
        read_split("rte", tmp_path, "dev_matched")
    with pytest.raises(WellreadError, match="no such data directory"):
        read_split("rte", tmp_path / "nowhere", "train")


# --- a local Hugging Face datasets copy -----------------------------------------------------------

def _hf_meta(names: list[str] | None) -> dict:
    label = {"names": names, "_type": "ClassLabel"} if names else {"dtype": "int64", "_type": "Value"}
    return {"features": {"premise": {"dtype": "string", "_type": "Value"},
                         "hypothesis": {"dtype": "string", "_type": "Value"}, "label": label,
                         "idx": {"dtype": "int32", "_type": "Value"}}}


def test_hf_parquet_labels_are_mapped_by_name(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"premise": ["p0", "p1", "p2"], "hypothesis": ["h0", "h1", "h2"],
                      "label": [0, 1, 2], "idx": [0, 1, 2]})
    # the hub's MNLI order (entailment=0, neutral=1, contradiction=2), carried in the schema metadata
    meta = {b"huggingface": json.dumps({"info": _hf_meta(["entailment", "neutral", "contradiction"])}).encode()}
    (tmp_path / "mnli").mkdir()
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "mnli" / "validation_matched-00000-of-00001.parquet")
    # a file whose metadata names the classes in another order is read by ITS names
    other = {b"huggingface": json.dumps({"info": _hf_meta(["neutral", "contradiction", "entailment"])}).encode()}
    pq.write_table(table.replace_schema_metadata(other), tmp_path / "mnli" / "train-00000-of-00001.parquet")
    # no metadata at all: the hub's known order
    pq.write_table(table, tmp_path / "mnli" / "validation_mismatched-00000-of-00001.parquet")
    pq.write_table(table.set_column(2, "label", pa.array([-1, -1, -1])), tmp_path / "mnli" / "test_matched-00000-of-00001.parquet")

    dev = read_split("mnli", tmp_path, "dev_matched")
    assert dev.source == "parquet"
    assert [(e.text_a, e.text_b, e.label) for e in dev.examples] == [
        ("p0", "h0", "entailment"), ("p1", "h1", "neutral"), ("p2", "h2", "contradiction")]
    assert [e.label for e in read_split("mnli", tmp_path, "train").examples] == ["neutral", "contradiction", "entailment"]
    assert [e.label for e in read_split("mnli", tmp_path / "mnli", "dev_mismatched").examples] == [
        "entailment", "neutral", "contradiction"]
    test = read_split("mnli", tmp_path, "test_matched").examples
    assert test[2] == Example("test_matched-2", "p2", "h2", None, {"index": "2"})
    assert set(split_files("mnli", tmp_path)) == {"train", "dev_matched", "dev_mismatched", "test_matched"}


def test_hf_save_to_disk_arrow_with_dataset_info(tmp_path):
    pa = pytest.importorskip("pyarrow")
    split_dir = tmp_path / "cola" / "validation"
    split_dir.mkdir(parents=True)
    table = pa.table({"sentence": ["Good.", "Bad bad."], "label": [1, 0], "idx": [0, 1]})
    with pa.OSFile(str(split_dir / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    info = {"features": {"sentence": {"dtype": "string", "_type": "Value"},
                         "label": {"names": ["unacceptable", "acceptable"], "_type": "ClassLabel"},
                         "idx": {"dtype": "int32", "_type": "Value"}}}
    (split_dir / "dataset_info.json").write_text(json.dumps(info))
    dev = read_split("cola", tmp_path, "dev")
    assert dev.source == "arrow"
    assert [(e.text_a, e.label) for e in dev.examples] == [("Good.", "1"), ("Bad bad.", "0")]


def test_hf_label_outside_the_names_is_an_error(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "rte").mkdir()
    pq.write_table(pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [0, 7], "idx": [0, 1]}),
                   tmp_path / "rte" / "train-00000-of-00001.parquet")
    with pytest.raises(WellreadError, match=r"train-00000-of-00001.parquet:2 \(field label\): label id 7"):
        read_split("rte", tmp_path, "train")


# --- the real GLUE files (row counts as ../shared/data/README.md gives them) -----------------------

@needs_glue
@pytest.mark.parametrize("task,counts", [
    ("cola", {"train": 8551, "dev": 1043, "in_domain_dev": 527, "out_of_domain_dev": 516}),
    ("sst2", {"train": 67349, "dev": 872}),
    ("stsb", {"train": 5749, "dev": 1500, "test": 1379}),
    ("rte", {"train": 2490, "dev": 277, "test": 3000}),
])
def test_real_glue_row_counts(task, counts):
    assert set(split_files(task, GLUE)) == set(counts)
    for split, n in counts.items():
        data = read_split(task, GLUE, split)
        assert len(data.examples) == n and data.skipped == [], (task, split)
        spec = get_task(task)
        if split in spec.test_splits:
            assert all(e.label is None and e.meta["index"] for e in data.examples)
        elif spec.is_regression:
            assert all(0.0 <= e.label <= 5.0 for e in data.examples)
        else:
            assert {e.label for e in data.examples} == set(spec.labels)
        assert all(e.text_a for e in data.examples)


@needs_glue
def test_real_rte_labels_and_first_rows():
    train = read_split("rte", GLUE / "RTE", "train").examples
    assert train[0].text_b == "Weapons of Mass Destruction Found in Iraq." and train[0].label == "not_entailment"
    labels = [e.label for e in train]
    assert (labels.count("entailment"), labels.count("not_entailment")) == (1249, 1241)


@needs_glue
def test_cli_data_stats_json_on_real_rte():
    from wellread.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["data", "stats", "--task", "rte", "--data-dir", str(GLUE), "--json"])
    assert rc == 0
    stats = json.loads(out.getvalue())
    assert [(s["split"], s["examples"], s["skipped"]) for s in stats] == [("train", 2490, 0), ("dev", 277, 0),
                                                                          ("test", 3000, 0)]
    assert stats[0]["labels"] == {"entailment": 1249, "not_entailment": 1241} and stats[2]["labels"] == {}
    ln = stats[1]["length"]
    assert ln["unit"] == "whitespace words" and ln["p50"] <= ln["p90"] <= ln["p95"] <= ln["p99"] <= ln["max"]


@needs_glue
def test_data_stats_counts_wordpiece_tokens_as_the_model_sees_them():
    from wellread.data.stats import split_stats
    from wellread.tokenization import encode, load_tokenizer

    vocab = DATA / "vocab" / "bert-base-uncased-vocab.txt"
    stats = {s["split"]: s for s in split_stats("rte", GLUE, vocab=vocab, max_length=128)}
    dev = read_split("rte", GLUE, "dev").examples
    tok = load_tokenizer(vocab)
    lengths = sorted(len(encode(tok, e.text_a, e.text_b).ids) for e in dev)
    assert stats["dev"]["length"]["max"] == lengths[-1]
    assert stats["dev"]["length"]["over_128"] == sum(n > 128 for n in lengths)
    assert stats["dev"]["length"]["unit"].startswith("wordpiece")


def test_cli_data_stats_error_is_one_line_and_nonzero(tmp_path, capsys):
    from wellread.cli import main

    (tmp_path / "CoLA").mkdir()
    assert main(["data", "stats", "--task", "qqp", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no QQP/ folder" in err and "found: CoLA/" in err
