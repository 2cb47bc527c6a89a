"""Every bad value and bad file gets one line naming the file, line and field (or the flag), a non-zero
exit, no traceback, and nothing is written or removed.

First the defects found by hand (one case each), then hypothesis throwing generated bad values (flags
and YAML alike) and bad files (TSV, JSONL, YAML, vocab.txt, model directories) at the commands, run
in-process through ``cli.main`` so that thousands of tries stay fast.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import data_path
from wellread import cli

TRIED = {"values": 0, "files": 0}  # bad inputs thrown at the commands (quoted in docs/reliability.md)
FAST = settings(max_examples=100, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a hash of its content (what "nothing touched" compares)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def run(args: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``wellread ARGS`` in this process; argparse's usage errors exit 2."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue()


def refused(root: Path, args: list[str], *says: str) -> str:
    """Run ``args``; assert one error line (saying ``says``), a non-zero exit, and ``root`` untouched."""
    before = snapshot(root)
    rc, err = run(args)
    assert rc not in (0, None), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 2 and lines and lines[0].startswith("usage:"):  # argparse: usage, then its one error line
        lines = [lines[-1]]
    assert len(lines) == 1, err
    for s in says:
        assert s in lines[0], lines[0]
    assert snapshot(root) == before, "nothing written or removed"
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A user's folder: a GLUE SST-2 slice, a vocab, a classifier, some files of their own."""
    from tests.conftest import write_glue_slice

    root = tmp_path_factory.mktemp("user")
    write_glue_slice(root / "glue", ("SST-2",), 24, 12)
    shutil.copy(data_path("vocab", "bert-base-uncased-vocab.txt"), root / "vocab.txt")
    (root / "notes.txt").write_text("my notes\n", encoding="utf-8")
    (root / "mydir").mkdir()
    (root / "mydir" / "thesis.tex").write_text("\\begin{document}", encoding="utf-8")
    _classifier(root / "clf", root / "vocab.txt")
    return root


def _classifier(out: Path, vocab: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from wellread.modeling.models import save_model
    from wellread.tokenization import load_tokenizer

    tok = load_tokenizer(vocab)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2, id2label={0: "0", 1: "1"},
                        label2id={"0": 0, "1": 1})
    torch.manual_seed(0)
    return save_model(BertForSequenceClassification(config).eval(), tok, out)


def finetune_args(root: Path, out: Path | None = None, *, steps: bool = True, threads: bool = True) -> list:
    return ["finetune", "--model", root / "clf", "--task", "sst2", "--data-dir", root / "glue",
            "--out", out or root / "run", "--batch-size", "4", "--max-length", "32", "--quiet",
            *(["--max-steps", "1"] if steps else []), *(["--threads", "1"] if threads else [])]


def without(args: list, name: str) -> list:
    """``args`` without the flag for setting ``name`` (and its value)."""
    flag = f"--{name.replace('_', '-')}"
    if flag not in args:
        return args
    i = args.index(flag)
    return args[:i] + args[i + (1 if flag == "--quiet" else 2):]


def test_the_baseline_command_succeeds(root, tmp_path):
    """So that each refusal below is the bad value's doing: the same command with good values runs."""
    rc, err = run(finetune_args(root, tmp_path / "ok"))
    assert rc == 0, err
    assert (tmp_path / "ok" / "results.json").is_file()
    (tmp_path / "cfg.yaml").write_text("lr: 1e-4\nquiet: yes\ntime_budget: 600\n", encoding="utf-8")
    rc, err = run([*finetune_args(root, tmp_path / "ok2"), "--config", tmp_path / "cfg.yaml"])
    assert rc == 0, err  # YAML 1.2's 1e-4 is a number; a duration may be a number of seconds


# --- the defects found by hand ----------------------------------------------------------------------


@pytest.mark.parametrize("flags, says", [
    (["--lr", "nan"], "--lr: should be a finite number"),
    (["--lr", "inf"], "--lr: should be a finite number"),
    (["--lr", "0"], "--lr: should be greater than 0"),
    (["--threads", "-1"], "--threads: should be greater than or equal to 1"),
    (["--max-steps", "0"], "--max-steps: should be greater than or equal to 1"),
    (["--max-steps", "-1"], "--max-steps"),
    (["--epochs", "-1"], "--epochs: should be greater than 0"),
    (["--checkpoint-every", "-5"], "--checkpoint-every"),
    (["--clip", "-1"], "--clip"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--warmup", "1.5"], "--warmup"),
    (["--max-steps", "2.5"], "--max-steps"),
])
def test_a_bad_flag_is_one_line_naming_it(root, flags, says):
    refused(root, [*finetune_args(root), *flags], says)
    assert not (root / "run").exists()


@pytest.mark.parametrize("yaml_text, says", [
    ("max_steps: 2.5\n", "(field max_steps): should be a valid integer, got 2.5"),
    ("new_head: 'no'\n", "(field new_head): should be a valid boolean, got 'no'"),
    ("lr: '1e-4'\n", "(field lr): should be a valid number, got '1e-4'"),
    ("task: 5\n", "(field task): should be a valid string, got 5"),
    ("seed: [1, 2]\n", "(field seed): should be a valid integer, got [1, 2]"),
    ("lr: .nan\n", "(field lr): should be a finite number"),
    ("time_budget: off\n", "(field time_budget): should be a valid string, got False (YAML reads an unquoted"),
    ("epochs: -1\n", "(field epochs): should be greater than 0"),
    ("data_dir: 7\n", "(field data_dir)"),
    ("lr_typo: 1\n", "unknown setting 'lr_typo'"),
    ("- a list\n", "a config file must be a mapping"),
    ("lr: [1\n", "invalid YAML"),
])
def test_a_bad_yaml_value_is_one_line_naming_file_and_field(root, tmp_path, yaml_text, says):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    args = without(finetune_args(root, tmp_path / "run"), yaml_text.split(":")[0])  # let the YAML say it
    line = refused(tmp_path, [*args, "--config", cfg], says)
    assert str(cfg) in line


def test_serve_threads_minus_one_is_refused_before_starting(root):
    refused(root, ["serve", "--model", root / "clf", "--threads", "-1"], "--threads")


def test_a_binary_vocab_is_one_line_with_its_line(root, tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"[PAD]\n[UNK]\n\xff\xfe\x00binary\n")
    refused(tmp_path, ["init", "tiny", "--vocab", tmp_path / "vocab.txt", "--out", tmp_path / "m"],
            "vocab.txt:3", "not UTF-8")


def test_a_non_utf8_byte_in_a_tsv_names_its_line(root, tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(root / "glue", glue)
    lines = (glue / "SST-2" / "train.tsv").read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b" ", b" caf\xe9 ", 1)
    (glue / "SST-2" / "train.tsv").write_bytes(b"\n".join(lines))
    args = finetune_args(root, tmp_path / "run")
    args[args.index("--data-dir") + 1] = glue
    refused(tmp_path, args, "train.tsv:6", "not UTF-8 text: byte 0xe9")


def test_a_corrupt_results_json_is_one_line(root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{broken", encoding="utf-8")
    (run_dir / "config.yaml").write_text("lr: 1\n", encoding="utf-8")
    refused(tmp_path, finetune_args(root, run_dir), "results.json:1", "invalid JSON")


def test_evaluate_out_a_directory_is_one_line_before_evaluating(root):
    refused(root, ["evaluate", "--model", root / "clf", "--task", "sst2", "--data-dir", root / "glue",
                   "--out", root / "mydir"], "mydir", "is a directory")


def test_a_jsonl_line_with_a_lone_surrogate_names_its_line(root, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n{"text": "bad \\ud800 one"}\n', encoding="utf-8")
    refused(tmp_path, ["predict", "--model", root / "clf", "--input", tmp_path / "in.jsonl",
                       "--output", tmp_path / "out.jsonl", "--quiet"], "in.jsonl:2", "(field text)", "surrogate")


def test_out_a_file_with_overwrite_is_one_line_and_the_file_stays(root):
    refused(root, [*finetune_args(root, root / "notes.txt"), "--overwrite"], "notes.txt", "not a directory")


def test_a_pickle_in_pytorch_model_bin_is_refused_in_one_line(root, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(root / "clf", model)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'echo pwned > " + str(tmp_path).encode()
                                              + b"/pwned'\ntR.")
    refused(tmp_path, finetune_args(root, tmp_path / "run")[:2] + [model] + finetune_args(root, tmp_path / "run")[3:],
            "pytorch_model.bin", "refused")
    assert not (tmp_path / "pwned").exists()


def test_a_missing_owner_slash_name_is_no_such_directory_not_a_download(root, tmp_path, monkeypatch):
    from wellread import hub

    def no_network(*a, **k):
        raise AssertionError("went to the hub for a local path")

    monkeypatch.setattr(hub, "fetch", no_network)
    args = finetune_args(root, tmp_path / "run")
    args[args.index("--model") + 1] = "modles/tiny"  # a typo of a local path
    line = refused(tmp_path, args, "modles/tiny", "no such model directory", "hub:modles/tiny")
    assert "hub:" in line
    from wellread.errors import WellreadError
    from wellread.recipe.sources import resolve_teacher

    with pytest.raises(WellreadError, match="no such model directory"):
        resolve_teacher("modles/teacher")  # the recipe's --teacher too (the hub only with --source hub)


# --- generated bad values ----------------------------------------------------------------------------

_BOUNDED = {  # TrainConfig's numeric settings: (flag, a value below its lower bound)
    "lr": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "batch_size": st.integers(max_value=0),
    "grad_accum": st.integers(max_value=0),
    "epochs": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "max_steps": st.integers(max_value=0),
    "warmup": st.floats(min_value=1.0, allow_nan=False, allow_infinity=False) | st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    "weight_decay": st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    "adam_eps": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "clip": st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
    "seed": st.integers(max_value=-1),
    "eval_every": st.integers(max_value=0),
    "checkpoint_every": st.integers(max_value=0),
    "checkpoint_minutes": st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
    "log_every": st.integers(max_value=0),
    "threads": st.integers(max_value=0),
}
_FLOATS = {"lr", "epochs", "warmup", "weight_decay", "adam_eps", "clip", "checkpoint_minutes"}
_WRONG_TYPE = st.text(max_size=8).filter(lambda s: s.strip() != "") | st.lists(st.integers(), max_size=3) \
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2) | st.booleans()


@st.composite
def bad_setting(draw) -> tuple[str, object]:
    name = draw(st.sampled_from(sorted(_BOUNDED)))
    kind = draw(st.sampled_from(["bound", "type", "nonfinite"] if name in _FLOATS else ["bound", "type", "fraction"]))
    if kind == "bound":
        return name, draw(_BOUNDED[name])
    if kind == "nonfinite":
        return name, draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    if kind == "fraction":
        return name, draw(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)))
    return name, draw(_WRONG_TYPE)


def _yaml_value(v) -> str:
    if isinstance(v, float) and v != v:
        return ".nan"
    if isinstance(v, float) and v in (float("inf"), float("-inf")):
        return ".inf" if v > 0 else "-.inf"
    return json.dumps(v)  # JSON is YAML: a string stays a string (quoted)


@FAST
@given(setting=bad_setting(), where=st.sampled_from(["flag", "yaml"]))
def test_generated_bad_settings_are_refused_in_one_line(root, tmp_path_factory, setting, where):
    name, value = setting
    tmp = tmp_path_factory.mktemp("bad")
    args = without(finetune_args(root, tmp / "run"), name)
    if where == "flag":
        assume(not isinstance(value, (list, dict, bool)))  # a flag is one string
        flag = f"--{name.replace('_', '-')}"
        text = repr(value) if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")) else str(value)
        line = refused(tmp, [*args, f"{flag}={text}"], flag)
    else:
        (tmp / "c.yaml").write_text(f"{name}: {_yaml_value(value)}\n", encoding="utf-8")
        line = refused(tmp, [*args, "--config", tmp / "c.yaml"], f"(field {name})")
        assert str(tmp / "c.yaml") in line
    TRIED["values"] += 1


# --- generated bad files -----------------------------------------------------------------------------

_BAD_BYTES = st.sampled_from([b"\xff", b"\xc3", b"\xe9t\xe9", b"\x80\x80", b"\xed\xa0\x80"])  # the last: a surrogate


@FAST
@given(data=st.data())
def test_generated_bad_tsv_rows_name_file_and_line(root, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("tsv")
    shutil.copytree(root / "glue", tmp / "glue")
    split = data.draw(st.sampled_from(["train", "dev"]))
    path = tmp / "glue" / "SST-2" / f"{split}.tsv"
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    k = data.draw(st.integers(2, len(lines)))  # 1-based, a data row
    kind = data.draw(st.sampled_from(["bytes", "columns", "label"]))
    sentence, label = lines[k - 1].split(b"\t")
    if kind == "bytes":
        at = data.draw(st.integers(0, len(sentence)))
        lines[k - 1] = sentence[:at] + data.draw(_BAD_BYTES) + sentence[at:] + b"\t" + label
    elif kind == "columns":
        extra = data.draw(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=5), min_size=1,
                                   max_size=3))
        lines[k - 1] = b"\t".join([sentence, label, *(e.encode() for e in extra)])
    else:
        bad = data.draw(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs")), min_size=1, max_size=4)
                        .filter(lambda t: t.strip() not in ("0", "1") and "\t" not in t))
        lines[k - 1] = sentence + b"\t" + bad.encode()
    path.write_bytes(b"\n".join(lines) + b"\n")
    args = finetune_args(root, tmp / "run")
    args[args.index("--data-dir") + 1] = tmp / "glue"
    refused(tmp, args, f"{split}.tsv:{k}")
    TRIED["files"] += 1


@FAST
@given(data=st.data())
def test_generated_bad_jsonl_lines_name_file_and_line(root, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("jsonl")
    good = data.draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1,
                              max_size=6))
    lines = [json.dumps({"text": t}).encode() for t in good]
    k = data.draw(st.integers(1, len(lines) + 1))
    kind = data.draw(st.sampled_from(["json", "field", "type", "surrogate", "bytes", "deep", "long"]))
    bad = {"json": b'{"text": "unclosed', "field": b'{"txt": "typo"}', "type": b'{"text": 5}',
           "surrogate": b'{"text": "a \\udc80 b"}', "bytes": b'{"text": "caf' + data.draw(_BAD_BYTES) + b'"}',
           "deep": b'{"text": "a", "id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
           "long": b'{"text": "a", "id": ' + b"7" * 5000 + b"}"}[kind]
    lines.insert(k - 1, bad)
    (tmp / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    refused(tmp, ["predict", "--model", root / "clf", "--input", tmp / "in.jsonl", "--output", tmp / "out.jsonl", "--quiet"],
            f"in.jsonl:{k}")
    TRIED["files"] += 1


@FAST
@given(data=st.data())
def test_generated_bad_yaml_files_name_the_file(root, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("yaml")
    kind = data.draw(st.sampled_from(["syntax", "not_a_mapping", "bytes", "unknown"]))
    if kind == "syntax":
        body = data.draw(st.sampled_from([b"lr: [1, 2\n", b"lr: {a: 1\n", b"a: b: c\n", b"lr: 'open\n", b"\t- x\n  y: 1\n"]))
    elif kind == "not_a_mapping":
        body = json.dumps(data.draw(st.lists(st.integers(), min_size=1) | st.integers() | st.text(min_size=1).filter(
            lambda t: t.strip() and ":" not in t and "#" not in t))).encode()
    elif kind == "bytes":
        body = b"lr: 0.1\nnote: caf" + data.draw(_BAD_BYTES) + b"\n"
    else:
        key = data.draw(st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True).filter(lambda k: k not in _ALL_FIELDS))
        body = f"{key}: 1\n".encode()
    (tmp / "c.yaml").write_bytes(body)
    refused(tmp, [*finetune_args(root, tmp / "run"), "--config", tmp / "c.yaml"], str(tmp / "c.yaml"))
    TRIED["files"] += 1


def _all_fields() -> set[str]:
    import dataclasses

    from wellread.train.finetune import FinetuneConfig

    return {f.name for f in dataclasses.fields(FinetuneConfig)}


_ALL_FIELDS = _all_fields()


@FAST
@given(data=st.data())
def test_generated_bad_vocab_files_name_file_and_line(root, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("vocab")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[f"w{i}" for i in range(20)]]
    kind = data.draw(st.sampled_from(["repeat", "bytes", "missing", "empty"]))
    if kind == "repeat":
        k = data.draw(st.integers(2, len(words)))
        words.insert(k - 1, words[data.draw(st.integers(0, k - 2))])
        body, says = "\n".join(words).encode(), f"vocab.txt:{k}"
    elif kind == "bytes":
        k = data.draw(st.integers(1, len(words)))
        lines = [w.encode() for w in words]
        lines[k - 1] += data.draw(_BAD_BYTES)
        body, says = b"\n".join(lines), f"vocab.txt:{k}"
    elif kind == "missing":
        gone = data.draw(st.sampled_from(words[:5]))
        body, says = "\n".join(w for w in words if w != gone).encode(), gone
    else:
        body, says = data.draw(st.sampled_from([b"", b"\n", b"\n\n"])), "empty"
    (tmp / "vocab.txt").write_bytes(body)
    refused(tmp, ["init", "tiny", "--vocab", tmp / "vocab.txt", "--out", tmp / "m"], "vocab.txt", says)
    TRIED["files"] += 1


@FAST
@given(data=st.data())
def test_generated_bad_model_directories_name_the_file(root, tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("modeldir")
    model = tmp / "model"
    shutil.copytree(root / "clf", model)
    kind = data.draw(st.sampled_from(["config_json", "config_type", "model_type", "weights", "no_weights",
                                      "vocab", "shape"]))
    if kind == "config_json":
        text = (model / "config.json").read_text(encoding="utf-8")
        (model / "config.json").write_text(text[:data.draw(st.integers(0, len(text) - 2))], encoding="utf-8")
        says = "config.json"
    elif kind == "config_type":
        (model / "config.json").write_text(json.dumps(data.draw(st.lists(st.integers()) | st.integers())), encoding="utf-8")
        says = "config.json"
    elif kind == "model_type":
        cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
        cfg["model_type"] = data.draw(st.sampled_from(["gpt2", "roberta", "t5"]))
        (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        says = "model_type"
    elif kind == "weights":
        raw = (model / "model.safetensors").read_bytes()
        cut = data.draw(st.integers(0, len(raw) - 1))
        (model / "model.safetensors").write_bytes(raw[:cut] + data.draw(st.binary(max_size=16)))
        says = "model.safetensors"
    elif kind == "no_weights":
        (model / "model.safetensors").unlink()
        says = "model"
    elif kind == "vocab":
        (model / "vocab.txt").write_bytes(b"[PAD]\n" + data.draw(_BAD_BYTES) + b"\n")
        says = "vocab.txt"
    else:
        cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
        cfg["hidden_size"], cfg["intermediate_size"] = 64, 128
        (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        says = "model.safetensors"
    command = data.draw(st.sampled_from(["finetune", "predict"]))
    if command == "finetune":
        args = finetune_args(root, tmp / "run")
        args[args.index("--model") + 1] = model
    else:
        (tmp / "in.txt").write_text("a fine film\n", encoding="utf-8")
        args = ["predict", "--model", model, "--input", tmp / "in.txt", "--output", tmp / "out.jsonl", "--quiet"]
    refused(tmp, args, says)
    TRIED["files"] += 1


def test_report_counts():
    print(f"\nbad inputs tried: {TRIED['values']} generated settings, {TRIED['files']} generated files")


# --- every setting of every command ------------------------------------------------------------------


def _every_setting() -> list[tuple[str, type, str]]:
    """(command, config class, setting) for every setting of every command, groups' settings included."""
    import dataclasses

    from wellread.config import _groups

    def settings(cls):
        groups = _groups(cls)
        for f in dataclasses.fields(cls):
            yield from settings(groups[f.name]) if f.name in groups else [(cls, f.name)]

    return [(name, owner, field) for name, cmd in sorted(cli.COMMANDS.items())
            for owner, field in settings(cmd.config_class)]


def _wrong_value(tp) -> st.SearchStrategy:
    """Values that are not of type ``tp`` (nor convertible by a strict reading)."""
    import typing
    from pathlib import Path

    from wellread.config import _unwrap

    inner, is_list = _unwrap(tp)
    if len([a for a in typing.get_args(tp) if a is not type(None) and typing.get_origin(tp) is not list]) > 1:
        return st.booleans() | st.lists(st.integers(), min_size=1, max_size=2)  # e.g. a duration: str | float
    if is_list:
        return st.integers() | st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2)
    if inner is bool:
        return st.sampled_from(["no", "yes", "true", "off"]) | st.integers(2, 9) | st.floats(allow_nan=False)
    if inner is int:
        return st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)) | \
            st.text(min_size=1, max_size=5) | st.lists(st.integers(), min_size=1, max_size=2)
    if inner is float:
        return st.sampled_from([float("nan"), float("inf")]) | st.text(min_size=1, max_size=5) | \
            st.lists(st.floats(allow_nan=False), min_size=1, max_size=2) | st.booleans()
    if inner is Path:
        return st.integers() | st.lists(st.integers(), min_size=1, max_size=2) | st.booleans()
    if typing.get_origin(inner) is typing.Literal:
        return st.text(max_size=6).filter(lambda t: t not in typing.get_args(inner)) | st.integers()
    return st.integers() | st.lists(st.integers(), min_size=1, max_size=2) | st.booleans()


@pytest.mark.parametrize("command, owner, name", _every_setting(), ids=lambda x: getattr(x, "__name__", x))
@settings(max_examples=5, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_setting_of_every_command_refuses_a_value_of_the_wrong_type(command, owner, name, data):
    import typing

    from wellread.config import from_mapping
    from wellread.errors import WellreadError

    tp = typing.get_type_hints(owner)[name]
    value = data.draw(_wrong_value(tp), label="value")
    with pytest.raises(WellreadError) as e:
        from_mapping(cli.COMMANDS[command].config_class, {name: value}, source="c.yaml")
    assert str(e.value).startswith(f"c.yaml (field {name}): "), (command, e.value)
    TRIED["values"] += 1


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.data())
def test_every_bounded_setting_of_every_command_refuses_a_value_out_of_bounds(data):
    import annotated_types

    from wellread.config import field_bounds, from_mapping
    from wellread.errors import WellreadError

    bounded = [(c, o, n) for c, o, n in _every_setting()
               if any(isinstance(b, (annotated_types.Ge, annotated_types.Gt)) for b in field_bounds(o, n))]
    assert len(bounded) >= 20, "TrainConfig's numbers, threads, workers and batch sizes are bounded"
    command, owner, name = data.draw(st.sampled_from(bounded), label="setting")
    lower = next(b for b in field_bounds(owner, name) if isinstance(b, (annotated_types.Ge, annotated_types.Gt)))
    bound = getattr(lower, "ge", getattr(lower, "gt", None))
    below = bound - data.draw(st.integers(1, 1000)) if isinstance(lower, annotated_types.Ge) else \
        bound - data.draw(st.integers(0, 1000))
    import typing

    from wellread.config import _unwrap

    if _unwrap(typing.get_type_hints(owner)[name])[1]:  # a list's bounds hold for each item: the flag's words
        below = [str(bound + 1), str(below)]
    with pytest.raises(WellreadError) as e:
        from_mapping(cli.COMMANDS[command].config_class, {name: below}, flags={name})
    assert str(e.value).startswith(f"--{name.replace('_', '-')}: should be greater than"), (command, e.value)
    TRIED["values"] += 1



def test_raw_text_with_bytes_that_are_not_utf8_is_read_as_corpus_reads_it_and_says_so(tmp_path):
    """Raw text (vocab train, corpus) is not a task file: an undecodable byte becomes U+FFFD, counted and said."""
    (tmp_path / "t.txt").write_bytes(b"hello world, a fine day\ncaf\xe9 au lait\n" * 40)
    rc, err = run(["vocab", "train", tmp_path / "t.txt", "--size", "120", "--out", tmp_path / "v", "--quiet"])
    assert rc == 0, err
    assert "note: 40 line(s) of the text hold bytes that are not UTF-8" in err
