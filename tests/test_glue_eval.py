"""`wellread evaluate` and `wellread predict-glue`: scores equal an independent transformers run, labels
are matched by name, HANS per heuristic × gold label, leaderboard files in GLUE's exact format.

The models are small random classifiers (2 layers, H=32, the standard vocabulary) whose head is rescaled
on the data so that every class is predicted: what is tested is the evaluation, not the model.
"""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import data_path
from wellread import cli
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.eval import glue

MNLI_CANONICAL = ("contradiction", "entailment", "neutral")
PERMUTED = {0: "neutral", 1: "contradiction", 2: "entailment"}  # not GLUE's order: every id means another label
MNLI_BASE = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
HANS_HEAD = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
             "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"]
HANS_CASES = [("lexical_overlap", "ln_subject/object_swap", "le_relative_clause"),
              ("subsequence", "sn_NP/S", "se_PP_on_obj"),
              ("constituent", "cn_embedded_under_if", "ce_adverb")]


def tsv(*cells) -> str:
    return "\t".join(str(c) for c in cells)


def rows(path: Path) -> tuple[list[str], list[list[str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [ln.split("\t") for ln in lines[1:]]


def cola_rows(path: Path) -> list[list[str]]:
    """CoLA's train/dev files have no header line."""
    return [ln.split("\t") for ln in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# --- data: real RTE, STS-B, CoLA; MNLI, AX and HANS written to their specs from real RTE sentences -----

@pytest.fixture(scope="module")
def glue_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    for folder in ("RTE", "STS-B", "CoLA"):
        (root / folder).symlink_to(data_path("glue", folder), target_is_directory=True)
    _, rte_dev = rows(data_path("glue", "RTE", "dev.tsv"))
    _, rte_test = rows(data_path("glue", "RTE", "test.tsv"))
    rng = random.Random(0)
    pairs = [(r[1], r[2]) for r in rte_dev] + [(r[1], r[2]) for r in rte_test[:200]]

    def mnli_row(i, a, b, *labels):
        return tsv(i, 100 + i, f"{100 + i}e", "fiction", "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b, *labels)

    mnli = root / "MNLI"
    mnli.mkdir()
    dev_head = tsv(*MNLI_BASE, *[f"label{i}" for i in range(1, 6)], "gold_label")
    for name, chunk in (("dev_matched", pairs[:60]), ("dev_mismatched", pairs[60:120])):
        lines = [dev_head] + [mnli_row(i, a, b, *[rng.choice(MNLI_CANONICAL) for _ in range(6)])
                              for i, (a, b) in enumerate(chunk)]
        (mnli / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # test indices out of order and with gaps: the submission must copy them, not count rows
    for name, chunk in (("test_matched", pairs[120:170]), ("test_mismatched", pairs[170:230])):
        lines = [tsv(*MNLI_BASE)] + [mnli_row(1000 - 7 * i, a, b) for i, (a, b) in enumerate(chunk)]
        (mnli / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ax = root / "diagnostic"
    ax.mkdir()
    (ax / "diagnostic.tsv").write_text("\n".join([tsv("index", "sentence1", "sentence2")] + [
        tsv(3 * i + 5, a, b) for i, (a, b) in enumerate(pairs[230:300])]) + "\n", encoding="utf-8")
    (ax / "diagnostic-full.tsv").write_text("\n".join(
        [tsv("Lexical Semantics", "Predicate-Argument Structure", "Logic", "Knowledge", "Domain",
             "Premise", "Hypothesis", "Label")]
        + [tsv("", "", rng.choice(["Negation", ""]), "", "News", a, b, rng.choice(MNLI_CANONICAL))
           for a, b in pairs[300:360]]) + "\n", encoding="utf-8")
    hans = root / "HANS"
    hans.mkdir()
    lines = [tsv(*HANS_HEAD)]
    for i, (a, b) in enumerate(pairs[360:420]):
        heuristic, non_sub, ent_sub = HANS_CASES[i % 3]
        gold = ("entailment", "non-entailment")[(i // 3) % 2]
        sub = ent_sub if gold == "entailment" else non_sub
        lines.append(tsv(gold, "( a )", "( b )", "(ROOT a)", "(ROOT b)", a, b, f"ex{i}", heuristic, sub, "temp1"))
    (hans / "heuristics_evaluation_set.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# --- models ---------------------------------------------------------------------------------------

def hf_logits(model_dir: Path, pairs: list[tuple[str, str | None]]) -> tuple[np.ndarray, dict[int, str]]:
    """Logits from transformers' own classes and tokenizer, 64 examples a batch, padded."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    for i in range(0, len(pairs), 64):
        a = [p[0] for p in pairs[i:i + 64]]
        b = None if pairs[i][1] is None else [p[1] for p in pairs[i:i + 64]]
        enc = tok(a, b, truncation=True, max_length=128, padding=True, return_tensors="pt")
        with torch.no_grad():
            out.append(model(**enc).logits)
    return torch.cat(out).numpy(), model.config.id2label


def make_model(out: Path, task: str, pairs, *, id2label: dict[int, str] | None = None, seed: int = 0) -> Path:
    """A random classifier for ``task`` (head rescaled on ``pairs`` so its outputs spread), saved in the HF layout."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from wellread import tokenization
    from wellread.modeling import zoo
    from wellread.modeling.models import save_model
    from wellread.train.finetune import set_task_head

    tok = tokenization.load_tokenizer(tokenization.STANDARD_VOCAB)
    config = zoo.get("tiny").bert_config(vocab_size=tok.get_vocab_size(), pad_token_id=0, hidden_size=32,
                                         num_attention_heads=2, intermediate_size=64)
    set_task_head(config, get_task(task))
    if id2label is not None:
        config.id2label = dict(id2label)
        config.label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    save_model(model, tok, out)
    hf_tok = AutoTokenizer.from_pretrained(out)
    enc = hf_tok([p[0] for p in pairs], None if pairs[0][1] is None else [p[1] for p in pairs],
                 truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        z = model.classifier(model.bert(**enc).pooler_output)
        mean, std = z.mean(0), z.std(0)
        # regression: spread 0-5 with some outputs outside it (the submission clips); classes: centred
        target_mean, target_std = (2.5, 2.0) if config.num_labels == 1 else (0.0, 1.0)
        model.classifier.weight.mul_((target_std / std)[:, None])
        model.classifier.bias.copy_(target_mean + (model.classifier.bias - mean) * target_std / std)
    return save_model(model, tok, out)


def split_pairs(path: Path, a: str, b: str | None) -> list[tuple[str, str | None]]:
    head, body = rows(path)
    ia, ib = head.index(a), None if b is None else head.index(b)
    return [(r[ia], None if ib is None else r[ib]) for r in body]


@pytest.fixture(scope="module")
def models(tmp_path_factory, glue_root) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    rte = split_pairs(glue_root / "RTE" / "dev.tsv", "sentence1", "sentence2")
    mnli = split_pairs(glue_root / "MNLI" / "dev_matched.tsv", "sentence1", "sentence2")
    return {
        "rte": make_model(d / "rte", "rte", rte),
        "stsb": make_model(d / "stsb", "stsb", split_pairs(glue_root / "STS-B" / "dev.tsv", "sentence1", "sentence2")),
        "cola": make_model(d / "cola", "cola", [(r[3], None) for r in cola_rows(glue_root / "CoLA" / "dev.tsv")[:300]]),
        "mnli": make_model(d / "mnli", "mnli", mnli, id2label=PERMUTED),
    }


# --- evaluate -------------------------------------------------------------------------------------

def test_rte_accuracy_equals_transformers_on_the_real_dev_set(models, glue_root, tmp_path, capsys):
    from sklearn.metrics import accuracy_score

    head, body = rows(glue_root / "RTE" / "dev.tsv")
    logits, id2label = hf_logits(models["rte"], [(r[1], r[2]) for r in body])
    predicted = [id2label[int(i)] for i in logits.argmax(1)]
    assert len(set(predicted)) == 2, "the model predicts both classes"
    expected = accuracy_score([r[3] for r in body], predicted)
    out = tmp_path / "rte.json"
    assert cli.main(["evaluate", "--model", str(models["rte"]), "--task", "rte", "--data-dir", str(glue_root),
                     "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["splits"]["dev"]["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert printed["splits"]["dev"]["n"] == len(body) == 277


def test_report_and_run_directory(models, glue_root, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(models["rte"], target_is_directory=True)
    assert cli.main(["evaluate", "--model", str(run), "--task", "RTE", "--data-dir", str(glue_root / "RTE")]) == 0
    line = capsys.readouterr().out.strip()
    expected = glue.evaluate_model(models["rte"], "rte", glue_root)["splits"]["dev"]["accuracy"]
    assert line == f"rte dev: accuracy {expected:.4f} (277 examples)"


def test_cola_mcc_and_stsb_correlations_equal_sklearn_and_scipy(models, glue_root):
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import matthews_corrcoef

    cola = cola_rows(glue_root / "CoLA" / "dev.tsv")
    assert len(cola) == 1043
    logits, id2label = hf_logits(models["cola"], [(r[3], None) for r in cola])
    predicted = [id2label[int(i)] for i in logits.argmax(1)]
    r = glue.evaluate_model(models["cola"], "cola", glue_root)
    assert r["splits"]["dev"]["mcc"] == pytest.approx(matthews_corrcoef([x[1] for x in cola], predicted), abs=1e-9)
    assert r["splits"]["dev"]["mcc"] != 0.0, "a constant predictor would make this check weak"
    assert glue.evaluate_model(models["cola"], "cola", glue_root, "in_domain_dev")["splits"].keys() == {"in_domain_dev"}

    head, sts = rows(glue_root / "STS-B" / "dev.tsv")
    logits, _ = hf_logits(models["stsb"], [(x[7], x[8]) for x in sts])
    gold = [float(x[9]) for x in sts]
    m = glue.evaluate_model(models["stsb"], "stsb", glue_root)["splits"]["dev"]
    assert m["pearson"] == pytest.approx(pearsonr(logits[:, 0], gold)[0], abs=1e-5)
    assert m["spearman"] == pytest.approx(spearmanr(logits[:, 0], gold)[0], abs=1e-5)
    assert m["n"] == 1500


def by_name_and_by_position(model_dir: Path, pairs) -> tuple[list[str], list[str]]:
    logits, id2label = hf_logits(model_dir, pairs)
    ids = logits.argmax(1)
    return [id2label[int(i)] for i in ids], [MNLI_CANONICAL[int(i)] for i in ids]


def test_mnli_labels_are_matched_by_name_on_both_dev_sets(models, glue_root):
    r = glue.evaluate_model(models["mnli"], "mnli", glue_root)
    assert list(r["splits"]) == ["dev_matched", "dev_mismatched"]
    for split in ("dev_matched", "dev_mismatched"):
        _, body = rows(glue_root / "MNLI" / f"{split}.tsv")
        by_name, by_position = by_name_and_by_position(models["mnli"], [(x[8], x[9]) for x in body])
        assert len(set(by_name)) == 3
        gold = [x[-1] for x in body]
        right = np.mean([p == g for p, g in zip(by_name, gold)])
        wrong = np.mean([p == g for p, g in zip(by_position, gold)])
        assert right != wrong, "the fixture must tell name from position apart"
        assert r["splits"][split]["accuracy"] == pytest.approx(right, abs=1e-12)


def test_hans_six_numbers_and_subcases_from_an_mnli_model_in_another_label_order(models, glue_root, capsys):
    head, body = rows(glue_root / "HANS" / "heuristics_evaluation_set.txt")
    by_name, _ = by_name_and_by_position(models["mnli"], [(x[5], x[6]) for x in body])
    two_way = ["entailment" if p == "entailment" else "non-entailment" for p in by_name]
    groups: dict[tuple[str, str], list[bool]] = {}
    subcases: dict[str, list[bool]] = {}
    for x, p in zip(body, two_way):
        groups.setdefault((x[8], x[0]), []).append(p == x[0])
        subcases.setdefault(x[9], []).append(p == x[0])
    r = glue.evaluate_model(models["mnli"], "hans", glue_root)["splits"]["evaluation"]
    assert {(h, g): a for h, accs in r["heuristics"].items() for g, a in accs.items()} == pytest.approx(
        {k: np.mean(v) for k, v in groups.items()})
    assert len(groups) == 6 and len(r["subcases"]) == 6
    assert r["subcases"] == pytest.approx({k: np.mean(v) for k, v in subcases.items()})
    assert r["accuracy"] == r["overall"] == pytest.approx(np.mean([p == x[0] for x, p in zip(body, two_way)]))
    assert r["n"] == 60
    assert cli.main(["evaluate", "--model", str(models["mnli"]), "--task", "hans", "--data-dir", str(glue_root)]) == 0
    report = capsys.readouterr().out
    assert "lexical_overlap" in report and "ce_adverb" in report and "entailment" in report


def test_ax_diagnostic_full_is_scored_with_r3(models, glue_root):
    from sklearn.metrics import matthews_corrcoef

    head, body = rows(glue_root / "diagnostic" / "diagnostic-full.tsv")
    by_name, _ = by_name_and_by_position(models["mnli"], [(x[5], x[6]) for x in body])
    r = glue.evaluate_model(models["mnli"], "ax", glue_root)
    assert list(r["splits"]) == ["full"]
    assert r["splits"]["full"]["mcc"] == pytest.approx(matthews_corrcoef([x[7] for x in body], by_name), abs=1e-9)


# --- predict-glue ---------------------------------------------------------------------------------

def test_predict_glue_writes_the_leaderboard_files_and_a_zip(models, glue_root, tmp_path, capsys):
    out = tmp_path / "submit"
    assert cli.main(["predict-glue", "--models", f"rte={models['rte']},stsb={models['stsb']}",
                     f"mnli={models['mnli']}", f"cola={models['cola']}",
                     "--data-dir", str(glue_root), "--out", str(out)]) == 0
    report = capsys.readouterr().out
    written = ["STS-B.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "RTE.tsv", "AX.tsv"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, "submission.zip", "predictions.json"])
    assert f"skipped CoLA.tsv: no test.tsv in {glue_root / 'CoLA'}" in report  # a model, but no test file
    for name in ("SST-2.tsv", "MRPC.tsv", "QQP.tsv", "QNLI.tsv", "WNLI.tsv"):
        assert f"skipped {name}: no model for" in report
    manifest = json.loads((out / "predictions.json").read_text())
    assert set(manifest["files"]) == set(written) and "CoLA.tsv" in manifest["skipped"]
    assert manifest["files"]["AX.tsv"]["model_task"] == "mnli" and f"AX.tsv (70 rows, mnli model {models['mnli']})" in report

    sources = {"RTE.tsv": (glue_root / "RTE" / "test.tsv", "sentence1", "sentence2", models["rte"]),
               "STS-B.tsv": (glue_root / "STS-B" / "test.tsv", "sentence1", "sentence2", models["stsb"]),
               "MNLI-m.tsv": (glue_root / "MNLI" / "test_matched.tsv", "sentence1", "sentence2", models["mnli"]),
               "MNLI-mm.tsv": (glue_root / "MNLI" / "test_mismatched.tsv", "sentence1", "sentence2", models["mnli"]),
               "AX.tsv": (glue_root / "diagnostic" / "diagnostic.tsv", "sentence1", "sentence2", models["mnli"])}
    for name, (test_file, a, b, model_dir) in sources.items():
        lines = (out / name).read_text(encoding="utf-8").split("\n")
        assert lines[0] == "index\tprediction" and lines[-1] == ""
        got = [ln.split("\t") for ln in lines[1:-1]]
        head, test_rows = rows(test_file)
        assert len(got) == len(test_rows), name
        assert [g[0] for g in got] == [r[head.index("index")] for r in test_rows], name
        logits, id2label = hf_logits(model_dir, split_pairs(test_file, a, b))
        if name == "STS-B.tsv":
            raw = logits[:, 0]
            assert (raw < 0).any() and (raw > 5).any(), "the fixture must exercise the clipping"
            values = np.array([float(g[1]) for g in got])
            assert values.min() == 0.0 and values.max() == 5.0
            # 3 decimals written; the head rescaled ×100s on near-constant pooled outputs adds ~1e-3 of float noise
            np.testing.assert_allclose(values, np.clip(raw, 0, 5), atol=2e-3)
        else:
            assert [g[1] for g in got] == [id2label[int(i)] for i in logits.argmax(1)], name
    assert {g.split("\t")[1] for g in (out / "RTE.tsv").read_text().splitlines()[1:]} == {"entailment", "not_entailment"}
    assert {g.split("\t")[1] for g in (out / "AX.tsv").read_text().splitlines()[1:]} == set(MNLI_CANONICAL)
    assert len((out / "RTE.tsv").read_text().splitlines()) == 3001

    with zipfile.ZipFile(out / "submission.zip") as z:
        assert sorted(z.namelist()) == sorted(written)
        for name in written:
            assert z.read(name) == (out / name).read_bytes()


def test_zero_one_tasks_are_written_as_0_and_1(models, tmp_path):
    # CoLA's real folder has no test.tsv; one in the official layout (index, sentence) is written here
    cola = tmp_path / "glue" / "CoLA"
    cola.mkdir(parents=True)
    dev = cola_rows(data_path("glue", "CoLA", "dev.tsv"))
    (cola / "test.tsv").write_text("\n".join([tsv("index", "sentence")] + [tsv(i, r[3]) for i, r in enumerate(dev)]) + "\n")
    r = glue.predict_glue({"cola": models["cola"]}, tmp_path / "glue", tmp_path / "out")
    assert list(r["files"]) == ["CoLA.tsv"]
    values = [ln.split("\t")[1] for ln in (tmp_path / "out" / "CoLA.tsv").read_text().splitlines()[1:]]
    logits, id2label = hf_logits(models["cola"], [(x[3], None) for x in dev])
    assert values == [id2label[int(i)] for i in logits.argmax(1)] and set(values) == {"0", "1"}


def test_models_from_a_finetune_run_and_from_a_best_json(models, tmp_path):
    run = tmp_path / "rte-run"
    run.mkdir()
    (run / "model").symlink_to(models["rte"], target_is_directory=True)
    (run / "results.json").write_text(json.dumps({"task": "rte", "dev": {"dev/accuracy": 0.5}}))
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "best.json").write_text(json.dumps({"best": {"STS-B": {"model": "stsb/model", "dev": 0.8},
                                                         "mnli": "/abs/mnli"}, "settings": {"lr": 1e-4}}))
    assert glue.parse_models([str(run), str(grid)]) == {"rte": run / "model", "stsb": grid / "stsb/model",
                                                        "mnli": Path("/abs/mnli")}
    assert glue.parse_models([str(grid), "mnli=elsewhere"])["mnli"] == Path("elsewhere")  # explicit wins
    with pytest.raises(WellreadError, match="two models given for rte"):
        glue.parse_models(["rte=a,rte=b"])
    with pytest.raises(WellreadError, match="not a directory, nor an entry TASK=MODEL_DIR"):
        glue.parse_models([str(tmp_path / "nowhere")])
    (grid / "best.json").write_text(json.dumps({"lr": 1e-4}))
    with pytest.raises(WellreadError, match="task -> model directory"):
        glue.parse_models([str(grid)])


# --- bad input: one line, exit 1 ------------------------------------------------------------------

def one_error_line(capsys, argv: list[str], *needles: str) -> str:
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"wellread {argv[0]}: error: ")
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


def test_a_model_for_another_label_set_is_refused(models, glue_root, tmp_path, capsys):
    ev = ["evaluate", "--data-dir", str(glue_root)]
    one_error_line(capsys, [*ev, "--model", str(models["rte"]), "--task", "cola"],
                   "config.json", "['entailment', 'not_entailment']", "cola has labels ['0', '1']")
    one_error_line(capsys, [*ev, "--model", str(models["stsb"]), "--task", "rte"], "one regression score")
    one_error_line(capsys, [*ev, "--model", str(models["cola"]), "--task", "stsb"], "needs one regression score")
    one_error_line(capsys, [*ev, "--model", str(models["rte"]), "--task", "hans"],
                   "hans (scored with a model trained for mnli)")
    out = tmp_path / "submit"
    one_error_line(capsys, ["predict-glue", "--models", f"mnli={models['rte']},rte={models['rte']}",
                            "--data-dir", str(glue_root), "--out", str(out)], "mnli has labels")
    one_error_line(capsys, ["predict-glue", "--models", f"hans={models['mnli']}", "--data-dir", str(glue_root),
                            "--out", str(out)], "hans has no leaderboard file")
    assert not out.exists()


def test_missing_folder_empty_split_and_bad_labels(models, glue_root, tmp_path, capsys):
    ev = ["evaluate", "--model", str(models["rte"]), "--task", "rte"]
    one_error_line(capsys, ["evaluate", "--model", str(models["cola"]), "--task", "sst2", "--data-dir",
                            str(glue_root)], "no SST-2/ folder", "found: ", "RTE/", "CoLA/")
    empty = tmp_path / "empty" / "RTE"
    empty.mkdir(parents=True)
    (empty / "dev.tsv").write_text(tsv("index", "sentence1", "sentence2", "label") + "\n")
    one_error_line(capsys, [*ev, "--data-dir", str(tmp_path / "empty")], "dev.tsv", "has no examples")
    bad = tmp_path / "bad" / "RTE"
    bad.mkdir(parents=True)
    (bad / "dev.tsv").write_text(tsv("index", "sentence1", "sentence2", "label") + "\n"
                                 + tsv(0, "A cat.", "An animal.", "entailment") + "\n"
                                 + tsv(1, "A cat.", "A dog.", "maybe") + "\n")
    one_error_line(capsys, [*ev, "--data-dir", str(tmp_path / "bad")], "dev.tsv:3", "label 'maybe'")
    one_error_line(capsys, [*ev, "--data-dir", str(glue_root), "--split", "test"], "no labels to score")
    one_error_line(capsys, [*ev, "--data-dir", str(glue_root), "--model", str(tmp_path)], "not a model directory")
    from safetensors.torch import load_file, save_file

    headless = tmp_path / "headless"
    headless.mkdir()
    for f in models["rte"].iterdir():
        (headless / f.name).write_bytes(f.read_bytes())
    weights = load_file(models["rte"] / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, headless / "model.safetensors")
    one_error_line(capsys, [*ev, "--data-dir", str(glue_root), "--model", str(headless)],
                   "model.safetensors", "weights missing for classifier.")
    # predict-glue: no test file anywhere -> nothing to submit, and the reason
    one_error_line(capsys, ["predict-glue", "--models", f"cola={models['cola']}", "--data-dir", str(glue_root),
                            "--out", str(tmp_path / "s")], "nothing to submit", "CoLA.tsv: no test.tsv")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_error_line(capsys, ["predict-glue", "--models", f"rte={models['rte']}", "--data-dir", str(glue_root),
                            "--out", str(busy)], "other content")
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def test_commands_have_help(capsys):
    for cmd in ("evaluate", "predict-glue"):
        with pytest.raises(SystemExit) as e:
            cli.main([cmd, "-h"])
        assert e.value.code == 0
        assert f"usage: wellread {cmd}" in capsys.readouterr().out


def test_evaluate_reproduces_what_finetune_recorded(small_model_dir, tmp_path):
    from wellread.train.finetune import FinetuneConfig, finetune

    root = tmp_path / "glue"
    (root / "RTE").mkdir(parents=True)
    for split, n in (("train", 64), ("dev", 96)):
        lines = data_path("glue", "RTE", f"{split}.tsv").read_text(encoding="utf-8").splitlines()
        (root / "RTE" / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    r = finetune(FinetuneConfig(model=str(small_model_dir), task="rte", data_dir=root, out=tmp_path / "run",
                                batch_size=16, lr=1e-3, max_steps=3, quiet=True))
    ours = glue.evaluate_model(tmp_path / "run", "rte", root)
    assert ours["splits"]["dev"]["accuracy"] == pytest.approx(r["dev"]["dev/accuracy"], abs=1e-12)
    assert glue.parse_models([str(tmp_path / "run")]) == {"rte": tmp_path / "run" / "model"}
