"""Load test of `wellread serve`: N requests from C concurrent clients on loopback, latency and errors.

Starts `wellread serve` in a subprocess (or uses --url), sends ``--requests`` POST /predict requests of
one SST-2 dev sentence each from ``--concurrency`` client threads (each a keep-alive connection),
and prints throughput, latency percentiles, errors, how many inputs each model call gathered, and
whether the answers match an offline Predictor's labels. Ends with SIGTERM and reports how the
server exited. The clients share the machine with the server (a 2-core box: they cost it CPU).

    python benchmarks/serve_load.py --model /tmp/wellread-bench-inference/export --backend onnx-int8
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


def get(host: str, port: int, path: str) -> dict:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


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

    latencies = np.zeros(args.requests)
    status = np.zeros(args.requests, dtype=np.int64)  # HTTP status; 0: no answer (connection error)
    labels: list[str | None] = [None] * args.requests
    counter = iter(range(args.requests))
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            body = json.dumps({"inputs": [sentences[i % len(sentences)]]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                latencies[i] = time.perf_counter() - t0
                status[i] = resp.status
                if resp.status == 200:
                    labels[i] = json.loads(data)["predictions"][0]["label"]
            except (OSError, http.client.HTTPException):
                latencies[i] = time.perf_counter() - t0
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.close()

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(args.concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    after = get(host, port, "/info")

    exit_code = None
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        exit_code = proc.wait(timeout=60)
        log.seek(0)
        shut_down_cleanly = "Application shutdown complete" in log.read()
        os.unlink(log.name)

    ok = status == 200
    calls = after["served"]["model_calls"] - before["served"]["model_calls"]
    inputs = after["served"]["inputs"] - before["served"]["inputs"]
    agree = None
    if expected is not None:
        agree = float(np.mean([labels[i] == expected[i % len(sentences)] for i in range(args.requests) if ok[i]]))
    ms = 1000 * latencies[ok] if ok.any() else np.zeros(1)
    result = {
        "requests": args.requests, "concurrency": args.concurrency, "backend": after["backend"],
        "errors": int((~ok).sum()), "statuses": {str(k): int(v) for k, v in zip(*np.unique(status, return_counts=True))},
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
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
