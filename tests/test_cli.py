"""The `wellread` command: tables, model directories, and one clear line for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from wellread import cli


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wellread", *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_models_prints_the_24_miniatures(capsys):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 24
    tiny = next(line for line in lines if line.startswith("L-2_H-128 "))
    assert tiny.split() == ["L-2_H-128", "tiny", "2", "128", "2", "512", "4,385,920", "prajjwal1/bert-tiny"]
    assert any(line.split()[-1] == "google/bert_uncased_L-12_H-768_A-12" and " base " in line for line in lines)


def test_models_json_has_every_field(capsys):
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 24
    base = next(r for r in rows if r["alias"] == "base")
    assert base | {"parameters": 109_482_240, "heads": 12, "intermediate": 3072, "layers": 12, "hidden": 768} == base
    assert {r["hub_id"] for r in rows if r["alias"] in ("tiny", "mini", "small", "medium")} == {
        "prajjwal1/bert-tiny", "prajjwal1/bert-mini", "prajjwal1/bert-small", "prajjwal1/bert-medium"}


def test_init_and_encode_from_the_command_line(std_vocab, tmp_path, capsys):
    out = tmp_path / "tiny"
    assert cli.main(["init", "tiny", "--vocab", str(std_vocab), "--out", str(out), "--seed", "5"]) == 0
    assert "L-2_H-128 (tiny)" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file() and (out / "special_tokens_map.json").is_file()
    assert cli.main(["vocab", "encode", "--vocab", str(out), "--json", "Well-read students", "--pair", "learn"]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert enc["tokens"] == ["[CLS]", "well", "-", "read", "students", "[SEP]", "learn", "[SEP]"]
    assert enc["ids"] == [101, 2092, 1011, 3191, 2493, 102, 4553, 102]
    assert enc["type_ids"] == [0] * 6 + [1] * 2


def test_settings_come_from_yaml_and_flags_override_them(std_vocab, tmp_path):
    cfg = tmp_path / "init.yaml"
    cfg.write_text(f"model: mini\nvocab: {std_vocab}\nout: {tmp_path / 'from-yaml'}\nseed: 1\n")
    assert cli.main(["init", "tiny", "--config", str(cfg)]) == 0  # the positional flag wins over YAML's mini
    assert json.loads((tmp_path / "from-yaml" / "config.json").read_text())["hidden_size"] == 128


def test_vocab_train_from_the_command_line(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog\n" * 50 + "a well read student learns better\n" * 50)
    assert cli.main(["vocab", "train", str(text), "--size", "60", "--out", str(tmp_path / "v"), "--quiet"]) == 0
    assert "vocabulary of" in capsys.readouterr().out
    assert (tmp_path / "v" / "vocab.txt").read_text().splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.mark.parametrize("cmd", [["models"], ["init"], ["vocab", "train"], ["vocab", "encode"], ["recipe"], ["report"]])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*cmd, "-h"])
    assert e.value.code == 0
    assert "usage: wellread" in capsys.readouterr().out


def _one_error_line(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("wellread ") and ": error: " in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_gives_one_clear_line_and_writes_nothing(std_vocab, tmp_path):
    out = tmp_path / "out"
    _one_error_line(run("init", "tinny", "--vocab", str(std_vocab), "--out", str(out)), "unknown model name", "did you mean tiny")
    bad_vocab = tmp_path / "vocab.txt"
    bad_vocab.write_text("[PAD]\n[UNK]\nhello\n")
    _one_error_line(run("init", "tiny", "--vocab", str(bad_vocab), "--out", str(out)), str(bad_vocab), "[CLS], [SEP], [MASK]")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _one_error_line(run("vocab", "train", str(empty), "--out", str(out)), str(empty), "no text")
    _one_error_line(run("vocab", "train", str(tmp_path / "missing.txt"), "--out", str(out)), "missing.txt", "no such file")
    assert not out.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    _one_error_line(run("init", "tiny", "--vocab", str(std_vocab), "--out", str(busy)), "busy", "other content")
    assert [p.name for p in busy.iterdir()] == ["thesis.tex"]


def test_init_defaults_to_the_shipped_standard_vocab(std_vocab, tmp_path):
    from wellread.tokenization import STANDARD_VOCAB

    assert STANDARD_VOCAB.read_bytes() == std_vocab.read_bytes()
    assert cli.main(["init", "mini", "--out", str(tmp_path / "mini")]) == 0
    assert (tmp_path / "mini" / "vocab.txt").read_text().splitlines() == std_vocab.read_text().splitlines()


def test_help_a_misspelt_model_and_scoring_squad_predictions_do_not_import_torch(tmp_path):
    """`wellread --help`, a refused model name and `evaluate --task squad --predictions` answer without importing
    torch or transformers (seconds each)."""
    qa = {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 0}]}
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Denver Broncos won.", "qas": [qa]}]}]}
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(squad))
    (tmp_path / "p.json").write_text(json.dumps({"q1": "the Denver Broncos"}))
    code = ("import sys, contextlib, io\n"
            "from wellread import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        cli.main(['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
            "    rc = cli.main(['init', 'tinny', '--out', sys.argv[1] + '/never-written'])\n"
            "assert rc == 1 and 'did you mean tiny' in err.getvalue(), err.getvalue()\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    rc = cli.main(['evaluate', '--task', 'squad', '--data-dir', sys.argv[1], '--json',\n"
            "                   '--predictions', sys.argv[1] + '/p.json'])\n"
            "assert rc == 0, rc\n"
            "print(out.getvalue())\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    *scores, imported = p.stdout.strip().splitlines()
    assert imported == "[]"
    r = json.loads("\n".join(scores))
    assert r["exact_match"] == 100.0 and r["f1"] == 100.0  # "the" is an article: removed before comparing
    assert not (tmp_path / "never-written").exists()


def test_a_command_line_builds_only_its_own_flags_and_every_command_still_parses():
    for name in cli.COMMANDS:
        assert cli._requested([*name.split(), "--x"]) == name
    assert cli._requested(["--version"]) == "" and cli._requested(["bogus"]) == ""
    args = ["finetune", "--model", "tiny", "--task", "rte", "--out", "o"]
    for parser in (cli.build_parser(), cli.build_parser(only="finetune")):
        ns = parser.parse_args(args)
        assert ns._command == "finetune" and ns.model == "tiny"
    with pytest.raises(SystemExit):  # init's flags were not built
        cli.build_parser(only="finetune").parse_args(["init", "tiny", "--out", "o"])
    assert cli.build_parser().parse_args(["init", "tiny", "--out", "o"])._command == "init"
