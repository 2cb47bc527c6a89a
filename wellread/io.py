"""Atomic file and directory writes, and reading text files (.txt, .gz) line by line.

Every output of wellread goes through here, so a killed process never leaves a half-written file
or model directory where a good one was (write to a temporary name, flush, fsync, ``os.replace``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from wellread.errors import WellreadError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _with_umask(mode: int) -> int:
    """``mode`` less the process's umask (what open() and mkdir() would create)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mode & ~mask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kw) -> Iterator[IO]:
    """A file written under a temporary name beside ``path`` and renamed into place on success.

    Readers see the old file or the whole new one, never a part; on an error the temporary file
    is removed and the old file (if any) is left as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise WellreadError("is a directory, expected a file to write", file=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(fd, _with_umask(0o666))  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json_or_none(path: str | Path) -> dict | None:
    """A JSON object from ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_json(path: str | Path, *, missing: str = "no such file") -> Any:
    """Parse a JSON file; a missing file or bad JSON is a WellreadError naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise WellreadError(missing, file=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WellreadError(f"invalid JSON: {e.msg}", file=path, line=e.lineno) from None
    except UnicodeDecodeError:
        raise WellreadError("not UTF-8 text", file=path) from None


def check_output_dir(path: str | Path, *, allowed: set[str] | None = None) -> Path:
    """Refuse an output directory that exists and holds anything but files we would write.

    ``allowed`` names the files a previous run of the same command leaves; a directory holding only
    those is ours to replace. A directory holding anything else is never replaced (wellread never deletes
    what it did not create; docs/reliability.md): the ``--overwrite`` of the commands that write such a
    directory changes nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WellreadError("output path exists and is not a directory", file=path)
    if path.is_dir():
        present = {p.name for p in path.iterdir()}
        foreign = sorted(present - (allowed or set()))
        if foreign:
            shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
            raise WellreadError(
                f"output directory exists and holds other content ({shown}); wellread replaces only a "
                "directory it wrote: choose another --out",
                file=path,
            )
    return path


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``path``; on success swap it into place.

    If the body raises, the temporary directory is removed and ``path`` is untouched. An existing
    ``path`` is replaced only after the new one is complete (callers check it may be replaced).
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _with_umask(0o777))  # mkdtemp makes 0700; the directory gets the mode mkdir would give it
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                os.chmod(f, _with_umask(0o666))  # whatever the writer (safetensors writes 0600): what open() gives
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            elif f.is_dir() and not f.is_symlink():
                os.chmod(f, _with_umask(0o777))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}.tmp")  # a temporary, as wellread.train.run knows
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class TextLines:
    """The lines of a UTF-8 text file (.txt, or .gz), each ending as in the file ("\\n", "\\r\\n").

    Decoding is strict: a byte that is not UTF-8 is a WellreadError naming the file, line and column
    (never a silent U+FFFD). A byte-order mark at the start is dropped. A context manager, iterable once.
    """

    def __init__(self, path: Path, errors: str = "strict") -> None:
        self.path = path
        self.errors = errors  # "replace": U+FFFD for what is not UTF-8, counted in ``replaced`` (lines)
        self.replaced = 0
        self._raw: IO[bytes] = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")

    def __enter__(self) -> TextLines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._raw.close()

    def __iter__(self) -> Iterator[str]:
        n = 0
        try:
            for n, raw in enumerate(self._raw, 1):  # noqa: B007 (n names the line of a gzip error)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if self.errors != "replace":
                        raise WellreadError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1}",
                                            file=self.path, line=n) from None
                    line = raw.decode("utf-8", errors="replace")
                    self.replaced += 1
                yield line.removeprefix("\ufeff") if n == 1 else line
        except (OSError, EOFError) as e:  # a corrupt or truncated .gz
            raise WellreadError(f"unreadable ({e})", file=self.path, line=n + 1) from None


def open_text(path: str | Path, errors: str = "strict") -> TextLines:
    """Open a .txt or .gz file as UTF-8 text lines (``TextLines``: a byte that is not UTF-8 is an error
    naming its file and line; with ``errors="replace"`` it becomes U+FFFD and the lines are counted)."""
    path = Path(path)
    if not path.exists():
        raise WellreadError("no such file", file=path)
    if path.is_dir():
        raise WellreadError("is a directory, expected a text file", file=path)
    return TextLines(path, errors)


def model_directory(path: str | Path) -> Path:
    """A model directory, or a fine-tuning run directory holding it as ``model/``."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if not path.exists():
        raise WellreadError("no such model directory", file=path)
    raise WellreadError("not a model directory (no config.json, nor model/config.json)", file=path)
