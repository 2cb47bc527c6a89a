"""The service under hostile clients: one bad request never hurts another, and no input gets a 500.

A real `wellread serve` (a small random classifier, torch backend) in a subprocess on a loopback port;
hypothesis generates malformed, hostile and valid requests that are sent concurrently by 16 clients.
Valid requests must get exactly the predictions the Predictor gives in-process, bad ones a 4xx with a
JSON error, and the service must keep serving.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_infer import start_serve
from wellread.infer.predictor import Predictor
from wellread.infer.stream import JSON_A

MAX_INPUTS, MAX_CHARS, MAX_BODY = 16, 400, 20_000
SERVED = {"valid": 0, "bad": 0}  # requests sent by the fuzz test (reported in docs/reliability.md)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, std_vocab) -> Path:
    """A random 2-layer classifier (H=32) on the standard vocabulary, labels negative/positive."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from wellread.modeling.models import save_model
    from wellread.tokenization import load_tokenizer

    tok = load_tokenizer(std_vocab)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    return save_model(BertForSequenceClassification(config).eval(), tok,
                               tmp_path_factory.mktemp("clf") / "model")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
          timeout: float = 60) -> tuple[int, dict]:
    try:
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        with _NO_PROXY.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(classifier):
    url, proc = start_serve("--model", str(classifier), "--threads", "1", "--max-body-bytes", str(MAX_BODY),
                            "--max-inputs", str(MAX_INPUTS), "--max-text-chars", str(MAX_CHARS), "--max-length", "64",
                            "--log-level", "warning")
    yield url, proc
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def reference(classifier):
    return Predictor(classifier, max_length=64, threads=1)


# --- defect: one bad input broke every request of its micro-batch ------------------------------------


def test_a_lone_surrogate_is_a_422_and_the_concurrent_good_requests_all_succeed(server, reference):
    url, _ = server
    good = [f"a rather good film number {i}" for i in range(16)]
    bodies = [json.dumps({"inputs": [s]}).encode() for s in good]
    bad = b'{"inputs": ["fine \\ud800 text"]}'
    with ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(_http, "POST", url + "/predict", b) for b in [bad, *bodies]]
        got = [f.result() for f in futures]
    assert got[0][0] == 422 and "inputs[0]" in got[0][1]["error"] and "surrogate" in got[0][1]["error"]
    assert [s for s, _ in got[1:]] == [200] * 16
    want = reference.predict(good)
    assert [a["predictions"][0]["label"] for _, a in got[1:]] == [w["label"] for w in want]


def test_a_deeply_nested_body_is_a_400_not_a_500(server):
    url, _ = server
    deep = b"[" * 200_000 + b"]" * 200_000
    status, answer = _http("POST", url + "/predict", deep)
    assert status in (400, 413), answer  # over the body limit here; parse_request below without one
    from wellread.infer.serve import Limits, RequestError, parse_request

    with pytest.raises(RequestError) as e:
        parse_request(deep, Limits(max_body_bytes=1 << 30))
    assert e.value.status == 400 and "nested too deeply" in e.value.message


def test_a_batch_that_still_fails_is_retried_one_by_one_so_only_the_offender_fails():
    from wellread.infer.serve import MicroBatcher

    class Picky:
        def predict(self, a, b=None):
            if "poison" in a:
                raise RuntimeError("/secret/path: cannot encode poison")
            return [{"score": float(len(x))} for x in a]

    async def main():
        batcher = MicroBatcher(Picky(), max_batch=64, max_wait_s=0.05)
        await batcher.start()
        try:
            texts = ["one", "poison", "three", "four"]
            return await asyncio.gather(*(batcher.predict([t], [None]) for t in texts), return_exceptions=True)
        finally:
            await batcher.stop()

    one, poison, three, four = asyncio.run(main())
    assert isinstance(poison, RuntimeError)
    assert (one, three, four) == ([{"score": 3.0}], [{"score": 5.0}], [{"score": 4.0}])


async def _asgi(app, requests: list[tuple[str, str, bytes]]) -> list[tuple[int, dict]]:
    """Answers of the ASGI ``app`` to (method, path, body) requests, its lifespan started and stopped around them."""
    startup: asyncio.Queue = asyncio.Queue()
    startup.put_nowait({"type": "lifespan.startup"})
    sent: list = []

    async def lifespan_send(message):
        sent.append(message["type"])

    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, startup.get, lifespan_send))
    while "lifespan.startup.complete" not in sent:
        await asyncio.sleep(0.01)
    answers = []
    for method, path, body in requests:
        got: dict = {"body": b""}

        async def receive(body=body):
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message, got=got):
            if message["type"] == "http.response.start":
                got["status"] = message["status"]
            elif message["type"] == "http.response.body":
                got["body"] += message.get("body", b"")

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
                 "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        try:
            await app(scope, receive, send)
        except Exception:  # noqa: BLE001 -- after a 500 is sent, Starlette re-raises for the server to log
            pass
        answers.append((got["status"], json.loads(got["body"])))
    startup.put_nowait({"type": "lifespan.shutdown"})
    await lifespan
    return answers


def test_a_500_carries_no_exception_text_and_info_no_absolute_path(classifier):
    from wellread.infer.serve import create_app

    class Broken(Predictor):
        def predict(self, a, b=None):
            raise RuntimeError(f"failed reading {classifier}/secret")

    (status, answer), (_, info) = asyncio.run(_asgi(create_app(Broken(classifier)), [
        ("POST", "/predict", b'{"inputs": ["hello"]}'), ("GET", "/info", b"")]))
    assert status == 500 and answer == {"error": "internal error"}
    assert info["model"] == classifier.name
    assert str(classifier.parent) not in json.dumps(info)


# --- the fuzz test -----------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)  # valid Unicode, no surrogates


def _nested(children):
    return st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text, _nested,
                     max_leaves=12)
_surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@st.composite
def valid_request(draw) -> tuple[bytes, list]:
    items = draw(st.lists(_text | st.fixed_dictionaries({"text_a": _text, "text_b": _text}), min_size=1,
                          max_size=MAX_INPUTS))
    shape = draw(st.sampled_from(["inputs", "list", "one"]))
    obj = {"inputs": items} if shape == "inputs" else items if shape == "list" or len(items) > 1 else items[0]
    return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode(), items


@st.composite
def bad_request(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "surrogate", "deep", "too_many", "too_long", "wrong_field",
                                 "bad_utf8", "big_int", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200).filter(lambda b: not _is_valid(b)))
    if kind == "json":
        not_a_text = st.integers() | st.booleans() | st.none() | st.lists(_json, min_size=1)
        return json.dumps({"inputs": [*draw(st.lists(_text, max_size=3)), draw(not_a_text)]}).encode()
    if kind == "surrogate":
        text = draw(_text) + draw(_surrogate) + draw(_text)
        return json.dumps({"inputs": [draw(_text), text]}).encode()  # ensure_ascii: "\udXXX"
    if kind == "deep":
        n = draw(st.integers(2_000, 9_000))
        return b'{"inputs": ' + b"[" * n + b"]" * n + b"}"
    if kind == "too_many":
        return json.dumps({"inputs": ["x"] * draw(st.integers(MAX_INPUTS + 1, 100))}).encode()
    if kind == "too_long":
        return json.dumps({"inputs": ["y" * draw(st.integers(MAX_CHARS + 1, 5_000))]}).encode()
    if kind == "wrong_field":
        return json.dumps([{draw(_text.filter(lambda k: k not in JSON_A)): "hi"}]).encode()
    if kind == "bad_utf8":
        return b'{"inputs": ["caf' + draw(st.sampled_from([b"\xe9", b"\xff\xfe", b"\xc3"])) + b'"]}'
    if kind == "big_int":
        return b'{"inputs": [' + b"9" * draw(st.integers(5_000, 10_000)) + b"]}"
    return b""


def _is_valid(body: bytes) -> bool:
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(obj, str) or (isinstance(obj, list) and 0 < len(obj) <= MAX_INPUTS
                                    and all(isinstance(x, str) for x in obj))


def _expected(reference: Predictor, items: list) -> list[dict]:
    a = [x if isinstance(x, str) else x["text_a"] for x in items]
    b = [None if isinstance(x, str) else x["text_b"] for x in items]
    return reference.predict(a, b)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_concurrent_valid_and_hostile_requests(server, reference, data):
    url, proc = server
    valid = data.draw(st.lists(valid_request(), min_size=4, max_size=16), label="valid")
    bad = data.draw(st.lists(bad_request(), min_size=4, max_size=16), label="bad")
    jobs = [("valid", body, items) for body, items in valid] + [("bad", body, None) for body in bad]
    order = data.draw(st.permutations(range(len(jobs))), label="order")
    jobs = [jobs[i] for i in order]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda j: _http("POST", url + "/predict", j[1],
                                                {"content-type": "application/json"}), jobs))
    for (kind, body, items), (status, answer) in zip(jobs, answers):
        SERVED[kind] += 1
        if kind == "bad":
            assert 400 <= status < 500 and isinstance(answer.get("error"), str), (body[:200], status, answer)
            continue
        assert status == 200, (body[:200], status, answer)
        want = _expected(reference, items)
        got = answer["predictions"]
        assert [g["label"] for g in got] == [w["label"] for w in want]
        for g, w in zip(got, want):
            assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-4)
    assert proc.poll() is None, "the service keeps serving"
    assert _http("GET", url + "/health")[0] == 200


def test_fuzz_report(server):
    """After the fuzz test: the counts (docs/reliability.md quotes them) and the service's own counters."""
    url, proc = server
    _, info = _http("GET", url + "/info")
    print(f"\nfuzz: {SERVED['valid']} valid and {SERVED['bad']} bad requests sent; the service answered "
          f"{info['served']['requests']} requests in {info['served']['model_calls']} model calls")
    assert proc.poll() is None and info["served"]["requests"] >= SERVED["valid"]


def test_the_service_listens_on_loopback_unless_told_otherwise():
    import inspect

    from wellread import cli
    from wellread.config import from_args
    from wellread.infer.serve import serve

    ns = cli.build_parser().parse_args(["serve", "--model", "some/model"])
    assert from_args(cli.COMMANDS["serve"].config_class, ns).host == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
