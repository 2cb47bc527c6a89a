"""One run lifecycle for every training command (pretrain, finetune, distill):

    finished? -> check the directory -> prepare (model, data) -> replace (--overwrite) -> config.yaml
              -> train (resuming) -> save the model -> results.json

The order is the promise. Nothing in the run directory is touched until the new run's inputs have
all been read and checked (``prepare`` builds the model and loads the data), so a bad flag, a
missing data folder or a broken model leaves the directory as it was, ``--overwrite`` or not. A
directory is replaced only when it is a wellread run directory: every entry one that a run writes
(``RUN_FILES`` and the command's own), never a folder holding anything else. Every file is written
atomically (``wellread.io``), and the temporaries a killed writer leaves (``.NAME.XXXX.tmp``) are
recognised and removed, so the same command run again resumes from the last checkpoint, whatever
instant the kill came at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from wellread.config import dump_yaml
from wellread.errors import WellreadError
from wellread.io import atomic_write_json, atomic_write_text, read_json, read_json_or_none
from wellread.train.loop import (
    CHECKPOINT,
    Objective,
    TrainResult,
    check_checkpoint,
    field_defaults,
    settings_changes,
    setup_distributed,
    train,
)

RUN_FILES = frozenset({CHECKPOINT, "metrics.jsonl", "config.yaml", "results.json", "model", "train_state.json"})
# what wellread's atomic writers name their temporaries: .NAME.XXXX.tmp (mkstemp, mkdtemp, the checkpoint's
# .NAME.PID.tmp, a replaced directory's .NAME.old-PID.tmp)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_-]+\.tmp$")


def temporary_of(entry: str) -> str | None:
    """The file that ``entry`` is a temporary of, when it is one of wellread's atomic writers' temporaries."""
    m = _TEMPORARY.match(entry)
    return m.group("name") if m else None


def foreign_entries(out: Path, own: frozenset[str]) -> list[str]:
    """What ``out`` holds that no run writes (neither one of ``own`` nor a temporary of one)."""
    if not out.is_dir():
        return []
    return sorted(e.name for e in out.iterdir() if e.name not in own and temporary_of(e.name) not in own)


def check_run_dir(out: Path, own: frozenset[str]) -> None:
    """Refuse ``out`` unless it is absent, empty or a wellread run directory (``--overwrite`` or not)."""
    if out.exists() and not out.is_dir():
        raise WellreadError("not a directory: the run directory must be a folder", file=out)
    foreign = foreign_entries(out, own)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise WellreadError(f"holds files no wellread run writes ({shown}): not a run directory, so it is neither "
                            "used nor replaced (--overwrite only replaces a run directory); choose another --out",
                            file=out)


def clear_run_dir(out: Path, own: frozenset[str], *, everything: bool) -> None:
    """Remove the temporaries a killed run left in ``out``; with ``everything``, the whole run (``--overwrite``).

    Only entries a run writes are removed (``check_run_dir`` has made sure there is nothing else), the
    results first, so that a run killed while this runs is never taken for a finished one.
    """
    if not out.is_dir():
        return
    entries = [e for e in out.iterdir() if temporary_of(e.name) in own or (everything and e.name in own)]
    for e in sorted(entries, key=lambda e: e.name != "results.json"):
        if e.is_dir() and not e.is_symlink():
            shutil.rmtree(e)
        else:
            e.unlink(missing_ok=True)


def remove_temporaries(out: Path, is_own: Callable[[str], bool]) -> None:
    """Remove the temporaries a killed writer left in ``out`` of the files ``is_own`` says are this command's."""
    if out.is_dir():
        for e in out.iterdir():
            name = temporary_of(e.name)
            if name is not None and is_own(name):
                shutil.rmtree(e) if e.is_dir() and not e.is_symlink() else e.unlink(missing_ok=True)


def finished_results(out: Path, settings: dict, *, defaults: dict, results_file: str = "results.json") -> dict | None:
    """The results of this exact run when ``out`` holds it finished (a setting added to wellread since counts
    as unchanged while it holds its default), else None."""
    path = out / results_file
    if not path.is_file():
        return None
    done = read_json(path)
    if not isinstance(done, dict):
        raise WellreadError("expected a JSON object (a run's results)", file=path)
    if "settings" in done and not settings_changes(done["settings"], settings, defaults):
        return done
    return None


@dataclasses.dataclass
class Prepared:
    """What a command prepares before its run directory is touched: every input read and checked."""

    objective: Objective  # the model to train (``objective.model``) and the data
    fingerprint: dict  # what must not change between a run and its resumption
    save: Callable[[Path], Any]  # write the trained model to this directory
    results: Callable[[TrainResult, float], dict]  # results.json's content, given the result and wall seconds
    during: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # around training
    eval_each_epoch: bool = False


def run(cfg: Any, settings: dict, prepare: Callable[[], Prepared], *, own: frozenset[str] = frozenset(),
        results_file: str = "results.json", reuse: bool = True) -> dict:
    """The lifecycle (see the module's docstring) for ``cfg`` (a TrainConfig with ``out`` and ``overwrite``).

    ``settings``: what defines the run (a finished run with the same is returned as it is); ``prepare``
    builds the model and loads the data; ``own``: the entries the command writes besides ``RUN_FILES``;
    ``reuse=False``: the caller has decided the finished results are not these (run again, resuming).
    """
    out = Path(cfg.out)
    own = RUN_FILES | own | {results_file}
    if reuse and not cfg.overwrite:
        done = finished_results(out, settings, defaults=field_defaults(type(cfg)), results_file=results_file)
        if done is not None:
            print(f"{out}: already finished; results below (pass --overwrite to redo)", file=sys.stderr)
            return done
    check_run_dir(out, own)
    prepared = prepare()  # may raise: nothing has been written
    if not cfg.overwrite:
        check_checkpoint(out, cfg, prepared.fingerprint)  # another run's checkpoint: refused before any write
    d = setup_distributed()  # under torchrun, the main process writes; the others wait for it here
    if d.main:
        clear_run_dir(out, own, everything=cfg.overwrite)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    if d.world > 1:
        dist.barrier()  # no process may read a checkpoint that --overwrite is about to remove
    t0 = time.perf_counter()
    with prepared.during():
        result = train(prepared.objective, cfg, out, fingerprint=prepared.fingerprint,
                       eval_each_epoch=prepared.eval_each_epoch)
    results = {"settings": settings, "finished": True} | prepared.results(result, time.perf_counter() - t0)
    if d.main:
        prepared.save(out / "model")
        atomic_write_json(out / results_file, results)
    return results


def distillation_run(cfg: Any, settings: dict, stage2_settings: dict, prepare: Callable[[], Prepared], *,
                     own: frozenset[str] = frozenset(), stage3: Callable[[], dict] | None = None) -> dict:
    """Pre-trained Distillation's lifecycle, for every task kind: stage 2 (distillation) is a run of its own
    whose results are ``distill.json`` (redone only when its settings changed); ``stage3()``, when given,
    fine-tunes the distilled student in ``RUN/finetune`` and returns that run's results; ``results.json`` is
    written when both are done. ``settings`` define the whole run, ``stage2_settings`` the distillation alone."""
    out = Path(cfg.out)
    own = frozenset({"finetune", "distill.json", "results.json"}) | own
    if not cfg.overwrite:
        done = finished_results(out, settings, defaults=field_defaults(type(cfg)))
        if done is not None:
            print(f"{out}: already finished; results below (pass --overwrite to redo)", file=sys.stderr)
            return done
    check_run_dir(out, RUN_FILES | own)
    stage2 = None if cfg.overwrite else read_json_or_none(out / "distill.json")
    if stage2 is None or stage2.get("settings") != stage2_settings or not (out / "model").is_dir():
        stage2 = run(cfg, stage2_settings, prepare, own=own, results_file="distill.json", reuse=False)
    results = dict(stage2) | {"settings": settings}
    if stage3 is not None:
        ft = stage3()
        results |= {"distill_dev": stage2["dev"], "dev": ft["dev"], "history_finetune": ft["history"],
                    "finetune": {k: ft[k] for k in ("dev", "steps", "train_seconds", "best_epoch", "history")},
                    "final_model": str(out / "finetune" / "model"),
                    "train_seconds": stage2["train_seconds"] + ft["train_seconds"]}
    results["finished"] = True
    clear_run_dir(out, RUN_FILES | own, everything=False)  # a killed run's temporaries
    atomic_write_json(out / "results.json", results)
    return results


def epoch_summary(result: TrainResult, main_metric: str) -> dict:
    """The dev evaluations of a run (after each epoch), and the best one by ``main_metric``."""
    evals = [h for h in result.history if any("/" in k for k in h)]
    best = max(evals, key=lambda h: h.get(main_metric, float("-inf"))) if evals else None
    return {"main_metric": main_metric, "history": evals, "best_epoch": None if best is None else best["epoch"],
            "best_dev": None if best is None else {k: v for k, v in best.items() if "/" in k}}


def timing(result: TrainResult, wall: float, batch_size: int) -> dict:
    s = result.state
    return {"steps": s.step, "stopped_by": result.stopped_by, "train_seconds": s.elapsed, "wall_seconds": wall,
            "train_examples_per_s": s.step * batch_size / max(s.elapsed, 1e-9)}
