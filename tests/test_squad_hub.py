"""``--source hub`` for SQuAD: the official train and dev files from the hub's parquet copies
(rajpurkar/squad, rajpurkar/squad_v2), through wellread's downloader and cache, served here by a
loopback HTTP server (tests.test_hub.Server)."""

from __future__ import annotations

import json
import threading

import pytest

from tests.test_hub import Server
from wellread.data import squad
from wellread.data.squad import QASettings
from wellread.errors import WellreadError
from wellread.train.finetune import FinetuneConfig
from wellread.train.qa import qa_data

CTX_A = "The Broncos won Super Bowl 50 in 2016, beating the Panthers."
CTX_B = "Denver is the capital of Colorado."
CTX_C = "The river runs north through the valley."


def _rows(v2: bool) -> dict[str, list[dict]]:
    """Rows as the hub has them: one per question, answers as {text: [...], answer_start: [...]}."""
    def row(i, title, context, question, answers):
        return {"id": f"q{i}", "title": title, "context": context, "question": question,
                "answers": {"text": [t for t, _ in answers], "answer_start": [s for _, s in answers]}}

    train = [row(1, "Super_Bowl", CTX_A, "Who won?", [("The Broncos", 0)]),
             row(2, "Super_Bowl", CTX_A, "When?", [("2016", 33)]),
             row(3, "Denver", CTX_B, "Capital of what?", [("Colorado", 25)]),
             row(4, "Super_Bowl", CTX_C, "Which way?", [("north", 15)])]  # a title seen before, a new paragraph
    dev = [row(5, "Denver", CTX_B, "What is Denver?", [("the capital of Colorado", 10), ("capital", 14)])]
    if v2:
        dev.append(row(6, "Denver", CTX_B, "Who founded it?", []))
    return {"train": train, "validation": dev}


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WELLREAD_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield srv
    srv.shutdown()
    srv.server_close()


def _publish(srv: Server, task: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    hub_id, config = squad.HUB_DATASETS[task]
    for split, rows in _rows(task == "squad_v2").items():
        parts = [rows[:2], rows[2:]] if len(rows) > 2 else [rows]  # the train split in two files
        urls = []
        for i, part in enumerate(parts):
            buf = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pylist(part), buf)
            path = f"/api/datasets/{hub_id}/parquet/{config}/{split}/{i}.parquet"
            srv.files[path] = buf.getvalue().to_pybytes()
            urls.append(srv.url + path)
        srv.files[f"/api/datasets/{hub_id}/parquet/{config}/{split}"] = json.dumps(urls).encode()


@pytest.mark.parametrize("task", ["squad", "squad_v2"])
def test_the_official_files_come_from_the_hub_in_the_squad_layout(hub_server, monkeypatch, task):
    _publish(hub_server, task)
    folder = squad.fetch_squad(task, quiet=True)
    train = squad.read_squad(folder / squad.TRAIN_FILES[task], task)
    dev = squad.read_squad(folder / squad.DEV_FILES[task], task)
    assert train.titles == ["Super_Bowl", "Denver"]
    assert [(e.id, e.article) for e in train.examples] == [("q1", 0), ("q2", 0), ("q4", 0), ("q3", 1)]
    raw = json.loads((folder / squad.TRAIN_FILES[task]).read_text())
    assert [len(a["paragraphs"]) for a in raw["data"]] == [2, 1]  # paragraphs grouped by context within a title
    assert [(e.id, e.question, e.answers) for e in train.examples][:2] == [
        ("q1", "Who won?", (("The Broncos", 0),)), ("q2", "When?", (("2016", 33),))]
    assert dev.examples[0].answers == (("the capital of Colorado", 10), ("capital", 14))
    assert not train.mismatched and not dev.mismatched
    if task == "squad_v2":
        assert dev.version == "2.0" and dev.examples[1].is_impossible and dev.examples[1].answers == ()
    # a run with --source hub trains on the official training file and evaluates on the whole dev file
    cfg = FinetuneConfig(model="tiny", random_init=True, task=task, out=folder / "run", qa=QASettings(source="hub"),
                         quiet=True)
    train_ex, test_ex, _, split = qa_data(cfg, task, quiet=True)
    assert split["kind"] == "official" and len(train_ex) == 4 and len(test_ex) == len(dev.examples)
    # the second time from the cache, without the network
    n = len(hub_server.requests)
    monkeypatch.setenv("WELLREAD_OFFLINE", "1")
    assert squad.fetch_squad(task, quiet=True) == folder and len(hub_server.requests) == n


def test_hub_rows_not_in_the_squad_layout_are_refused_in_one_line(hub_server, tmp_path, monkeypatch):
    with pytest.raises(WellreadError, match="row 0 has no 'answers' column"):
        squad.squad_json_from_rows([{"id": "a", "title": "t", "context": "c", "question": "q"}], v2=False,
                                   where=tmp_path)
    with pytest.raises(WellreadError, match="2 answer texts but 1 answer_start"):
        squad.squad_json_from_rows([{"id": "a", "title": "t", "context": "c", "question": "q",
                                     "answers": {"text": ["c", "c"], "answer_start": [0]}}], v2=False, where=tmp_path)
    monkeypatch.setenv("WELLREAD_OFFLINE", "1")
    with pytest.raises(WellreadError, match="offline mode is on"):  # nothing in the cache yet
        squad.fetch_squad("squad", quiet=True)
    with pytest.raises(WellreadError, match="source: should be 'local' or 'hub', got 'web'"):
        QASettings(source="web")
