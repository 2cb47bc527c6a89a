"""`make run` on a machine without local data: with a network it takes the data from the hub (`wellread recipe
--source hub`, here a loopback server standing in for huggingface.co); offline it says in one line what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_hub import Server, server  # noqa: F401  (the loopback hub of the download tests)

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``make run`` with an installed virtual environment stand-in (this interpreter, this checkout) and DATA
    pointing at an empty folder."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name, run in (("python", ""), ("wellread", " -m wellread")):
        script = venv / "bin" / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}"{run} "$@"\n')
        script.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: nothing to install
    os.utime(venv / ".installed", (2**31, 2**31))
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WELLREAD_DATA", "WELLREAD_OFFLINE", "HF_HUB_OFFLINE")} | {
        "PYTHONPATH": str(REPO), "WELLREAD_CACHE": str(tmp_path / "cache"), **env}
    return subprocess.run(["make", "--no-print-directory", "run", f"VENV={venv}", f"DATA={tmp_path / 'empty'}",
                           f"RUN={tmp_path / 'run'}", "BUDGET=5m"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_without_local_data_make_run_takes_the_data_from_the_hub(tmp_path, server):  # noqa: F811
    r = make_run(tmp_path, {"HF_ENDPOINT": server.url})
    assert "come from the hub (--source hub)" in r.stdout, r.stdout + r.stderr
    asked = [path for path, _ in server.requests]
    # the recipe went to the hub for GLUE (nyu-mll/glue's parquet files); this stand-in has none, so it stops there
    assert any(p.startswith("/datasets/nyu-mll/glue/resolve/main/") and p.endswith(".parquet") for p in asked), asked
    assert r.returncode != 0 and "404" in r.stderr


@pytest.mark.parametrize("how", ["offline", "unreachable"])
def test_without_local_data_or_a_network_make_run_says_what_to_do_in_one_line(tmp_path, how):
    if how == "offline":
        env = {"WELLREAD_OFFLINE": "1"}
    else:  # a port nothing listens on
        srv = Server()
        url = srv.url
        srv.server_close()
        env = {"HF_ENDPOINT": url}
    r = make_run(tmp_path, env)
    assert r.returncode != 0
    said = [line for line in r.stdout.splitlines() if line.startswith("make run:")]
    assert len(said) == 1 and "set WELLREAD_DATA=DIR" in said[0] and "no network" in said[0], r.stdout
    assert not (tmp_path / "run").exists()
