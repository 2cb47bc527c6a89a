"""CPU inference: wellread's Predictor (torch, onnx, onnx-int8, openvino, openvino-int8) against
transformers.pipeline.

One process, one model (a Tiny fine-tuned on SST-2; the script fine-tunes one, 1 epoch from random
init, when --model is not given), the 872 SST-2 dev sentences, the same batch size and thread count
for everyone. Throughput is end to end, from strings to labels (tokenisation included); each method
runs ``--repeats`` times, round-robin, so load from other processes falls on all of them alike, and
the median is reported (the best too). Batch-1 latency: one sentence a call, methods interleaved.

    python benchmarks/inference.py                       # fine-tunes a Tiny first (~1-3 min)
    python benchmarks/inference.py --model RUN/model --repeats 7 --json results.json
    python benchmarks/inference.py --experiments         # also int8 made for VNNI/AMX (not product backends)

The table is headed by `wellread env` (CPU, instruction sets, versions, what `--backend auto` runs here).
``--experiments`` adds what the Intel AMX kind was tried with (issue 26): ONNX Runtime static int8
(QOperator, activations calibrated on 256 SST-2 training sentences) and OpenVINO on a static QDQ int8
graph, each through the Predictor's batching, so every line pays the same tokenisation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def finetune_sst2(work: Path, glue: Path, train_rows: int | None) -> Path:
    """A random-init Tiny fine-tuned on SST-2 for one epoch (lr 1e-3, batch 32): ~80% dev accuracy.

    One thread: on a shared machine two OpenMP threads stall each other (measured here: 1 step/s
    instead of ~30 with one thread).
    """
    from wellread.train.finetune import FinetuneConfig, finetune

    data = work / "glue"
    if not (data / "SST-2" / "train.tsv").is_file():
        (data / "SST-2").mkdir(parents=True, exist_ok=True)
        lines = (glue / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (data / "SST-2" / "train.tsv").write_text("".join(lines if train_rows is None else lines[: train_rows + 1]),
                                                  encoding="utf-8")
        shutil.copy(glue / "SST-2" / "dev.tsv", data / "SST-2" / "dev.tsv")
    r = finetune(FinetuneConfig(model="tiny", random_init=True, task="sst2", data_dir=data, out=work / "run",
                                batch_size=32, lr=1e-3, epochs=1, quiet=False, threads=1))
    print(f"fine-tuned Tiny on SST-2: dev accuracy {r['dev']['dev/accuracy']:.4f} -> {work / 'run' / 'model'}")
    return work / "run" / "model"


def static_int8(export: Path, calibration: list[str], args, threads: int) -> dict:
    """Predictors on static int8 graphs of export/model.onnx (activation scales calibrated on ``calibration``)."""
    from concurrent.futures import ThreadPoolExecutor

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from wellread.infer.predictor import Predictor, ort_session

    fp32 = Predictor(export, backend="onnx", batch_size=32, max_length=args.max_length, threads=1)
    feeds = [b for _, b in fp32.batches(fp32.encode(calibration))]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out = {}
    static = export.parent / "export-static-int8"  # beside the export, never inside it
    static.mkdir(exist_ok=True)
    import logging

    logging.disable(logging.WARNING)  # quantize_static's generic "consider pre-processing" notice
    for fmt, file in ((QuantFormat.QOperator, "model.qop.onnx"), (QuantFormat.QDQ, "model.qdq.onnx")):
        quantize_static(str(export / "model.onnx"), str(static / file), Reader(), quant_format=fmt,
                        op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8 if fmt == QuantFormat.QOperator else QuantType.QInt8,
                        extra_options={"ActivationSymmetric": fmt == QuantFormat.QDQ})
    logging.disable(logging.NOTSET)
    # ONNX Runtime on the QOperator graph: the onnx backend's runner with the file swapped in
    p = Predictor(export, backend="onnx", batch_size=args.batch_size, max_length=args.max_length, threads=threads)
    wide, narrow = ort_session(static / "model.qop.onnx", threads), ort_session(static / "model.qop.onnx", 1)
    pool = ThreadPoolExecutor(threads)
    p._run = lambda batches: ([wide.run(["logits"], batches[0])[0]] if len(batches) == 1 else
                              list(pool.map(lambda b: narrow.run(["logits"], b)[0], batches)))
    out["experiment ort static int8"] = p
    # OpenVINO on the QDQ graph (its int8 path): the openvino runner reading model.qdq.onnx
    qdq_dir = export.parent / "export-qdq"
    qdq_dir.mkdir(exist_ok=True)
    for f in export.iterdir():
        if f.is_file() and f.suffix != ".onnx":
            shutil.copy2(f, qdq_dir / f.name)
    shutil.copy2(static / "model.qdq.onnx", qdq_dir / "model.onnx")
    q = Predictor(qdq_dir, backend="openvino", batch_size=args.batch_size, max_length=args.max_length,
                  threads=threads)
    out["experiment openvino static int8"] = q
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="a model fine-tuned on SST-2 (default: fine-tune one in --work)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "wellread-bench-inference",
                    help="where the fine-tuned model and the ONNX export go (kept between runs)")
    ap.add_argument("--glue", type=Path, default=DATA / "glue", help="the GLUE root (SST-2/dev.tsv)")
    ap.add_argument("--train-rows", type=int, default=None, help="fine-tune on the first N rows (default: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="threads for every method (default: all cores)")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes over the dev set per method")
    ap.add_argument("--latency-n", type=int, default=200, help="sentences timed one at a time per method")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--experiments", action="store_true", help="also time static int8 graphs (ORT, OpenVINO)")
    args = ap.parse_args()

    import onnxruntime
    import torch
    import transformers
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from wellread import env as wellread_env
    from wellread.infer.onnx import export_onnx
    from wellread.infer.predictor import Predictor, default_threads

    print(wellread_env.describe(), flush=True)

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or (args.work / "run" / "model" if (args.work / "run" / "model" / "config.json").is_file()
                           else finetune_sst2(args.work, args.glue, args.train_rows))
    export = args.work / "export"
    # as `wellread export --int8 --task sst2` does: the OpenVINO int8 model calibrated on training sentences
    from wellread.infer.gate import calibration_inputs

    rec = export_onnx(model, export, int8=True, max_length=args.max_length, quiet=True,
                      calibration=calibration_inputs("sst2", args.glue))
    print(f"exported -> {export} (check: fp32 max |dp| {rec['check']['onnx']['max_abs_diff_probability']:.1e}, "
          f"int8 max |dp| {rec['check']['onnx-int8']['max_abs_diff_probability']:.1e})")

    rows = [ln.split("\t") for ln in (args.glue / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    sentences, gold = [r[0] for r in rows], np.array([r[1] for r in rows])

    hf_logging.set_verbosity_error()
    pipe = pipeline("text-classification", model=str(model), tokenizer=str(model), device="cpu")
    methods = {
        "transformers.pipeline": lambda xs: [o["label"] for o in pipe(xs, batch_size=args.batch_size, truncation=True,
                                                                       max_length=args.max_length)],
    }
    for backend in wellread_env.inference_backends():
        p = Predictor(model if backend == "torch" else export, backend=backend, batch_size=args.batch_size,
                      max_length=args.max_length, threads=threads)
        methods[f"wellread {backend}"] = lambda xs, p=p: [x["label"] for x in p.predict(xs)]
    if args.experiments:
        train = [ln.split("\t")[0] for ln in (args.glue / "SST-2" / "train.tsv").read_text(encoding="utf-8")
                 .splitlines()[1:257]]
        for name, p in static_int8(export, train, args, threads).items():
            methods[name] = lambda xs, p=p: [x["label"] for x in p.predict(xs)]

    labels, times = {}, {m: [] for m in methods}
    for m, f in methods.items():
        labels[m] = f(sentences)  # warm-up (and the predictions scored below)
    # transformers' pipeline sets TOKENIZERS_PARALLELISM=false in the process (for its DataLoader), which
    # would make every later method tokenise on one thread: each method starts with the Rust tokenizer's
    # default (parallel), as in a process of its own (measured: without this, openvino ran ~20% slower
    # after the pipeline had run, and onnx-int8 alike)
    for _ in range(args.repeats):
        for m, f in methods.items():
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
            t0 = time.perf_counter()
            f(sentences)
            times[m].append(time.perf_counter() - t0)
    latency = {m: [] for m in methods}
    for s in sentences[: args.latency_n]:
        for m, f in methods.items():
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
            t0 = time.perf_counter()
            f([s]) if m != "transformers.pipeline" else pipe(s, truncation=True, max_length=args.max_length)
            latency[m].append(time.perf_counter() - t0)
    load_after = os.getloadavg()

    base = "transformers.pipeline"
    results = {}
    for m in methods:
        med, best = len(sentences) / statistics.median(times[m]), len(sentences) / min(times[m])
        results[m] = {
            "sentences_per_s_median": med, "sentences_per_s_best": best,
            "accuracy": float(np.mean(np.array(labels[m]) == gold)),
            "agreement_with_pipeline": float(np.mean(np.array(labels[m]) == np.array(labels[base]))),
            "latency_ms_p50": 1000 * float(np.percentile(latency[m], 50)),
            "latency_ms_p90": 1000 * float(np.percentile(latency[m], 90)),
        }
    for m in methods:
        results[m]["throughput_ratio"] = results[m]["sentences_per_s_median"] / results[base]["sentences_per_s_median"]
        results[m]["latency_ratio"] = results[base]["latency_ms_p50"] / results[m]["latency_ms_p50"]

    env = {"wellread_env": wellread_env.report(), "auto_backend": wellread_env.auto_backend(),
           "date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads,
           "load_avg_before": load_before, "load_avg_after": load_after, "python": platform.python_version(),
           "torch": torch.__version__, "transformers": transformers.__version__,
           "onnxruntime": onnxruntime.__version__, "model": str(model), "sentences": len(sentences),
           "batch_size": args.batch_size, "max_length": args.max_length, "repeats": args.repeats,
           "latency_n": args.latency_n}
    print(f"\n{env['cpu']}, {env['cores']} cores, {threads} threads; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(f"SST-2 dev, {len(sentences)} sentences, batch {args.batch_size}, max length {args.max_length}, "
          f"median of {args.repeats} passes\n")
    print(f"{'method':24s} {'sent/s':>8s} {'best':>8s} {'x pipeline':>10s} {'accuracy':>9s} {'p50 ms':>8s} "
          f"{'p90 ms':>8s} {'x pipeline':>10s}")
    for m, r in results.items():
        print(f"{m:24s} {r['sentences_per_s_median']:8.0f} {r['sentences_per_s_best']:8.0f} "
              f"{r['throughput_ratio']:9.2f}x {100 * r['accuracy']:8.2f}% {r['latency_ms_p50']:8.2f} "
              f"{r['latency_ms_p90']:8.2f} {r['latency_ratio']:9.2f}x")
    torch_r = results["wellread torch"]
    print()
    for m, r in results.items():
        if m.startswith("wellread") and m != "wellread torch" or m.startswith("experiment"):
            print(f"{m}: {r['throughput_ratio']:.2f}x the pipeline's throughput, accuracy "
                  f"{100 * (r['accuracy'] - torch_r['accuracy']):+.2f} points vs fp32 PyTorch")
    print(f"--backend auto runs {wellread_env.auto_backend()} here")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
