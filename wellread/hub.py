"""Resolve a model name (alias, one of the 24, hub id, URL, local directory) to a local HF-layout
directory, downloading into a cache when needed; offline-safe.

Cache layout (default ``~/.cache/wellread``, env ``WELLREAD_CACHE``)::

    downloads/<file>.zip[.part]      Google's zips as fetched (.part while incomplete: resumed)
    downloads/hub/<owner--name>/...  files fetched from the Hugging Face hub
    models/<uncased_L-..._A-..>/     converted from Google's zips (HF layout)
    hub/<owner--name>/               assembled from the hub's files (HF layout, safetensors)
    manifest.json                    URL -> size and SHA-256 of what was downloaded, and when

Google publishes no checksums for its zips, so the SHA-256 of each download is recorded in the
manifest; a later download of the same URL that differs is refused (trust on first use), and a
``sha256`` given by the caller is always checked. Base URLs: ``WELLREAD_ZIP_BASE`` replaces
``https://storage.googleapis.com/bert_models/2020_02_20`` and ``HF_ENDPOINT`` the hub's (tests point
both at 127.0.0.1). Offline (``offline=True``, ``HF_HUB_OFFLINE=1`` or ``WELLREAD_OFFLINE=1``): the
cache only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from wellread import tokenization
from wellread.errors import WellreadError
from wellread.io import atomic_directory, atomic_write_json
from wellread.modeling import zoo

DEFAULT_CACHE = Path("~/.cache/wellread")
HF_BASE = "https://huggingface.co"
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
KNOWN_SHA256: dict[str, str] = {}  # URL -> SHA-256; Google publishes none for the miniature zips
CHUNK = 1 << 16


def cache_dir(cache: str | Path | None = None) -> Path:
    return Path(cache or os.environ.get("WELLREAD_CACHE") or DEFAULT_CACHE).expanduser()


def is_offline(offline: bool | None = None) -> bool:
    if offline:
        return True
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE", "WELLREAD_OFFLINE"))


def zip_url(m: zoo.Miniature) -> str:
    base = os.environ.get("WELLREAD_ZIP_BASE")
    return f"{base.rstrip('/')}/{m.zip_url.rsplit('/', 1)[1]}" if base else m.zip_url


def all_zip_url() -> str:
    base = os.environ.get("WELLREAD_ZIP_BASE")
    return f"{base.rstrip('/')}/{zoo.ALL_ZIP_URL.rsplit('/', 1)[1]}" if base else zoo.ALL_ZIP_URL


def hub_url(hub_id: str, filename: str) -> str:
    base = os.environ.get("HF_ENDPOINT") or HF_BASE
    return f"{base.rstrip('/')}/{hub_id}/resolve/main/{filename}"


def hub_api_url(path: str) -> str:
    """A URL of the hub's API (e.g. ``datasets/ID/parquet/CONFIG/SPLIT``: a data set's parquet files)."""
    base = os.environ.get("HF_ENDPOINT") or HF_BASE
    return f"{base.rstrip('/')}/api/{path}"


# --- the manifest ------------------------------------------------------------------------------

def read_manifest(cache: Path) -> dict:
    path = cache / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WellreadError(f"invalid JSON: {e.msg} (delete it to start afresh)", file=path, line=e.lineno) from None
    return data if isinstance(data, dict) else {}


def _record(cache: Path, url: str, path: Path, digest: str) -> None:
    manifest = read_manifest(cache)
    manifest[url] = {"path": str(path.relative_to(cache)) if path.is_relative_to(cache) else str(path),
                     "size": path.stat().st_size, "sha256": digest,
                     "downloaded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(cache / "manifest.json", manifest)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- downloading ---------------------------------------------------------------------------------

class NotFound(WellreadError):
    """HTTP 404: the file is not on the server (optional hub files are skipped on this)."""


def _fetch_hint(url: str, dest: Path) -> str:
    return f"fetch {url} yourself and put it at {dest}, then run again (WELLREAD_OFFLINE=1 uses the cache only)"


def download(url: str, dest: str | Path, *, cache: str | Path | None = None, sha256: str | None = None,
             timeout: float = 30.0, retries: int = 5, progress: bool = True, offline: bool | None = None) -> Path:
    """Fetch ``url`` to ``dest``, resuming from ``dest.part`` with an HTTP Range request.

    The size must match what the server announced (Content-Length / Content-Range); a connection
    dropped mid-file is resumed up to ``retries`` times. A file already at ``dest`` (fetched earlier,
    or put there by hand) is used as it is. No connection at all fails at once, saying what to fetch
    and where to put it. The SHA-256 is checked against ``sha256``, a known one, or the one recorded
    for this URL in the cache's manifest, and recorded there.
    """
    dest = Path(dest)
    root = cache_dir(cache)
    expected = sha256 or KNOWN_SHA256.get(url) or read_manifest(root).get(url, {}).get("sha256")
    if not dest.is_file():
        if is_offline(offline):
            raise WellreadError(f"not in the cache and offline mode is on: fetch {url} and put it at {dest}",
                                file=dest)
        _fetch(url, dest, timeout=timeout, retries=retries, progress=progress)
    digest = sha256_file(dest)
    if expected and digest != expected.lower():
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise WellreadError(f"SHA-256 {digest} differs from the expected {expected} (moved aside to {bad.name}); "
                            f"{_fetch_hint(url, dest)}", file=dest)
    _record(root, url, dest, digest)
    return dest


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": "wellread", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch(url: str, dest: Path, *, timeout: float, retries: int, progress: bool) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    total: int | None = None
    failures = 0
    bar = None
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            try:
                resp = _open(url, have, timeout)
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # nothing past what we hold: complete, or the server holds less
                    m = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") or "")
                    size = int(m.group(1)) if m else None
                    if size == have and (total is None or total == have):
                        break
                    part.unlink(missing_ok=True)
                    raise WellreadError(f"server announced {total} bytes but holds {size}; the download was "
                                        f"removed: {url}", file=dest) from None
                if e.code == 404:
                    raise NotFound(f"not found on the server (HTTP 404): {url}", file=dest) from None
                raise WellreadError(f"HTTP {e.code} {e.reason}: {url}", file=dest) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                if failures == 0 and bar is None:  # nothing received in this call: no network, no retries
                    raise WellreadError(f"cannot download ({reason}); {_fetch_hint(url, dest)}", file=dest) from None
                failures += 1
                if failures > retries:
                    raise WellreadError(f"download interrupted ({reason}) at {have} bytes; run again to resume",
                                        file=dest) from None
                time.sleep(min(0.2 * failures, 2.0))
                continue
            with resp:
                length = resp.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                if resp.status == 206:
                    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", "") or "")
                    if not m or int(m.group(1)) != have:  # not the range asked for: start again
                        part.unlink(missing_ok=True)
                        failures += 1
                        if failures > retries:
                            raise WellreadError(f"server answers ranges wrongly: {url}", file=dest)
                        continue
                    total = int(m.group(3)) if m.group(3) != "*" else (have + length if length is not None else None)
                else:  # 200: the whole file from the start
                    have = 0
                    part.unlink(missing_ok=True)
                    total = length
                if bar is None:
                    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                               desc=dest.name, disable=not progress, file=sys.stderr, leave=False)
                else:
                    bar.reset(total=total)
                    bar.update(have)
                received = 0
                try:
                    with open(part, "ab") as f:
                        while True:
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            f.write(chunk)
                            received += len(chunk)
                            bar.update(len(chunk))
                except (OSError, http.client.HTTPException):  # timeouts and resets are OSErrors
                    pass  # dropped mid-file: resumed below
            size = part.stat().st_size if part.exists() else 0
            if total is None and length is None:
                break  # no size announced: the end of the stream is the end of the file
            if total is not None and size == total:
                break
            if total is not None and size > total:
                part.unlink(missing_ok=True)
                raise WellreadError(f"server sent {size} bytes but announced {total}; the download was removed: "
                                    f"{url}", file=dest)
            failures += 1  # every short attempt counts, so a server that keeps lying cannot loop us forever
            if failures > retries:
                raise WellreadError(f"download incomplete: {size} of {total} bytes after {retries} retries; run "
                                    "again to resume", file=dest)
    finally:
        if bar is not None:
            bar.close()
    os.replace(part, dest)


# --- models from Google's zips -----------------------------------------------------------------

def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / w).is_file() for w in HUB_WEIGHTS)


def _check_zip(path: Path, url: str) -> None:
    """A bad zip (truncated, corrupt) is removed so that the next run fetches it anew."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        problem = f"member {bad} fails its CRC" if bad else None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        problem = f"not a complete zip ({e})"
    if problem:
        path.unlink(missing_ok=True)
        raise WellreadError(f"downloaded file is bad: {problem}; removed it, run again to fetch it anew "
                            f"(from {url})", file=path)


def _warn(msg: str) -> None:
    print(f"wellread: warning: {msg}", file=sys.stderr)


def _convert_zip(zip_path: Path, url: str, out: Path, expect: zoo.Miniature | None) -> Path:
    from wellread.modeling import convert

    _check_zip(zip_path, url)
    convert.convert(zip_path, out)
    if expect is not None:
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
        if (cfg["num_hidden_layers"], cfg["hidden_size"]) != (expect.layers, expect.hidden):
            _warn(f"{url} holds L={cfg['num_hidden_layers']} H={cfg['hidden_size']}, not {expect.name}")
    return out


def fetch_zip(m: zoo.Miniature | str, *, cache: str | Path | None = None, offline: bool | None = None,
              progress: bool = True, timeout: float = 30.0, sha256: str | None = None) -> Path:
    """The converted model directory for a miniature (or a zip URL), fetching and converting once."""
    root = cache_dir(cache)
    if isinstance(m, zoo.Miniature):
        url, name, expect = zip_url(m), m.google_name, m
    else:
        url, expect = m, None
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(url.split("?")[0]).stem) or "model"
        name = f"{stem}-{hashlib.sha256(url.encode()).hexdigest()[:8]}"
    out = root / "models" / name
    if _is_model_dir(out):
        return out
    dest = root / "downloads" / (Path(url.split("?")[0]).name or f"{name}.zip")
    download(url, dest, cache=root, sha256=sha256, timeout=timeout, progress=progress, offline=offline)
    return _convert_zip(dest, url, out, expect)


def fetch_all_zip(*, cache: str | Path | None = None, offline: bool | None = None, progress: bool = True,
                  timeout: float = 30.0, sha256: str | None = None) -> list[Path]:
    """All 24 from ``all_bert_models.zip``: each checkpoint in it (also inside nested zips) is
    converted into ``models/<google name>`` by the sizes in its bert_config.json."""
    from wellread.modeling import convert

    root = cache_dir(cache)
    outs = [root / "models" / m.google_name for m in zoo.MINIATURES]
    if all(_is_model_dir(o) for o in outs):
        return outs
    url = all_zip_url()
    dest = root / "downloads" / url.rsplit("/", 1)[1]
    download(url, dest, cache=root, sha256=sha256, timeout=timeout, progress=progress, offline=offline)
    _check_zip(dest, url)
    done: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="wellread-all-", dir=root) as tmp:
        files = convert.safe_extract(dest, Path(tmp))
        for inner in [f for f in files if f.suffix == ".zip"]:
            convert.safe_extract(inner, inner.with_suffix(""))
            inner.unlink()
        for ckpt in convert.find_checkpoint_dirs(Path(tmp)):
            cfg = convert.read_bert_config(ckpt / "bert_config.json")
            m = zoo.Miniature(cfg.num_hidden_layers, cfg.hidden_size)
            if m not in zoo.MINIATURES:
                _warn(f"{ckpt.relative_to(tmp)} in {dest.name} is not one of the 24 (L={m.layers} H={m.hidden}); skipped")
                continue
            out = root / "models" / m.google_name
            if not _is_model_dir(out):
                convert.convert(ckpt, out)
            done.append(out)
    if not done:
        raise WellreadError("the archive holds no BERT checkpoint", file=dest)
    return done


# --- models from the hub -------------------------------------------------------------------------

def fetch_hub(hub_id: str, *, cache: str | Path | None = None, offline: bool | None = None, progress: bool = True,
              timeout: float = 30.0) -> Path:
    """A hub model (config.json, model.safetensors or pytorch_model.bin, vocab.txt) assembled into
    ``hub/<owner--name>`` in the HF layout with safetensors weights, checked by a strict load."""
    from wellread.modeling.models import load_model

    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", hub_id) or ".." in hub_id:
        raise WellreadError(f"not a hub id: {hub_id!r} (expected owner/name)", field="model")
    root = cache_dir(cache)
    key = hub_id.replace("/", "--")
    out = root / "hub" / key
    if _is_model_dir(out):
        return out
    files = root / "downloads" / "hub" / key

    def get(name: str, required: bool = True) -> Path | None:
        try:
            return download(hub_url(hub_id, name), files / name, cache=root, timeout=timeout, progress=progress,
                            offline=offline)
        except NotFound:
            if required:
                raise
            return None
        except WellreadError:
            if not required and is_offline(offline):
                return None
            raise

    config = get("config.json")
    vocab = get("vocab.txt")
    weights = None
    for name in HUB_WEIGHTS:
        weights = get(name, required=False)
        if weights is not None:
            break
    if weights is None:
        hint = _fetch_hint(hub_url(hub_id, HUB_WEIGHTS[0]), files / HUB_WEIGHTS[0])
        raise WellreadError(f"{hub_id} has neither {' nor '.join(HUB_WEIGHTS)} "
                            f"{'in the cache' if is_offline(offline) else 'on the server'}; {hint}", field="model")
    tok_config = get("tokenizer_config.json", required=False)
    if tok_config is not None:
        try:
            lower = json.loads(tok_config.read_text(encoding="utf-8")).get("do_lower_case", True)
        except json.JSONDecodeError as e:
            raise WellreadError(f"invalid JSON: {e.msg}", file=tok_config, line=e.lineno) from None
        if lower is False:
            raise WellreadError("a cased tokenizer (do_lower_case false); wellread's tokenizer is uncased",
                                file=tok_config, field="do_lower_case")
    assert config is not None and vocab is not None
    tok = tokenization.load_tokenizer(vocab)
    with atomic_directory(out) as tmp:
        shutil.copy(config, tmp / "config.json")
        if weights.name == "model.safetensors":
            shutil.copy(weights, tmp / "model.safetensors")
        else:
            _bin_to_safetensors(weights, tmp / "model.safetensors")
        tokenization.write_tokenizer_files(tok, tmp)
        model = load_model(tmp, "base")  # strict: every encoder weight present, shapes right
        tokenization.check_vocabulary(tok, model.config.vocab_size, vocab, names=("vocab.txt", "config.json"))
    return out


def _bin_to_safetensors(src: Path, dest: Path) -> None:
    """Re-save a pickled state dict as safetensors, unpickled with ``weights_only=True`` (tensors
    only, no code); shared tensors (tied weights) are cloned, as safetensors requires."""
    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds on bad pickles
        raise WellreadError(f"cannot read the weights: {e}", file=src) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WellreadError("not a state dict of tensors", file=src)
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(dest), metadata={"format": "pt"})


# --- resolution -------------------------------------------------------------------------------------

def fetch(name: str, *, source: str = "zip", cache: str | Path | None = None, offline: bool | None = None,
          progress: bool = True, timeout: float = 30.0, sha256: str | None = None) -> list[Path]:
    """``wellread download``: a name (alias, L-<n>_H-<n>, ``all``, a hub id, a zip URL) -> model dirs."""
    if source not in ("zip", "hub"):
        raise WellreadError(f"source must be zip or hub, not {source!r}", field="source")
    kw = dict(cache=cache, offline=offline, progress=progress, timeout=timeout)
    if name.lower() == "all":
        if source == "hub":
            return [fetch_hub(m.google_hub_id, **kw) for m in zoo.MINIATURES]
        return fetch_all_zip(sha256=sha256, **kw)
    if re.match(r"https?://", name):
        return [fetch_zip(name, sha256=sha256, **kw)]
    if "/" in name and not zoo.is_known(name):
        return [fetch_hub(name, **kw)]
    m = zoo.get(name)
    if source == "hub":
        return [fetch_hub(name if "/" in name else m.hub_id, **kw)]
    return [fetch_zip(m, sha256=sha256, **kw)]


HUB_PREFIX = "hub:"


def resolve_model(name_or_path: str | Path, *, source: str = "zip", cache: str | Path | None = None,
                  offline: bool | None = None, progress: bool = True) -> Path:
    """A local model directory for what the user typed: a directory passes through; a miniature name
    (tiny, L-2_H-128, ...) or zip URL comes from the cache, downloaded (and converted) first unless
    offline. A hub id only when asked for: ``hub:owner/name``, or ``source="hub"`` (``--source hub``);
    otherwise ``owner/name`` is a local path that does not exist, so a typo never downloads another's model."""
    text = str(name_or_path)
    if text.startswith(HUB_PREFIX):
        return fetch(text[len(HUB_PREFIX):], source="hub", cache=cache, offline=offline, progress=progress)[0]
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        if any(path.glob("*.index")):
            raise WellreadError("a TensorFlow checkpoint, not a model directory: convert it first with "
                                "`wellread convert DIR --out MODEL_DIR`", file=path)
        raise WellreadError("not a model directory: no config.json", file=path)
    if path.suffix == ".zip" and path.is_file():
        raise WellreadError("a zip, not a model directory: convert it first with `wellread convert ZIP --out DIR`",
                            file=path)
    if re.match(r"https?://", text) or zoo.is_known(text):
        return fetch(text, source=source, cache=cache, offline=offline, progress=progress)[0]
    if source != "hub" and (text.startswith((".", "~", "/")) or "/" in text or "\\" in text or path.exists()):
        hint = f" (for the hub model {text}, write {HUB_PREFIX}{text})" if re.fullmatch(r"[\w.-]+/[\w.-]+", text) else ""
        raise WellreadError(f"no such model directory{hint}", file=path)
    return fetch(text, source=source, cache=cache, offline=offline, progress=progress)[0]


__all__ = ["resolve_model", "fetch", "fetch_zip", "fetch_all_zip", "fetch_hub", "download", "cache_dir",
           "is_offline", "read_manifest", "zip_url", "hub_url", "NotFound"]
