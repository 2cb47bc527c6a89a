"""A user's own task (--task FILE.yaml): reading the real emotion and SICK files as they come, every file
format on fixtures, each bad input refused in one line, and every command run on such a task."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, data_path
from tests.test_hub import Server
from wellread import cli
from wellread.data.own_task import load_task_file
from wellread.data.stats import split_stats
from wellread.data.task_files import read_split
from wellread.data.tasks import get_task
from wellread.errors import WellreadError

EXAMPLES = REPO / "examples" / "tasks"
EMOTION = ("sadness", "joy", "love", "anger", "fear", "surprise")


def _yaml(tmp: Path, text: str, name: str = "task.yaml") -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


def _refused(path: Path, *says: str) -> str:
    with pytest.raises(WellreadError) as e:
        load_task_file(path)
    msg = str(e.value)
    assert "\n" not in msg
    for s in says:
        assert s in msg, msg
    return msg


# --- the real data, as it comes --------------------------------------------------------------------

def test_emotion_as_it_comes_matches_the_readme_counts():
    data_path("tasks", "emotion")
    spec = get_task(str(EXAMPLES / "emotion.yaml"))
    assert spec.name == "emotion" and spec.labels == EMOTION and spec.main_metric == "macro_f1"
    want = {"train": {"joy": 5362, "sadness": 4666, "anger": 2159, "fear": 1937, "love": 1304, "surprise": 572},
            "dev": {"joy": 704, "sadness": 550, "anger": 275, "fear": 212, "love": 178, "surprise": 81},
            "test": {"joy": 695, "sadness": 581, "anger": 275, "fear": 224, "love": 159, "surprise": 66}}
    for split, counts in want.items():
        data = read_split(spec, None, split)
        assert Counter(e.label for e in data.examples) == counts and not data.skipped
    first = read_split(spec, None, "train").examples[0]
    assert (first.text_a, first.text_b, first.label) == ("i didnt feel humiliated", None, "sadness")
    stats = {s["split"]: s for s in split_stats(str(EXAMPLES / "emotion.yaml"), None)}
    # README: 15,969 distinct train texts, 1,998 val; shared train-val 5, train-test 11, val-test 3
    assert (stats["train"]["duplicates"], stats["dev"]["duplicates"], stats["test"]["duplicates"]) == (31, 2, 0)
    assert stats["train"]["overlap"] == {"dev": 5, "test": 11} and stats["dev"]["overlap"]["test"] == 3
    assert stats["train"]["length"]["max"] == 66


@pytest.mark.parametrize("task", ["sick-e", "sick-r"])
def test_sick_one_crlf_file_split_by_its_semeval_set_column(task):
    data_path("tasks", "sick", "SICK.txt")
    spec = get_task(str(EXAMPLES / f"{task}.yaml"))
    sizes = {"train": 4439, "dev": 495, "test": 4906}
    labels = {"train": (2524, 1274, 641), "dev": (281, 143, 71), "test": (2790, 1404, 712)}
    for split, n in sizes.items():
        ex = read_split(spec, None, split).examples
        assert len(ex) == n
        assert all(e.text_b and not e.text_b.endswith("\r") for e in ex)
        if task == "sick-e":
            c = Counter(e.label for e in ex)
            assert (c["NEUTRAL"], c["ENTAILMENT"], c["CONTRADICTION"]) == labels[split]
        else:
            assert all(1.0 <= e.label <= 5.0 for e in ex)
    if task == "sick-r":
        assert spec.is_regression and spec.metrics == ("pearson", "spearman")
        assert len({e.label for s in sizes for e in read_split(spec, None, s).examples}) == 173
    else:
        assert spec.labels == ("CONTRADICTION", "ENTAILMENT", "NEUTRAL") and spec.main_metric == "accuracy"


# --- formats, on fixtures ------------------------------------------------------------------------

_CSV = ('\ufeffid,body,category\r\n'
        '1,"Refund, please: charged twice",billing\r\n'
        '2,"App crashes\r\nwhen I press ""save""",bug\r\n'
        '3,Card declined,billing\r\n'
        '4,Screen stays black,bug\r\n'
        '5,"Thanks, all good",other\r\n'
        '6,Just saying hi,other\r\n')


def _csv_task(tmp: Path, train: str, extra: str = "") -> Path:
    return _yaml(tmp, f"name: tickets\ntext: body\nlabel: category\ntrain: {train}\ndev: {train}\n{extra}")


def test_csv_quoting_embedded_newlines_crlf_and_bom(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode("utf-8"))
    spec = load_task_file(_csv_task(tmp_path, "t.csv"))
    ex = read_split(spec, None, "train").examples
    assert spec.labels == ("billing", "bug", "other") and len(ex) == 6
    assert ex[0].text_a == "Refund, please: charged twice"
    assert ex[1].text_a == 'App crashes\r\nwhen I press "save"' and ex[1].label == "bug"
    assert [e.meta["line"] for e in ex] == [2, 3, 5, 6, 7, 8]  # physical lines: row 2 spans two


def test_gz_jsonl_json_parquet_and_a_save_to_disk_directory_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"body": "refund,\u2028please", "category": "billing"}, {"body": "it crashes", "category": "bug"},
            {"body": "charged twice", "category": "billing"}, {"body": "black screen", "category": "bug"}]
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress(
        ("body,category\n" + "".join(f'"{r["body"]}",{r["category"]}\n' for r in rows)).encode()))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows) + "\n",
                                      encoding="utf-8")
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    # datasets' save_to_disk layout: an arrow stream file, dataset_info.json, a ClassLabel column of ids
    d = tmp_path / "saved"
    d.mkdir()
    table = pa.table({"body": [r["body"] for r in rows], "label": [0, 1, 0, 1]})
    with pa.OSFile(str(d / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (d / "dataset_info.json").write_text(json.dumps({"features": {
        "body": {"dtype": "string", "_type": "Value"},
        "label": {"names": ["billing", "bug"], "_type": "ClassLabel"}}}), encoding="utf-8")
    (d / "state.json").write_text("{}", encoding="utf-8")
    want = [(r["body"], r["category"]) for r in rows]
    for name in ("a.csv.gz", "a.jsonl", "a.json", "a.parquet"):
        spec = load_task_file(_yaml(tmp_path, f"name: t\ntext: body\nlabel: category\ntrain: {name}\n"
                                              f"dev: {name}\n", f"{name}.yaml"))
        assert [(e.text_a, e.label) for e in read_split(spec, None, "train").examples] == want, name
    spec = load_task_file(_yaml(tmp_path, "name: t\ntext: body\nlabel: label\ntrain: saved\ndev: saved\n", "s.yaml"))
    assert [(e.text_a, e.label) for e in read_split(spec, None, "train").examples] == want


def test_dev_fraction_is_stratified_seeded_and_recorded(tmp_path):
    lines = [f"text number {i};{'a' if i % 4 else 'b'}" for i in range(200)]
    (tmp_path / "all.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    body = ("name: t\nformat: txt\ndelimiter: ';'\nheader: false\ncolumns: [text, label]\ntext: text\nlabel: label\n"
            "train: all.txt\ndev_fraction: 0.1\nseed: 3\n")
    spec = load_task_file(_yaml(tmp_path, body))
    train, dev = read_split(spec, None, "train"), read_split(spec, None, "dev")
    assert Counter(e.label for e in dev.examples) == {"a": 15, "b": 5}  # 10% of 150 and of 50
    assert len(train.examples) == 180 and not {e.text_a for e in train.examples} & {e.text_a for e in dev.examples}
    again = load_task_file(_yaml(tmp_path, body, "again.yaml"))
    assert [e.text_a for e in read_split(again, None, "dev").examples] == [e.text_a for e in dev.examples]
    other = load_task_file(_yaml(tmp_path, body.replace("seed: 3", "seed: 4"), "other.yaml"))
    assert [e.text_a for e in read_split(other, None, "dev").examples] != [e.text_a for e in dev.examples]
    stats = {s["split"]: s for s in split_stats(str(tmp_path / "task.yaml"), None)}
    assert stats["dev"]["note"] == "0.1 of the training rows (stratified by label), seed 3"
    (tmp_path / "few.csv").write_text("body,category\na,x\nb,x\nc,y\nd,y\n", encoding="utf-8")
    _refused(_yaml(tmp_path, "name: t\ntext: body\nlabel: category\ntrain: few.csv\n", "few.yaml"),
             "few.csv (field dev_fraction)", "dev_fraction 0.1 of 4 training rows holds no example")


def test_wrong_field_count_is_refused_or_counted_and_skipped(tmp_path):
    (tmp_path / "t.csv").write_text("body,category\nok one,billing\ntoo,many,fields\nok two,billing\n"
                                    "fine,bug\nalso fine,bug\n\n", encoding="utf-8")
    _refused(_csv_task(tmp_path, "t.csv"), "t.csv:3", "3 fields, expected 2", "bad_rows: skip")
    spec = load_task_file(_csv_task(tmp_path, "t.csv", "bad_rows: skip\n"))
    data = read_split(spec, None, "train")
    assert len(data.examples) == 4 and data.skipped == [(3, "wrong number of fields (3, expected 2)"),
                                                         (7, "blank line")]


# --- bad input: one line naming file, line and field ------------------------------------------------

@pytest.mark.parametrize("extra, says", [
    ("colour: red\n", ["(field colour)", "unknown key"]),
    ("header: maybe\n", ["(field header)", "bool"]),
    ("kind: multiclass\n", ["(field kind)", "classification"]),
    ("dev_fraction: 0.2\n", ["(field dev_fraction)", "already"]),
    ("metric: pearson\n", ["(field metric)", "not a classification metric"]),
])
def test_task_file_unknown_key_or_wrong_type(tmp_path, extra, says):
    (tmp_path / "t.csv").write_bytes(_CSV.encode())
    _refused(_csv_task(tmp_path, "t.csv", extra), "task.yaml", *says)


def test_missing_column_names_those_that_exist(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode())
    _refused(_yaml(tmp_path, "name: t\ntext: text\nlabel: category\ntrain: t.csv\n"),
             "t.csv:1 (field text)", "no column 'text'", "the file has: id, body, category")


def test_dev_label_unseen_in_training(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode())
    (tmp_path / "d.csv").write_text("body,category\nhello,billing\nwhat,refund\n", encoding="utf-8")
    _refused(_yaml(tmp_path, "name: t\ntext: body\nlabel: category\ntrain: t.csv\ndev: d.csv\n"),
             "d.csv:3 (field category)", "label 'refund' never occurs in training")


def test_empty_file_and_a_split_without_examples(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode())
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    _refused(_yaml(tmp_path, "name: t\ntext: body\nlabel: category\ntrain: t.csv\ndev: empty.csv\n"),
             "empty.csv", "empty file")
    (tmp_path / "blank.csv").write_text("body,category\n\n,billing\n", encoding="utf-8")
    _refused(_yaml(tmp_path, "name: t\ntext: body\nlabel: category\ntrain: t.csv\ndev: blank.csv\n"),
             "blank.csv", "the dev split has no examples", "2 rows skipped")


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode() + "7,caf\xe9 au lait,other\n".encode("latin-1"))
    _refused(_csv_task(tmp_path, "t.csv"), "t.csv:9", "not UTF-8 text (byte 0xe9)")  # row 2 spans lines 3-4


def test_many_distinct_numbers_suggest_regression_and_a_non_numeric_score_is_refused(tmp_path):
    rows = "".join(f"sentence {i},{i / 10:.1f}\n" for i in range(40))
    (tmp_path / "s.csv").write_text("body,score\n" + rows + "sentence x,high\n", encoding="utf-8")
    task = "name: t\ntext: body\nlabel: score\ntrain: s.csv\ndev: s.csv\n"
    (tmp_path / "n.csv").write_text("body,score\n" + rows, encoding="utf-8")
    _refused(_yaml(tmp_path, task.replace("s.csv", "n.csv")), "n.csv (field score)", "40 distinct numbers",
             "kind: regression")
    _refused(_yaml(tmp_path, "kind: regression\n" + task), "s.csv:42 (field score)", "'high' is not a number")


def test_a_class_with_one_training_example(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode() + b"7,I love you,praise\n")
    _refused(_csv_task(tmp_path, "t.csv"), "t.csv:9 (field category)", "class 'praise' has 1 training example")


def test_transfer_file_that_does_not_match_the_task(tmp_path):
    from wellread.train.distill import read_transfer_file

    (tmp_path / "u.txt").write_text("one text\ntwo\ttexts\n", encoding="utf-8")
    with pytest.raises(WellreadError, match=r"u.txt:2 \(field text_b\): the task takes single sentences"):
        list(read_transfer_file(tmp_path / "u.txt", pairs=False))
    with pytest.raises(WellreadError, match=r"u.txt:1 \(field text_b\): the task takes sentence pairs"):
        list(read_transfer_file(tmp_path / "u.txt", pairs=True))
    (tmp_path / "u.jsonl").write_text('{"body": "x"}\n\n{"body": "y"}\n', encoding="utf-8")
    counts: dict = {}
    assert list(read_transfer_file(tmp_path / "u.jsonl", False, ("body", None), counts)) == [("x", None), ("y", None)]
    assert counts == {"read": 3, "skipped": 1, "inputs": 2}


def test_bad_task_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "t.csv").write_bytes(_CSV.encode() + b"7,I love you,praise\n")
    task = _csv_task(tmp_path, "t.csv")
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "wellread", "finetune", "--model", "tiny", "--random-init",
                           "--task", str(task), "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.count("\n") == 1 and "class 'praise' has 1 training example" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the commands on a task file -------------------------------------------------------------------

@pytest.fixture(scope="module")
def emotion_slice(tmp_path_factory):
    """The first rows of the real emotion files, described by a task file beside them."""
    d = tmp_path_factory.mktemp("emotion")
    for name, n in (("train.txt", 240), ("val.txt", 60), ("test.txt", 40)):
        lines = data_path("tasks", "emotion", name).read_text(encoding="utf-8").splitlines()[:n]
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return _yaml(d, (EXAMPLES / "emotion.yaml").read_text(encoding="utf-8")
                 .replace("../../../shared/data/tasks/emotion/", ""), "emotion.yaml")


@pytest.fixture(scope="module")
def emotion_run(emotion_slice, small_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    assert cli.main(["finetune", "--model", str(small_model_dir), "--task", str(emotion_slice), "--out", str(out),
                     "--max-steps", "4", "--batch-size", "16", "--threads", "1", "--quiet"]) == 0
    return out


def test_finetuned_model_carries_the_label_names(emotion_run):
    cfg = json.loads((emotion_run / "model" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): name for i, name in enumerate(EMOTION)}
    assert cfg["label2id"] == {name: i for i, name in enumerate(EMOTION)}
    results = json.loads((emotion_run / "results.json").read_text())
    assert results["task"] == "emotion" and set(results["dev"]) >= {"dev/macro_f1", "dev/accuracy"}
    import transformers

    pipe = transformers.pipeline("text-classification", model=str(emotion_run / "model"), device="cpu")
    assert pipe(["i feel so happy today", "i am scared"])[0]["label"] in EMOTION


def test_evaluate_gives_per_class_metrics_and_a_confusion_matrix(emotion_run, emotion_slice, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", str(emotion_run), "--task", str(emotion_slice), "--split", "test",
                     "--out", str(out), "--plots", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    m = json.loads(out.read_text())["splits"]["test"]
    assert m["n"] == 40 and set(m["per_class"]) == set(EMOTION)
    assert m["confusion"]["labels"] == list(EMOTION)
    matrix = m["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 40 and [sum(r) for r in matrix] == [m["per_class"][c]["support"] for c in EMOTION]
    assert sum(matrix[i][i] for i in range(6)) / 40 == pytest.approx(m["accuracy"])
    assert m["macro_f1"] == pytest.approx(sum(c["f1"] for c in m["per_class"].values()) / 6)
    assert (tmp_path / "plots" / "confusion-emotion-test.png").stat().st_size > 1000
    assert "precision" in text and "confusion" in text


def test_predict_export_and_serve_answer_with_names(emotion_run, tmp_path):
    (tmp_path / "in.txt").write_text("i feel so happy today\ni am scared of the dark\n", encoding="utf-8")
    assert cli.main(["predict", "--model", str(emotion_run), "--input", str(tmp_path / "in.txt"),
                     "--output", str(tmp_path / "p.jsonl"), "--quiet"]) == 0
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["label"] in EMOTION and set(p["probabilities"]) == set(EMOTION) for p in preds)
    assert cli.main(["export", "--model", str(emotion_run), "--out", str(tmp_path / "onnx")]) == 0
    onnx_cfg = json.loads((tmp_path / "onnx" / "config.json").read_text())
    assert list(onnx_cfg["id2label"].values()) == list(EMOTION)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "wellread", "serve", "--model", str(tmp_path / "onnx"),
                             "--backend", "onnx", "--port", str(port), "--log-level", "warning"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", method="POST",
                                             data=json.dumps({"inputs": ["i feel so happy today"]}).encode(),
                                             headers={"Content-Type": "application/json"})
                answer = json.loads(urllib.request.urlopen(req, timeout=5).read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
                time.sleep(0.3)
        assert answer["predictions"][0]["label"] in EMOTION
    finally:
        proc.kill()
        proc.communicate()


def test_regression_task_finetunes_and_evaluates_with_an_error_plot(tmp_path, small_model_dir):
    sick = data_path("tasks", "sick", "SICK.txt").read_bytes().split(b"\r\n")
    (tmp_path / "SICK.txt").write_bytes(b"\r\n".join(sick[:1] + [r for r in sick[1:] if r.endswith(b"TRAIN")][:120]
                                                     + [r for r in sick[1:] if r.endswith(b"TRIAL")][:30]
                                                     + [r for r in sick[1:] if r.endswith(b"TEST")][:10]))
    task = _yaml(tmp_path, (EXAMPLES / "sick-r.yaml").read_text().replace("../../../shared/data/tasks/sick/", ""))
    out = tmp_path / "run"
    assert cli.main(["finetune", "--model", str(small_model_dir), "--task", str(task), "--out", str(out),
                     "--max-steps", "3", "--batch-size", "16", "--threads", "1", "--quiet"]) == 0
    r = glue_eval(out / "model", task, tmp_path / "plots")
    assert r["splits"]["dev"]["n"] == 30 and "pearson" in r["splits"]["dev"] and "per_class" not in r["splits"]["dev"]
    assert (tmp_path / "plots" / "errors-sick-r-dev.png").is_file()


def glue_eval(model: Path, task: Path, plots: Path) -> dict:
    from wellread.eval.glue import evaluate_model

    return evaluate_model(model, str(task), None, plots=plots)


def test_grid_and_distill_on_a_task_file(emotion_slice, emotion_run, small_model_dir, tmp_path):
    grid = tmp_path / "grid"
    assert cli.main(["grid", "--model", str(small_model_dir), "--tasks", str(emotion_slice), "--out", str(grid),
                     "--batch-sizes", "16", "--learning-rates", "1e-4", "--max-steps", "2", "--workers", "1",
                     "--quiet"]) == 0
    results = json.loads((grid / "results.json").read_text())
    (key, t), = results["tasks"].items()
    assert get_task(key).name == "emotion" and t["finished"] == 1 and (grid / "emotion" / "bs16_lr0.0001").is_dir()
    table = (grid / "table.md").read_text()
    assert "### emotion: dev score" in table and "CoLA" not in table and (grid / "heatmap-emotion.png").is_file()
    (tmp_path / "u.jsonl").write_text("".join(json.dumps({"text": f"i feel thing {i}"}) + "\n" for i in range(50))
                                      + "\n", encoding="utf-8")
    out = tmp_path / "d"
    assert cli.main(["distill", "--task", str(emotion_slice), "--teacher", str(emotion_run), "--student",
                     str(small_model_dir), "--transfer", str(tmp_path / "u.jsonl"), "--no-transfer-from-task",
                     "--out", str(out), "--max-steps", "2", "--batch-size", "16", "--threads", "1", "--quiet"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["transfer_examples"] == 50
    assert r["transfer_files"][str(tmp_path / "u.jsonl")] == {"read": 51, "skipped": 1, "inputs": 50}


def test_a_finished_run_is_reused_only_while_the_data_is_the_same(tmp_path, small_model_dir, capsys):
    (tmp_path / "t.csv").write_bytes(_CSV.encode())
    task = _csv_task(tmp_path, "t.csv")
    args = ["finetune", "--model", str(small_model_dir), "--task", str(task), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--batch-size", "2", "--threads", "1", "--quiet"]
    assert cli.main(args) == 0
    assert cli.main(args) == 0 and "already finished" in capsys.readouterr().err
    (tmp_path / "t.csv").write_bytes(_CSV.replace("Card declined", "Card refused").encode())
    assert cli.main(args) == 1 and "settings.task_data" in capsys.readouterr().err


def test_a_hub_data_set_comes_through_the_downloader_and_its_cache(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "cache"))
        monkeypatch.delenv("WELLREAD_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # the hub's parquet files carry the ClassLabel names in the schema's huggingface metadata
        meta = {b"huggingface": json.dumps({"info": {"features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}).encode()}
        for split, texts in (("train", ["bad", "good", "awful", "great", "meh"]), ("validation", ["nice", "poor"])):
            labels = [i % 2 for i in range(len(texts))]
            table = pa.table({"text": texts, "label": labels}).replace_schema_metadata(meta)
            parts = [table.slice(0, 3), table.slice(3)] if split == "train" else [table]
            urls = []
            for i, part in enumerate(parts):
                buf = pa.BufferOutputStream()
                pq.write_table(part, buf)
                path = f"/api/datasets/me/reviews/parquet/default/{split}/{i}.parquet"
                srv.files[path] = buf.getvalue().to_pybytes()
                urls.append(srv.url + path)
            srv.files[f"/api/datasets/me/reviews/parquet/default/{split}"] = json.dumps(urls).encode()
        task = _yaml(tmp_path, "name: reviews\nhub: me/reviews\ntext: text\nlabel: label\n")
        spec = load_task_file(task)
        assert spec.labels == ("neg", "pos")
        assert [(e.text_a, e.label) for e in read_split(spec, None, "train").examples] == [
            ("bad", "neg"), ("good", "pos"), ("awful", "neg"), ("great", "pos"), ("meh", "neg")]
        assert [e.text_a for e in read_split(spec, None, "dev").examples] == ["nice", "poor"]
        n = len(srv.requests)
        monkeypatch.setenv("WELLREAD_OFFLINE", "1")  # the second time from the cache, without the network
        again = load_task_file(_yaml(tmp_path, "name: reviews\nhub: me/reviews\ntext: text\nlabel: label\n", "b.yaml"))
        assert len(read_split(again, None, "train").examples) == 5 and len(srv.requests) == n
        _refused(_yaml(tmp_path, "name: r\nhub: me/other\ntext: text\nlabel: label\n", "c.yaml"),
                 "offline mode is on")
    finally:
        srv.shutdown()
        srv.server_close()


def test_report_reads_a_task_file_run(emotion_run, tmp_path):
    assert json.loads((emotion_run / "results.json").read_text())["task_file"].endswith("emotion.yaml")
    assert cli.main(["report", str(emotion_run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "curves-emotion.png").is_file()
    assert "Fine-tuning and distillation: emotion" in (tmp_path / "rep" / "report.md").read_text()


def test_metrics_follow_positive_and_metric(tmp_path):
    from wellread.eval.metrics import compute_metrics

    (tmp_path / "b.csv").write_text("body,spam\na,yes\nb,no\nc,yes\nd,no\n", encoding="utf-8")
    base = "name: b\ntext: body\nlabel: spam\ntrain: b.csv\ndev: b.csv\n"
    spec = load_task_file(_yaml(tmp_path, base + "positive: 'yes'\n", "p.yaml"))
    assert (spec.metrics, spec.positive_label, spec.labels) == (("f1", "accuracy"), "yes", ("no", "yes"))
    m = compute_metrics(spec, ["yes", "yes", "no", "no"], ["yes", "no", "yes", "no"])
    assert m == {"f1": pytest.approx(0.5), "accuracy": pytest.approx(0.5)}
    spec = load_task_file(_yaml(tmp_path, base + "metric: mcc\nlabels: ['yes', 'no']\n", "m.yaml"))
    assert (spec.metrics, spec.report_metrics, spec.labels) == (("mcc",), ("accuracy", "macro_f1"), ("yes", "no"))
    assert set(compute_metrics(spec, ["yes"] * 4, ["yes", "no", "yes", "no"])) == {"mcc", "accuracy", "macro_f1"}


def test_one_file_for_every_split(tmp_path):
    (tmp_path / "all.tsv").write_text("s\tt\tset\nfoo\ta\tTR\nbar\ta\tTR\n\nbaz\tb\tTR\nqux\tb\tTR\nx\ta\tDV\n"
                                      "y\tb\tOLD\n", encoding="utf-8")
    task = _yaml(tmp_path, "name: t\nfile: all.tsv\nsplit_column: set\nsplits: {train: TR, dev: DV}\ntext: s\n"
                           "label: t\n")
    spec = load_task_file(task)
    train, dev = read_split(spec, None, "train"), read_split(spec, None, "dev")
    assert [e.text_a for e in train.examples] == ["foo", "bar", "baz", "qux"] and train.skipped == [(4, "blank line")]
    assert [(e.text_a, e.label) for e in dev.examples] == [("x", "a")] and dev.skipped == []
    stats = split_stats(str(task), None)
    assert stats[0]["unassigned"] == "1 rows in no split (set = OLD)"
    _refused(_yaml(tmp_path, "name: t\nfile: all.tsv\nsplit_column: set\nsplits: {train: TR, dev: TRIAL}\n"
                             "text: s\nlabel: t\n", "b.yaml"), "all.tsv (field splits)", "no row has set = 'TRIAL'")


def test_predict_a_task_files_unlabelled_test_split(emotion_slice, emotion_run, tmp_path, capsys):
    d = emotion_slice.parent
    (tmp_path / "u.jsonl").write_text('{"text": "i feel so happy today"}\n{"text": "i am scared"}\n', encoding="utf-8")
    task = _yaml(tmp_path, f"name: emotion\ndelimiter: ';'\nheader: false\ncolumns: [text, label]\ntext: text\n"
                           f"label: label\ntrain: {d / 'train.txt'}\ndev: {d / 'val.txt'}\ntest: u.jsonl\n"
                           f"labels: [{', '.join(EMOTION)}]\n")
    spec = load_task_file(task)
    assert spec.test_splits == ("test",) and read_split(spec, None, "test").examples[1].label is None
    assert cli.main(["evaluate", "--model", str(emotion_run), "--task", str(task), "--split", "test"]) == 1
    assert "no labels to score; use predict" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(emotion_run), "--input", str(task), "--output",
                     str(tmp_path / "p.jsonl"), "--quiet"]) == 0
    preds = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [1, 2] and all(p["label"] in EMOTION for p in preds)


def test_per_class_macro_f1_and_confusion_equal_sklearn():
    import numpy as np
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    from wellread.eval.metrics import confusion, macro_f1, per_class

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    refs = [labels[i] for i in rng.integers(0, 4, 300)]
    preds = [labels[i] for i in rng.integers(0, 3, 300)]  # "d" is never predicted: precision 0 by convention
    assert confusion(preds, refs, labels).tolist() == confusion_matrix(refs, preds, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=labels, zero_division=0)
    ours = per_class(preds, refs, labels)
    for i, name in enumerate(labels):
        assert ours[name] == {"precision": pytest.approx(p[i]), "recall": pytest.approx(r[i]),
                              "f1": pytest.approx(f[i]), "support": int(s[i])}
    assert macro_f1(preds, refs, labels) == pytest.approx(f1_score(refs, preds, labels=labels, average="macro",
                                                                   zero_division=0))
