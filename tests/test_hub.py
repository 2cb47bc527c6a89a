"""Downloads against a local HTTP server on 127.0.0.1 serving zips these tests build from the TF
fixture: resume after a dropped connection, 404, a server that lies about the size, no network,
offline mode, checksums, the hub's files, and ``wellread download`` end to end."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from wellread import cli, hub
from wellread.errors import WellreadError
from wellread.modeling import convert, zoo
from wellread.modeling.models import load_model, read_weights

FIXTURE = Path(__file__).parent / "fixtures" / "tf_bert"
CKPT_FILES = ("bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001")
TINY = zoo.get("tiny")
TINY_ZIP = TINY.zip_url.rsplit("/", 1)[1]


def build_zip(folder: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # stored: the file is as big as the fixture
        for name in CKPT_FILES:
            zf.write(FIXTURE / name, folder + name)
    return buf.getvalue()


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with Range support; ``drop_once`` paths send half the body on
    their first request and close; ``lie`` maps a path to a wrong Content-Length offset."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.drop_once: set[str] = set()
        self.lie: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(body) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        part = body[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(part) + self.server.lie.get(self.path, 0)))
        self.end_headers()
        if self.path in self.server.drop_once:
            self.server.drop_once.discard(self.path)
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(part)


@pytest.fixture
def server(monkeypatch):
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("WELLREAD_ZIP_BASE", srv.url + "/bert_models")
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("WELLREAD_OFFLINE", raising=False)
    monkeypatch.delenv("WELLREAD_CACHE", raising=False)
    yield srv
    srv.shutdown()
    srv.server_close()


def assert_is_fixture_model(path: Path) -> None:
    """The model directory holds the fixture's weights: it computes the source model's hidden states."""
    model = load_model(path, "base")
    ids = torch.from_numpy(np.load(FIXTURE / "input_ids.npy")).long()
    types = torch.from_numpy(np.load(FIXTURE / "token_type_ids.npy")).long()
    with torch.no_grad():
        states = torch.stack(model(input_ids=ids, token_type_ids=types, output_hidden_states=True).hidden_states)
    np.testing.assert_allclose(states[:, 0].numpy(), np.load(FIXTURE / "hidden_states.npy"), rtol=0, atol=1e-6)


def test_download_unpacks_converts_and_records_the_checksum(server, tmp_path, capsys):
    data = build_zip()
    server.files[f"/bert_models/{TINY_ZIP}"] = data
    [path] = hub.fetch("tiny", cache=tmp_path, progress=False)
    assert path == tmp_path / "models" / TINY.google_name
    assert_is_fixture_model(path)
    entry = hub.read_manifest(tmp_path)[f"{server.url}/bert_models/{TINY_ZIP}"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["size"] == len(data)
    assert "holds L=2 H=32, not L-2_H-128" in capsys.readouterr().err  # the fixture is not the real Tiny
    n = len(server.requests)
    assert hub.resolve_model("tiny", cache=tmp_path) == path and len(server.requests) == n  # cached: no request


def test_dropped_connection_is_resumed_with_a_range_request(server, tmp_path):
    data = build_zip()
    path = f"/bert_models/{TINY_ZIP}"
    server.files[path] = data
    server.drop_once.add(path)
    dest = hub.download(server.url + path, tmp_path / "d" / TINY_ZIP, cache=tmp_path, progress=False)
    assert dest.read_bytes() == data and not dest.with_name(TINY_ZIP + ".part").exists()
    assert server.requests[0] == (path, None)
    assert server.requests[1] == (path, f"bytes={len(data) // 2}-")


def test_a_part_file_left_by_an_earlier_run_is_resumed(server, tmp_path):
    data = build_zip()
    server.files["/f.zip"] = data
    dest = tmp_path / "f.zip"
    dest.with_name("f.zip.part").write_bytes(data[:1000])
    hub.download(server.url + "/f.zip", dest, cache=tmp_path, progress=False)
    assert dest.read_bytes() == data and server.requests == [("/f.zip", "bytes=1000-")]


def test_404_is_a_clear_error_and_leaves_nothing(server, tmp_path):
    with pytest.raises(WellreadError, match="HTTP 404") as err:
        hub.fetch("L-4_H-256", cache=tmp_path, progress=False)
    assert "uncased_L-4_H-256_A-4.zip" in str(err.value)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("lie", [+100, -100])
def test_a_wrong_content_length_is_refused_and_leaves_no_model(server, tmp_path, lie):
    """Announcing more than is sent fails the size check; announcing less yields a short zip that
    fails the zip check. Either way: an error, the bad download removed, no model directory."""
    server.files[f"/bert_models/{TINY_ZIP}"] = build_zip()
    server.lie[f"/bert_models/{TINY_ZIP}"] = lie
    with pytest.raises(WellreadError, match="announced|not a complete zip|fails its CRC"):
        hub.fetch("tiny", cache=tmp_path, progress=False)
    assert not (tmp_path / "models" / TINY.google_name).exists()
    assert not list((tmp_path / "downloads").glob(TINY_ZIP + "*"))


def test_no_network_fails_at_once_saying_what_to_fetch_and_where(monkeypatch, tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WELLREAD_ZIP_BASE", f"http://127.0.0.1:{port}/bert_models")
    monkeypatch.delenv("WELLREAD_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t = time.monotonic()
    with pytest.raises(WellreadError) as err:
        hub.fetch("tiny", cache=tmp_path, progress=False)
    assert time.monotonic() - t < 5
    msg = str(err.value)
    assert "\n" not in msg and f"http://127.0.0.1:{port}/bert_models/{TINY_ZIP}" in msg
    assert f"put it at {tmp_path / 'downloads' / TINY_ZIP}" in msg


def test_a_zip_put_in_the_cache_by_hand_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WELLREAD_OFFLINE", "1")
    with pytest.raises(WellreadError, match="offline mode is on: fetch .*uncased_L-2_H-128_A-2.zip and put it at"):
        hub.resolve_model("tiny", cache=tmp_path)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / TINY_ZIP).write_bytes(build_zip())
    path = hub.resolve_model("tiny", cache=tmp_path)
    assert_is_fixture_model(path)


def test_sha256_given_or_recorded_is_checked(server, tmp_path):
    data = build_zip()
    server.files["/f.zip"] = data
    with pytest.raises(WellreadError, match="SHA-256"):
        hub.download(server.url + "/f.zip", tmp_path / "f.zip", cache=tmp_path, sha256="0" * 64, progress=False)
    hub.download(server.url + "/f.zip", tmp_path / "g.zip", cache=tmp_path, sha256=hashlib.sha256(data).hexdigest(),
                 progress=False)
    # Trust on first use: the server's file changes, a fresh download of the same URL is refused.
    server.files["/f.zip"] = build_zip(folder="other/")
    (tmp_path / "g.zip").unlink()
    with pytest.raises(WellreadError, match="differs from the expected"):
        hub.download(server.url + "/f.zip", tmp_path / "g.zip", cache=tmp_path, progress=False)


def test_a_zip_url_resolves_too(server, tmp_path):
    server.files["/some/where/model.zip"] = build_zip(folder="model/")
    path = hub.resolve_model(server.url + "/some/where/model.zip", cache=tmp_path, progress=False)
    assert path.parent == tmp_path / "models" and path.name.startswith("model-")
    assert_is_fixture_model(path)


def test_all_zip_converts_each_checkpoint_it_holds(server, tmp_path, capsys):
    """all_bert_models.zip may hold folders or zips; each checkpoint is read and named by its config.
    The fixture (L=2, H=32) is none of the 24, so it is reported and skipped."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("uncased_L-2_H-32_A-2.zip", build_zip())
    server.files["/bert_models/all_bert_models.zip"] = buf.getvalue()
    with pytest.raises(WellreadError, match="holds no BERT checkpoint"):
        hub.fetch("all", cache=tmp_path, progress=False)
    assert "(L=2 H=32); skipped" in capsys.readouterr().err


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "model"
    convert.convert(FIXTURE, out)
    return out


def serve_hub(server, hf_dir: Path, hub_id: str, *, weights: str = "model.safetensors") -> None:
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        server.files[f"/{hub_id}/resolve/main/{name}"] = (hf_dir / name).read_bytes()
    if weights == "model.safetensors":
        server.files[f"/{hub_id}/resolve/main/model.safetensors"] = (hf_dir / "model.safetensors").read_bytes()
    else:
        buf = io.BytesIO()
        torch.save(read_weights(hf_dir), buf)
        server.files[f"/{hub_id}/resolve/main/pytorch_model.bin"] = buf.getvalue()


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_hub_files_are_fetched_into_a_loadable_directory(server, tmp_path, hf_dir, weights):
    serve_hub(server, hf_dir, "someone/bert-test", weights=weights)
    [path] = hub.fetch("someone/bert-test", source="hub", cache=tmp_path, progress=False)
    assert path == tmp_path / "hub" / "someone--bert-test"
    assert (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").exists()
    assert_is_fixture_model(path)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(path).vocab_size == 100


def test_hub_names_resolve_through_the_zoo(server, tmp_path, hf_dir):
    serve_hub(server, hf_dir, TINY.hub_id)
    assert hub.resolve_model("tiny", source="hub", cache=tmp_path, progress=False) == \
        tmp_path / "hub" / TINY.hub_id.replace("/", "--")
    with pytest.raises(WellreadError, match="HTTP 404"):
        hub.fetch("nobody/nothing", source="hub", cache=tmp_path, progress=False)


def test_a_cased_hub_tokenizer_is_refused(server, tmp_path, hf_dir):
    serve_hub(server, hf_dir, "someone/cased")
    server.files["/someone/cased/resolve/main/tokenizer_config.json"] = json.dumps({"do_lower_case": False}).encode()
    with pytest.raises(WellreadError, match="cased"):
        hub.fetch("someone/cased", source="hub", cache=tmp_path, progress=False)
    assert not (tmp_path / "hub" / "someone--cased").exists()


def test_resolve_model_passes_local_directories_through(tmp_path, hf_dir):
    assert hub.resolve_model(hf_dir) == hf_dir
    with pytest.raises(WellreadError, match="convert it first"):
        hub.resolve_model(FIXTURE)
    with pytest.raises(WellreadError, match="no such model directory"):
        hub.resolve_model(str(tmp_path / "missing" / "dir"))
    with pytest.raises(WellreadError, match="unknown model name"):
        hub.resolve_model("teeny", cache=tmp_path, offline=True)


def test_cli_download_end_to_end(server, tmp_path, capsys):
    server.files[f"/bert_models/{TINY_ZIP}"] = build_zip()
    assert cli.main(["download", "tiny", "--cache", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out.strip()
    assert out == f"tiny: {tmp_path / 'models' / TINY.google_name}"
    assert_is_fixture_model(Path(out.split(": ", 1)[1]))
    # offline, a name not in the cache is one line saying what to fetch and where
    rc = cli.main(["download", "mini", "--cache", str(tmp_path), "--offline"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and "uncased_L-4_H-256_A-4.zip" in err and "offline" in err
    assert cli.main(["download", "tiny", "--source", "ftp"]) == 1
    assert "--source: should be 'zip' or 'hub', got 'ftp'" in capsys.readouterr().err


def test_cache_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c"
    assert hub.cache_dir(tmp_path / "x") == tmp_path / "x"
    shutil.rmtree(tmp_path / "c", ignore_errors=True)


def test_finetune_takes_a_miniature_name_resolved_through_the_cache(tmp_path, monkeypatch):
    from tests.conftest import data_path
    from wellread import cli

    monkeypatch.setenv("WELLREAD_OFFLINE", "1")
    monkeypatch.setenv("WELLREAD_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "downloads").mkdir(parents=True)
    (tmp_path / "cache" / "downloads" / TINY_ZIP).write_bytes(build_zip())
    glue = tmp_path / "glue" / "RTE"
    glue.mkdir(parents=True)
    for split in ("train", "dev"):
        lines = data_path("glue", "RTE", f"{split}.tsv").read_text(encoding="utf-8").splitlines()[:33]
        (glue / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    assert cli.main(["finetune", "--model", "tiny", "--task", "rte", "--data-dir", str(tmp_path / "glue"),
                     "--out", str(out), "--batch-size", "16", "--max-steps", "2", "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == str(tmp_path / "cache" / "models" / TINY.google_name)
    assert json.loads((out / "model" / "config.json").read_text())["hidden_size"] == 32  # the fixture's encoder
