"""CPU inference speed of a distilled student's int8 export against its teacher, on a task file's dev set.

One process, one thread for every method, the same batch size; the same dev sentences (or pairs) for
everyone, end to end from strings to labels (tokenisation included). Methods run one at a time,
round-robin, ``--repeats`` times, so load from other processes falls on all alike; the median
sentences/s is reported (and the best). Methods: the teacher in PyTorch fp32 (how it was fine-tuned and
how ``wellread serve`` runs a model directory by default) and in ONNX Runtime fp32 (its fastest fp32
form here); the student in PyTorch fp32 and as its int8 ONNX export (``wellread export --int8``).
Each method's dev score is measured on the same run, so the speed is shown with what it costs.

    python benchmarks/student_vs_teacher_speed.py --task examples/tasks/emotion.yaml \\
        --student RUN/finetune/model --teacher TEACHER/model --threads 1 --repeats 5 --json out.json

Printed first: `wellread env` (CPU, instruction sets, versions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True, help="a task file (or a GLUE name with --data-dir)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--student", required=True, type=Path, help="the fine-tuned (or distilled) student's model dir")
    ap.add_argument("--teacher", required=True, type=Path, help="the fine-tuned teacher's model dir")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    from wellread import env
    from wellread.data.task_files import read_split
    from wellread.data.tasks import get_task
    from wellread.eval.metrics import compute_metrics, task_score
    from wellread.infer.onnx import export_onnx
    from wellread.infer.predictor import Predictor

    print(env.describe(), flush=True)
    spec = get_task(a.task)
    ex = read_split(spec, a.data_dir, a.split).examples
    texts_a, texts_b, refs = [e.text_a for e in ex], [e.text_b for e in ex], [e.label for e in ex]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        export_onnx(a.student, Path(tmp) / "student", int8=True, max_length=a.max_length, quiet=True)
        export_onnx(a.teacher, Path(tmp) / "teacher", int8=False, max_length=a.max_length, quiet=True)
        print(f"exported both in {time.perf_counter() - t0:.0f} s", flush=True)
        kw = dict(max_length=a.max_length, batch_size=a.batch_size, threads=a.threads)
        methods = {
            "teacher, PyTorch fp32": Predictor(a.teacher, backend="torch", **kw),
            "teacher, ONNX fp32": Predictor(Path(tmp) / "teacher", backend="onnx", **kw),
            "student, PyTorch fp32": Predictor(a.student, backend="torch", **kw),
            "student, ONNX int8": Predictor(Path(tmp) / "student", backend="onnx-int8", **kw),
        }
        scores, rates = {}, {m: [] for m in methods}
        for name, p in methods.items():  # the warm-up pass doubles as the score
            preds = p.predict(texts_a, texts_b)
            got = [r["score"] for r in preds] if spec.is_regression else [r["label"] for r in preds]
            metrics = compute_metrics(spec, got, refs)
            scores[name] = metrics | {"score": task_score(spec, metrics)}
        for _ in range(a.repeats):
            for name, p in methods.items():
                t0 = time.perf_counter()
                p.logits(texts_a, texts_b)
                rates[name].append(len(texts_a) / (time.perf_counter() - t0))
    median = {m: statistics.median(v) for m, v in rates.items()}
    print(f"\n{spec.name} {a.split}: {len(ex):,} inputs, {a.threads} thread(s), batch {a.batch_size}, "
          f"median of {a.repeats} round-robin passes\n")
    print("| method | sentences/s (median) | best | score x100 |\n|---|---:|---:|---:|")
    for m in methods:
        print(f"| {m} | {median[m]:,.0f} | {max(rates[m]):,.0f} | {100 * scores[m]['score']:.1f} |")
    ratios = {"student int8 / teacher PyTorch fp32": median["student, ONNX int8"] / median["teacher, PyTorch fp32"],
              "student int8 / teacher ONNX fp32": median["student, ONNX int8"] / median["teacher, ONNX fp32"],
              "student PyTorch / teacher PyTorch": median["student, PyTorch fp32"] / median["teacher, PyTorch fp32"]}
    print()
    for k, v in ratios.items():
        print(f"{k}: {v:.1f}x")
    result = {"task": spec.name, "task_ref": a.task, "split": a.split, "inputs": len(ex), "threads": a.threads,
              "batch_size": a.batch_size, "repeats": a.repeats, "student": str(a.student), "teacher": str(a.teacher),
              "sentences_per_s": rates, "median": median, "scores": scores, "ratios": ratios, "env": env.report()}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
