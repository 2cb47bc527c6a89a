"""Running stages: a done marker per stage, with its settings; a finished stage is skipped."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wellread.io import atomic_write_json
from wellread.train.loop import config_fingerprint


def duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def log(msg: str) -> None:
    print(f"recipe: {msg}", file=sys.stderr, flush=True)


class StageRunner:
    """Runs a stage unless ``OUT/stages/<name>.json`` says it finished with the same settings."""

    def __init__(self, out: Path, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.fingerprints: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def marker(self, name: str) -> Path:
        return self.out / "stages" / f"{name}.json"

    def read(self, name: str) -> dict | None:
        try:
            return json.loads(self.marker(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def __call__(self, name: str, settings: dict, fn: Callable[[], dict], *, dirs: list[Path] = (),
                 after: list[str] = (), estimate_s: float | None = None) -> dict:
        settings = {**settings, "after": {a: self.fingerprints[a] for a in after if a in self.fingerprints}}
        settings = json.loads(json.dumps(settings, default=str))
        self.fingerprints[name] = config_fingerprint(settings)
        old = self.read(name)
        if old is not None and old.get("settings") == settings and old.get("status") == "finished" \
                and all(Path(d).exists() for d in dirs):
            log(f"{name}: finished earlier, skipped")
            self.skipped.append(name)
            return old["result"]
        if old is not None and old.get("settings") != settings:
            log(f"{name}: its settings changed since the last run; starting it over")
            for d in dirs:
                shutil.rmtree(d, ignore_errors=True)
        est = f" (estimated {duration(estimate_s)})" if estimate_s else ""
        log(f"{name}: running{est}")
        started = time.time()
        record = {"name": name, "settings": settings, "status": "running", "estimate_s": estimate_s,
                  "started": started, "attempts": (old or {}).get("attempts", 0) + 1}
        atomic_write_json(self.marker(name), record)
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        atomic_write_json(self.marker(name), record | {"status": "finished", "seconds": seconds, "result": result,
                                                       "finished": time.time()})
        log(f"{name}: done in {duration(seconds)}")
        self.ran.append(name)
        return result


__all__ = ["StageRunner", "log", "duration"]
