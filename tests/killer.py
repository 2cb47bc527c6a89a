"""Runs wellread commands in forked children and SIGKILLs them at a chosen write (tests/test_crash.py).

A long-lived process (``python -m tests.killer``) imports wellread and torch once, then serves jobs
read as JSON lines on stdin: ``{"args": [...], "kill_at": N | null, "cwd": DIR}``. Each job runs
``wellread ARGS`` in a forked child. Every write the child makes is an *event*: a file's data about to
be fsynced (the temporary is written, not yet renamed), an ``os.replace`` about to happen, a
``torch.save`` (the checkpoint), a line appended to metrics.jsonl. With ``kill_at`` N the child kills
itself with SIGKILL at the N-th event, in the middle of that write where there is a middle (half the
checkpoint's bytes, half the metrics line). The answer, one JSON line on stdout: the exit code or
signal, and the events seen (kind, file name).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys


def _install(kill_at: int | None, events: list, report: int) -> None:
    import torch

    from wellread.train import loop

    def event(kind: str, name: str, partial=None) -> None:
        events.append([kind, name])
        os.write(report, (json.dumps([kind, name]) + "\n").encode())  # reaches the parent even if killed next
        if kill_at is not None and len(events) == kill_at:
            if partial is not None:
                partial()
            os.kill(os.getpid(), signal.SIGKILL)

    def fd_name(fd: int) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return "?"

    real_fsync, real_replace, real_save = os.fsync, os.replace, torch.save

    def fsync(fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        event("fsync", fd_name(fd))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        event("replace", os.path.basename(str(dst)))
        return real_replace(src, dst, *a, **k)

    def save(obj, f, *a, **k):
        if hasattr(f, "write"):
            def half():
                buf = io.BytesIO()
                real_save(obj, buf, *a, **k)
                f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                f.flush()

            event("save", os.path.basename(getattr(f, "name", "?")), half)
        return real_save(obj, f, *a, **k)

    real_write = loop.MetricsLog.write

    def write(self, record):
        if self.enabled:
            def half():
                with open(self.path, "a", encoding="utf-8") as f:
                    line = json.dumps(record)
                    f.write(line[: len(line) // 2])

            event("append", self.path.name, half)
        return real_write(self, record)

    os.fsync, os.replace, torch.save = fsync, replace, save
    loop.MetricsLog.write = write


def _job(spec: dict) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the command, report its events through the pipe
        os.close(r)
        rc = 99
        err = io.StringIO()
        try:
            os.chdir(spec.get("cwd") or ".")
            _install(spec.get("kill_at"), [], w)
            from wellread import cli

            with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(err):
                rc = cli.main(spec["args"])
        except BaseException as e:  # noqa: BLE001 -- reported as exit code 99
            err.write(f"{type(e).__name__}: {e}")
            rc = 99
        finally:
            os.write(w, (json.dumps(["stderr", err.getvalue()[-3000:]]) + "\n").encode())
            os._exit(int(rc or 0))
    os.close(w)
    with os.fdopen(r) as pipe:
        lines = [json.loads(ln) for ln in pipe if ln.strip()]
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    return {"killed": killed, "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "events": [e for e in lines if e[0] != "stderr"],
            "stderr": next((e[1] for e in lines if e[0] == "stderr"), "")}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    # imported once, before the forks
    import wellread.cli  # noqa: F401
    import wellread.data.corpus  # noqa: F401
    import wellread.train.distill  # noqa: F401
    import wellread.train.grid  # noqa: F401
    import wellread.train.pretrain  # noqa: F401

    for line in sys.stdin:
        if line.strip():
            print(json.dumps(_job(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
