"""Load test of `wellread serve`: N requests from C concurrent clients on loopback, latency and errors.

Starts `wellread serve` in a subprocess (or uses --url), sends ``--requests`` POST /predict requests of
one SST-2 dev sentence each from ``--concurrency`` client threads (each a keep-alive connection),
and prints throughput, latency percentiles, errors, how many inputs each model call gathered, and
whether the answers match an offline Predictor's labels. Ends with SIGTERM and reports how the
server exited. The clients share the machine with the server (a 2-core box: they cost it CPU).

With ``--hostile 0.1`` the same invocation runs the load twice against the same server: all valid,
then with 10% of the requests hostile (a lone surrogate, JSON nested 200,000 deep, bytes that are not
UTF-8, a 5,000-digit number, too many inputs, a wrong shape, ...; see ``HOSTILE``). It reports, for
the valid requests of each run, the errors and the latency percentiles, the p99 ratio between the two
runs, and how the hostile requests were answered (4xx expected, never 500).

    python benchmarks/serve_load.py --model /tmp/wellread-bench-inference/export --backend onnx-int8
    python benchmarks/serve_load.py --model /tmp/wellread-bench-inference/export --hostile 0.1
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOSTILE: list[bytes] = [
    b'{"inputs": ["a fine film \\ud800 indeed"]}',  # a lone surrogate
    b"[" * 200_000 + b"]" * 200_000,  # nested 200,000 deep
    b'{"inputs": ["caf\xe9 au lait"]}',  # not UTF-8
    b'{"inputs": [' + b"9" * 5000 + b"]}",  # a 5,000-digit number
    json.dumps({"inputs": ["x"] * 1000}).encode(),  # too many inputs
    b'{"inputs": [{"txt": "a typo"}]}',  # no text field
    b'{"inputs": [5, null, true]}',  # not texts
    b'{"inputs": ["unclosed',  # invalid JSON
    b"",  # no body
    json.dumps({"inputs": ["word " * 5000]}).encode(),  # a text over the limit
]


def get(host: str, port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run_load(host: str, port: int, requests: int, concurrency: int, sentences: list[str], hostile: float,
             seed: int = 0) -> dict:
    """Send ``requests`` requests from ``concurrency`` keep-alive clients; a ``hostile`` fraction of them
    (drawn with ``seed``) are bodies from ``HOSTILE``. Per-request latency, status and label."""
    rng = np.random.default_rng(seed)
    is_hostile = rng.random(requests) < hostile
    latencies = np.zeros(requests)
    status = np.zeros(requests, dtype=np.int64)  # HTTP status; 0: no answer (connection error)
    labels: list[str | None] = [None] * requests
    counter = iter(range(requests))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            if is_hostile[i]:
                body = HOSTILE[i % len(HOSTILE)]
            else:
                body = json.dumps({"inputs": [sentences[i % len(sentences)]]}).encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                latencies[i] = time.perf_counter() - t0
                status[i] = resp.status
                if resp.status == 200 and not is_hostile[i]:
                    labels[i] = json.loads(data)["predictions"][0]["label"]
            except (OSError, http.client.HTTPException):
                latencies[i] = time.perf_counter() - t0
            if status[i] != 200 or resp.getheader("connection", "").lower() == "close":
                conn.close()  # the server may close the connection after an error
                conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.close()

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    valid_ok = (status == 200) & ~is_hostile
    ms = 1000 * latencies[valid_ok] if valid_ok.any() else np.zeros(1)
    return {"latencies": latencies, "status": status, "labels": labels, "wall": wall, "hostile": is_hostile,
            "valid_errors": int((~valid_ok & ~is_hostile).sum()),
            "valid_latency_ms": {q: float(np.percentile(ms, n)) for q, n in (("p50", 50), ("p90", 90), ("p99", 99))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a model or `wellread export` directory (SST-2)")
    ap.add_argument("--backend", default="onnx-int8")
    ap.add_argument("--url", help="load an already running server (host:port) instead of starting one")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=64, help="the server's micro-batch cap")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's micro-batching window")
    ap.add_argument("--threads", type=int, default=None, help="the server's model threads")
    ap.add_argument("--glue", type=Path, default=DATA / "glue")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--hostile", type=float, default=0.0, help="also run with this fraction of hostile requests "
                    "(after an all-valid run, against the same server) and compare the valid requests' p99")
    args = ap.parse_args()
    if args.model is None and args.url is None:
        ap.error("give --model (a server is started) or --url")

    rows = [ln.split("\t") for ln in (args.glue / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    sentences = [r[0] for r in rows]
    expected = None
    if args.model is not None:
        from wellread.infer.loading import open_predictor

        offline = open_predictor(args.model, backend=args.backend, threads=args.threads, quiet=True)
        expected = [p["label"] for p in offline.predict(sentences)]
        del offline

    proc, log = None, None
    if args.url:
        host, port = args.url.replace("http://", "").rstrip("/").split(":")
        port = int(port)
    else:
        host, port = "127.0.0.1", free_port()
        log = tempfile.NamedTemporaryFile("w+", prefix="wellread-serve-", suffix=".log", delete=False)
        cmd = [sys.executable, "-m", "wellread", "serve", "--model", str(args.model), "--backend", args.backend,
               "--host", host, "--port", str(port), "--batch-size", str(args.batch_size), "--max-wait-ms",
               str(args.max_wait_ms), "--log-level", "info"] + (["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(host, port, "/health").get("status") == "ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.seek(0)
                sys.exit(f"the server did not start:\n{log.read()[-3000:]}")
            time.sleep(0.2)
    before = get(host, port, "/info")

    if args.hostile:
        valid_run = run_load(host, port, args.requests, args.concurrency, sentences, 0.0)
        mixed_run = run_load(host, port, args.requests, args.concurrency, sentences, args.hostile)
    else:
        valid_run = mixed_run = run_load(host, port, args.requests, args.concurrency, sentences, 0.0)
    latencies, status, labels, wall, hostile = (mixed_run[k] for k in ("latencies", "status", "labels", "wall",
                                                                       "hostile"))
    after = get(host, port, "/info")

    exit_code = None
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=60)
        log.seek(0)
        shut_down_cleanly = "Application shutdown complete" in log.read()
        os.unlink(log.name)

    ok = (status == 200) & ~hostile
    calls = after["served"]["model_calls"] - before["served"]["model_calls"]
    inputs = after["served"]["inputs"] - before["served"]["inputs"]
    agree = None
    if expected is not None:
        agree = float(np.mean([labels[i] == expected[i % len(sentences)] for i in range(args.requests) if ok[i]]))
    ms = 1000 * latencies[ok] if ok.any() else np.zeros(1)
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "backend": after["backend"],
        "errors": int((~ok & ~hostile).sum()),
        "statuses": {str(k): int(v) for k, v in zip(*np.unique(status[~hostile], return_counts=True))},
        "seconds": wall, "requests_per_s": args.requests / wall,
        "latency_ms": {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
                       "p99": float(np.percentile(ms, 99)), "max": float(ms.max())},
        "model_calls": calls, "inputs_per_model_call": inputs / max(calls, 1),
        "label_agreement_with_offline_predictor": agree,
        "server_exit": None if proc is None else {"returncode": exit_code, "shutdown_complete": shut_down_cleanly},
        "load_avg": os.getloadavg(), "threads": after["threads"], "batch_size": args.batch_size,
        "max_wait_ms": args.max_wait_ms,
    }
    lat = result["latency_ms"]
    print(f"{args.requests} requests, {args.concurrency} clients, backend {result['backend']}, "
          f"{after['threads']} model threads: {result['requests_per_s']:.0f} requests/s, errors {result['errors']}")
    print(f"latency ms: p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}")
    print(f"{calls} model calls, {result['inputs_per_model_call']:.1f} inputs each on average; "
          f"labels agree with an offline Predictor on {100 * agree:.2f}% of the answers" if agree is not None else
          f"{calls} model calls")
    if proc is not None:
        print(f"SIGTERM: exit {exit_code} ({'after a complete shutdown' if shut_down_cleanly else 'NO clean shutdown'})")
    if args.hostile:
        v = valid_run["valid_latency_ms"]
        h = mixed_run["valid_latency_ms"]
        hostile_status = {str(k): int(n) for k, n in zip(*np.unique(status[hostile], return_counts=True))}
        result["hostile"] = {
            "fraction": args.hostile, "hostile_requests": int(hostile.sum()), "hostile_statuses": hostile_status,
            "hostile_500s": int((status[hostile] >= 500).sum()),
            "all_valid_run": {"errors": valid_run["valid_errors"], "latency_ms": v},
            "mixed_run": {"errors_on_valid": mixed_run["valid_errors"], "latency_ms": h},
            "p99_ratio": h["p99"] / max(v["p99"], 1e-9)}
        print(f"--hostile {args.hostile}: all-valid run p99 {v['p99']:.1f} ms, {valid_run['valid_errors']} errors; "
              f"with {int(hostile.sum())} hostile requests: valid p99 {h['p99']:.1f} ms "
              f"({result['hostile']['p99_ratio']:.2f}x), {mixed_run['valid_errors']} errors on valid requests; "
              f"hostile answered {hostile_status}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
