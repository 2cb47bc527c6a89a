"""Corpus shards: what goes in comes out, a killed run resumes to the same bytes, bad input is counted."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, data_path
from wellread.data.corpus import build_corpus, corpus_tokenizer
from wellread.data.shards import load_corpus
from wellread.data.text import split_sentences
from wellread.errors import WellreadError
from wellread.tokenization import load_tokenizer, vocab_hash

TEXT_FILES = ("gcide_definitions.txt.gz", "linux_doc_6.1_prose.txt.gz", "python3.11_doc_prose.txt.gz",
              "kjv_bible_verses.txt.gz")


def real_lines(per_file: int) -> list[str]:
    """The first lines of each real text file (one paragraph a line)."""
    lines = []
    for name in TEXT_FILES:
        with gzip.open(data_path("text", name), "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i == per_file:
                    break
                lines.append(line.rstrip("\n"))
    return lines


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """3,000 real paragraphs, gzipped (750 from each of the four files)."""
    path = tmp_path_factory.mktemp("text") / "sample.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(real_lines(750)) + "\n")
    return path


@pytest.fixture(scope="module")
def built(sample, std_vocab, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    build_corpus([sample], std_vocab, out, workers=1, shard_tokens=20_000, show_progress=False)
    return out


def files_of(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_shards_decode_to_what_the_tokenizer_makes_of_each_line(built, std_tokenizer):
    lines = real_lines(750)
    corpus = load_corpus(built, expect_vocab_hash=vocab_hash(std_tokenizer))
    assert corpus.num_documents == len(lines) == corpus.manifest.documents
    assert len(corpus.shards) > 1  # documents are spread over several shards
    for i in range(0, len(lines), 7):
        expect = std_tokenizer.encode(lines[i], add_special_tokens=False).ids
        assert corpus.document_ids(i).tolist() == expect
        assert np.concatenate(corpus.document(i)).tolist() == expect
    assert corpus.num_tokens == sum(len(s.ids) for s in corpus.shards)
    assert corpus.manifest.sentences > corpus.num_documents  # paragraphs were cut into sentences


def test_shard_layout_is_uint16_memmaps_with_boundaries(built):
    corpus = load_corpus(built)
    for shard in corpus.shards:
        assert shard.ids.dtype == np.uint16 and isinstance(shard.ids, np.memmap)
        s, d = shard.sentence_starts, shard.document_starts
        assert s[0] == 0 and s[-1] == len(shard.ids) and np.all(np.diff(s) > 0)  # no empty sentence
        assert d[0] == 0 and d[-1] == len(shard.ids)
        assert np.isin(d, s).all()  # a document starts where a sentence does
    m = json.loads((built / "manifest.json").read_text())
    assert m["complete"] and m["vocab"]["size"] == 30522 and m["vocab"]["special_ids"]["[MASK]"] == 103
    assert [s["name"] for s in m["shards"]] == [f"shard-{i:05d}" for i in range(len(m["shards"]))]
    assert m["totals"]["tokens"] == sum(s["tokens"] for s in m["shards"])
    assert m["files"][0]["doc_mode"] == "line"  # no blank lines: a paragraph a line


def test_text_that_spells_special_tokens_is_not_read_as_them(tmp_path, std_vocab):
    f = tmp_path / "t.txt"
    f.write_text("BERT uses [CLS], [SEP] and [MASK] tokens. [PAD] pads.\n", encoding="utf-8")
    corpus = load_corpus(build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False).path.parent)
    ids = corpus.document_ids(0)
    assert not np.isin(ids, [0, 101, 102, 103]).any()


def test_resume_after_sigkill_equals_an_uninterrupted_run(sample, std_vocab, tmp_path):
    args = [str(sample), "--vocab", str(std_vocab), "--workers", "1", "--shard-tokens", "2048", "--quiet"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run([sys.executable, "-m", "wellread", "corpus", *args, "--out", str(whole)], check=True,
                   cwd=REPO, capture_output=True, timeout=120)
    proc = subprocess.Popen([sys.executable, "-m", "wellread", "corpus", *args, "--out", str(killed)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    manifest = killed / "manifest.json"
    while time.time() < deadline:
        try:
            state = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            state = {"shards": []}
        if state["shards"]:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=30)
    state = json.loads(manifest.read_text())
    assert not state["complete"], "the run finished before it could be killed"
    n_done = len(state["shards"])
    again = subprocess.run([sys.executable, "-m", "wellread", "corpus", *args, "--out", str(killed)],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resuming after {n_done} finished shard(s)" in again.stderr
    assert files_of(killed) == files_of(whole)


def test_the_number_of_workers_does_not_change_a_byte(sample, std_vocab, built, tmp_path):
    out = tmp_path / "w2"
    build_corpus([sample], std_vocab, out, workers=2, shard_tokens=20_000, show_progress=False)
    assert files_of(out) == files_of(built)


def test_non_utf8_bytes_are_replaced_and_counted_not_a_crash(tmp_path, std_vocab):
    good = real_lines(3)
    raw = (good[0].encode() + b" \xff\xfe caf\xc3 ok\n"  # three bad bytes
           + good[1].encode() + " a real \ufffd stays uncounted\n".encode()
           + b"\x80" + good[2].encode() + b"\n")
    f = tmp_path / "bad.txt"
    f.write_bytes(raw)
    m = build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    assert m.totals["replaced_chars"] == 4
    assert m.documents == 3
    corpus = load_corpus(m.path.parent)
    tok = load_tokenizer(std_vocab)
    assert corpus.document_ids(2).tolist() == tok.encode(good[2], add_special_tokens=False).ids


def test_empty_lines_and_documents_are_skipped_and_counted(tmp_path, std_vocab):
    lines = real_lines(4)
    f = tmp_path / "lines.txt"
    f.write_text(f"{lines[0]}\n\n   \n\x00\x01\x02\n{lines[1]}\n", encoding="utf-8")
    m = build_corpus([f], std_vocab, tmp_path / "a", workers=1, doc_mode="line", show_progress=False)
    assert (m.documents, m.totals["blank_lines"], m.totals["empty_documents"]) == (2, 2, 1)

    g = tmp_path / "google.txt"  # Google's format: a sentence a line, blank lines between documents
    g.write_text(f"\n{lines[0]}\n{lines[1]}\n\n\n\n{lines[2]}\n\n{lines[3]}\n\n", encoding="utf-8")
    m = build_corpus([g], std_vocab, tmp_path / "b", workers=1, show_progress=False)
    assert m.data["files"][0]["doc_mode"] == "blank"
    corpus = load_corpus(m.path.parent)
    tok = load_tokenizer(std_vocab)
    assert corpus.num_documents == 3
    assert corpus.document_ids(0).tolist() == tok.encode(f"{lines[0]} {lines[1]}", add_special_tokens=False).ids


def test_jsonl_records_are_documents_and_bad_records_are_counted(tmp_path, std_vocab):
    lines = real_lines(3)
    f = tmp_path / "c.jsonl"
    records = [json.dumps({"text": lines[0], "id": 1}), "{not json", json.dumps({"title": "no text"}),
               json.dumps({"text": f"{lines[1]}\n\n{lines[2]}"}), "", json.dumps({"text": ""})]
    f.write_text("\n".join(records) + "\n", encoding="utf-8")
    m = build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    assert m.documents == 2 and m.totals["bad_json_lines"] == 2 and m.totals["blank_lines"] == 1
    assert m.data["bad_locations"][0].endswith("c.jsonl:2: not JSON (Expecting property name enclosed in double quotes)")
    tok = load_tokenizer(std_vocab)
    corpus = load_corpus(m.path.parent)
    assert corpus.document_ids(1).tolist() == tok.encode(f"{lines[1]} {lines[2]}", add_special_tokens=False).ids

    wrong = tmp_path / "w.jsonl"
    wrong.write_text(json.dumps({"body": lines[0]}) + "\n", encoding="utf-8")
    with pytest.raises(WellreadError, match="first record has no field 'text'.*body.*--text-field") as e:
        build_corpus([wrong], std_vocab, tmp_path / "w", workers=1, show_progress=False)
    assert e.value.line == 1


def test_a_line_over_1mb_is_split_at_whitespace_not_truncated(tmp_path, std_vocab):
    text = " ".join(real_lines(200))
    long_line = (text * (1_300_000 // len(text) + 1))[:1_300_000].rstrip()
    no_space = "x" + "é" * 600_000  # 1.2 MB, no whitespace, 1 MiB falls inside an é: cut before it
    f = tmp_path / "long.txt"
    f.write_text(f"short first line.\n{long_line}\n{no_space}\n", encoding="utf-8")
    m = build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    assert m.totals["long_lines_split"] == 2 and m.totals["replaced_chars"] == 0
    assert m.documents == 1 + 2 + 2  # each piece of a long line is a line (a document) of its own
    corpus = load_corpus(m.path.parent)
    tok = corpus_tokenizer(load_tokenizer(std_vocab))
    pieces = np.concatenate([corpus.document_ids(1), corpus.document_ids(2)])
    assert pieces.tolist() == tok.encode(long_line).ids  # nothing lost, nothing cut inside a word


def test_shards_from_another_vocab_are_refused(built, std_vocab, tiny_test_vocab, sample):
    other = vocab_hash(load_tokenizer(tiny_test_vocab))
    with pytest.raises(WellreadError, match=f"shards were made with vocab {vocab_hash(load_tokenizer(std_vocab))}, "
                                            f"the model's vocab is {other}") as e:
        load_corpus(built, expect_vocab_hash=other)
    assert e.value.file.endswith("manifest.json")
    with pytest.raises(WellreadError, match="made from other inputs: its vocab differ"):
        build_corpus([sample], tiny_test_vocab, built, workers=1, shard_tokens=20_000, show_progress=False)


def test_an_empty_corpus_is_an_error(tmp_path, std_vocab):
    f = tmp_path / "empty.txt"
    f.write_text("\n  \n\n", encoding="utf-8")
    with pytest.raises(WellreadError, match="no text"):
        build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_an_unfinished_directory_is_not_loaded(built, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in files_of(built).items():
        (copy / name).write_bytes(data)
    m = json.loads((copy / "manifest.json").read_text())
    m["complete"] = False
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(WellreadError, match="not finished.*resume"):
        load_corpus(copy)


def test_sentences_are_cut_at_ends_but_not_after_initials_or_abbreviations():
    assert split_sentences("Fred L. Drake, Jr., the creator. Mr. Smith agreed, e.g. Yes. Go!  Next? (Sure.)") == [
        "Fred L. Drake, Jr., the creator.", "Mr. Smith agreed, e.g. Yes.", "Go!", "Next?", "(Sure.)"]
    assert split_sentences("version 3.11 is out. it works") == ["version 3.11 is out. it works"]
    assert split_sentences("   ") == []


def test_the_manifest_records_inputs_so_a_changed_file_is_refused(tmp_path, std_vocab):
    f = tmp_path / "a.txt"
    f.write_text("One sentence here. Another one there.\n", encoding="utf-8")
    build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    f.write_text("Different text now. Really.\n", encoding="utf-8")
    os.utime(f, ns=(1, 1))
    with pytest.raises(WellreadError, match="input .*a.txt differs in"):
        build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False)
    m = build_corpus([f], std_vocab, tmp_path / "o", workers=1, overwrite=True, show_progress=False)
    assert m.documents == 1


def test_group_lines_makes_documents_of_n_consecutive_paragraphs_within_a_file(tmp_path, std_vocab, std_tokenizer):
    lines = real_lines(50)  # 4 files' first 50 paragraphs
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(lines[:110]) + "\n", encoding="utf-8")
    b.write_text("\n".join(lines[110:]) + "\n", encoding="utf-8")
    m = build_corpus([a, b], std_vocab, tmp_path / "o", workers=1, group_lines=16, show_progress=False)
    corpus = load_corpus(m.path.parent)
    # 110 lines -> 6 documents of 16 and one of 14; 90 lines -> 5 of 16 and one of 10: none crosses a file
    assert corpus.num_documents == 7 + 6
    assert m.data["settings"]["group_lines"] == 16
    starts = [0, *range(16, 110, 16), 110, *range(126, 200, 16)]
    for d, s in enumerate(starts):
        e = starts[d + 1] if d + 1 < len(starts) else 200
        expect = [t for line in lines[s:e] for t in std_tokenizer.encode(line, add_special_tokens=False).ids]
        assert corpus.document_ids(d).tolist() == expect
    with pytest.raises(WellreadError, match="at least 1"):
        build_corpus([a], std_vocab, tmp_path / "z", workers=1, group_lines=0, show_progress=False)


# --- a task's own text (`wellread corpus --task`) ---------------------------------------------------------

def _corpus_of_task(task: str, out: Path, std_vocab, monkeypatch, tmp_path) -> dict:
    from wellread import cli

    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "cache"))
    assert cli.main(["corpus", "--task", task, "--vocab", str(std_vocab), "--out", str(out), "--workers", "1",
                     "--quiet"]) == 0
    return json.loads((out / "manifest.json").read_text())


def test_corpus_of_a_task_holds_each_training_text_once_and_nothing_of_dev_or_test(std_vocab, tmp_path, monkeypatch):
    import csv

    sick = data_path("tasks", "sick", "SICK.txt")
    with sick.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    train = {r[k].strip() for r in rows if r["SemEval_set"] == "TRAIN" for k in ("sentence_A", "sentence_B")}
    held_out = {r[k].strip() for r in rows if r["SemEval_set"] != "TRAIN" for k in ("sentence_A", "sentence_B")}
    m = _corpus_of_task(str(REPO / "examples" / "tasks" / "sick-e.yaml"), tmp_path / "sick", std_vocab, monkeypatch,
                        tmp_path)
    assert m["totals"]["documents"] == len(train) == 4789  # a line each (line mode), each sentence once
    text = next((tmp_path / "cache" / "task-texts").glob("sick-e-*.txt")).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert set(lines) == train and len(lines) == len(train)
    assert not (held_out - train) & set(lines)  # no sentence only dev or test has
    emotion = data_path("tasks", "emotion", "train.txt").read_text(encoding="utf-8").splitlines()
    m = _corpus_of_task(str(REPO / "examples" / "tasks" / "emotion.yaml"), tmp_path / "emotion", std_vocab,
                        monkeypatch, tmp_path)
    assert m["totals"]["documents"] == len({line.rsplit(";", 1)[0] for line in emotion})


def test_corpus_of_a_task_file_puts_a_text_with_newlines_on_one_line_and_each_text_once(std_vocab, tmp_path,
                                                                                         monkeypatch):
    (tmp_path / "train.csv").write_text('body,label\n"first line\nsecond line",a\nplain text,b\nplain text,a\n'
                                        'another one,b\n', encoding="utf-8")
    (tmp_path / "dev.csv").write_text("body,label\nonly in dev,a\n", encoding="utf-8")
    (tmp_path / "t.yaml").write_text("name: t\nkind: classification\ntext: body\nlabel: label\ntrain: train.csv\n"
                                     "dev: dev.csv\n")
    m = _corpus_of_task(str(tmp_path / "t.yaml"), tmp_path / "shards", std_vocab, monkeypatch, tmp_path)
    text = next((tmp_path / "cache" / "task-texts").glob("t-*.txt")).read_text(encoding="utf-8")
    assert text.splitlines() == ["first line second line", "plain text", "another one"]
    assert m["totals"]["documents"] == 3


def test_corpus_without_files_or_task_is_one_line_and_writes_nothing(std_vocab, tmp_path, capsys):
    from wellread import cli

    assert cli.main(["corpus", "--vocab", str(std_vocab), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--task" in err[0] and "FILES" in err[0]
    assert not (tmp_path / "o").exists()
