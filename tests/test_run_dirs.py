"""The run lifecycle's promises about the run directory (wellread.train.run), through the CLI.

--overwrite replaces a run directory only after the new run's inputs are read and checked, and only a
run directory; a killed writer's temporaries never block a resume; a checkpoint records the run's
settings; outputs get the modes the umask gives.
"""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch

from tests.conftest import write_glue_slice
from tests.test_bad_values import _classifier, finetune_args, refused, run


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from tests.conftest import data_path

    root = tmp_path_factory.mktemp("user")
    write_glue_slice(root / "glue", ("SST-2",), 24, 12)
    shutil.copy(data_path("vocab", "bert-base-uncased-vocab.txt"), root / "vocab.txt")
    _classifier(root / "clf", root / "vocab.txt")
    return root


@pytest.fixture()
def finished(root, tmp_path):
    """A finished fine-tuning run in tmp_path/run."""
    rc, err = run(finetune_args(root, tmp_path / "run"))
    assert rc == 0, err
    return tmp_path / "run"


def test_overwrite_with_bad_inputs_leaves_the_run_directory_as_it_was(root, finished, tmp_path):
    args = finetune_args(root, finished)
    args[args.index("--data-dir") + 1] = tmp_path / "nonexistent"
    refused(tmp_path, [*args, "--overwrite", "--lr", "3e-4"], "nonexistent")
    args = finetune_args(root, finished)
    args[args.index("--model") + 1] = tmp_path / "no-model"
    refused(tmp_path, [*args, "--overwrite"], "no-model")
    assert json.loads((finished / "results.json").read_text())["finished"]


def test_overwrite_never_replaces_a_folder_that_is_not_a_run_directory(root, finished, tmp_path):
    (finished / "thesis.tex").write_text("years of work", encoding="utf-8")
    refused(tmp_path, [*finetune_args(root, finished), "--overwrite", "--lr", "3e-4"], "thesis.tex",
            "not a run directory")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("a,b\n", encoding="utf-8")
    refused(tmp_path, [*finetune_args(root, mine), "--overwrite"], "data.csv", "not a run directory")


def test_overwrite_replaces_a_run_directory_once_the_inputs_are_good(root, finished):
    rc, err = run([*finetune_args(root, finished), "--overwrite", "--lr", "3e-4"])
    assert rc == 0, err
    assert json.loads((finished / "results.json").read_text())["settings"]["lr"] == 3e-4


def test_a_killed_writers_temporaries_never_block_a_resume(root, finished):
    (finished / "results.json").unlink()  # as if killed before the end
    (finished / ".checkpoint.pt.12345.tmp").write_bytes(b"half a checkpoint")
    (finished / ".results.json.a1b2c3.tmp").write_text("{", encoding="utf-8")
    (finished / ".model.x9y8z7.tmp").mkdir()
    (finished / ".model.x9y8z7.tmp" / "config.json").write_text("{", encoding="utf-8")
    (finished / ".model.old-4321.tmp").mkdir()
    rc, err = run(finetune_args(root, finished))
    assert rc == 0, err
    assert "resuming from step" in err or "overwrite" not in err
    assert sorted(p.name for p in finished.iterdir() if p.name.startswith(".")) == []
    assert json.loads((finished / "results.json").read_text())["finished"]


def test_the_checkpoint_records_the_run_settings_and_a_change_names_them(root, tmp_path):
    out = tmp_path / "run"
    rc, err = run([*finetune_args(root, out), "--log-every", "1"])
    assert rc == 0, err
    settings = torch.load(out / "checkpoint.pt", weights_only=True)["settings"]
    assert settings["train"]["lr"] == 1e-4 and "loss" not in settings and "elapsed_s" not in settings
    (out / "results.json").unlink()
    line = refused(tmp_path, [*finetune_args(root, out), "--log-every", "1", "--lr", "2e-4"], "train.lr")
    assert "elapsed_s" not in line and "loss" not in line


def test_outputs_get_the_modes_the_umask_gives(root, tmp_path):
    old = os.umask(0o022)
    try:
        rc, err = run(finetune_args(root, tmp_path / "run"))
    finally:
        os.umask(old)
    assert rc == 0, err
    out = tmp_path / "run"
    for f in ("results.json", "config.yaml", "checkpoint.pt", "model/config.json", "model/model.safetensors"):
        assert stat.S_IMODE((out / f).stat().st_mode) == 0o644, f
    assert stat.S_IMODE((out / "model").stat().st_mode) == 0o755
