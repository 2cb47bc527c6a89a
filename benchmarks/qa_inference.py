"""QA inference: `wellread predict` (PyTorch, ONNX fp32, ONNX int8) against the Hugging Face QA path.

transformers 5 removed ``pipeline("question-answering")`` (it now raises "The task question-answering
has been removed"), so the baseline is what that pipeline and run_qa.py's evaluation did, written out
here: the fast tokenizer with ``truncation="only_second"``, max_length 384, stride 128 and overflowing
windows, ``AutoModelForQuestionAnswering`` in PyTorch (batches of 32 windows, inference mode), and
the best span over the windows (top 20 starts x ends in the context, at most 30 tokens) cut from the
context by the offsets. Every system answers the same questions (by default the held-out articles of
SQuAD v1.1 dev after the first --train-articles: a split BY ARTICLE) with the same model; EM/F1 are
the official metrics. Prints ``wellread env`` (CPU, instruction sets, versions), then questions/s, EM,
F1 and the speed ratios of every backend installed here (torch, onnx, onnx-int8, openvino, openvino-int8).

Timing: each system answers all the questions ``--repeat`` times, the systems taking turns (the
baseline, then each backend, then again), and the best pass of each counts: on a machine shared with
other work the best pass is the one least disturbed, for every system alike. A pass includes
tokenising, windowing, the model and post-processing (everything but loading the model).

    python benchmarks/qa_inference.py --model RUN/model
    python benchmarks/qa_inference.py --model RUN/model --max-questions 50 --repeat 1   # a quick start check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wellread.data import squad
from wellread.eval.squad import squad_scores
from wellread.infer.qa import QAPredictor, calibration_questions, export_qa_onnx

DATA = Path(os.environ.get("WELLREAD_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def hf_answers(tok, model, examples: list[squad.QAExample], *, chunk: int = 64, batch: int = 32,
               n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """The Hugging Face QA path (what pipeline("question-answering") did): id -> answer text."""
    out: dict[str, str] = {}
    for c in range(0, len(examples), chunk):
        part = examples[c:c + chunk]
        enc = tok([e.question for e in part], [e.context for e in part], truncation="only_second", max_length=384,
                  stride=128, return_overflowing_tokens=True, return_offsets_mapping=True, padding="longest",
                  return_tensors="pt")
        starts, ends = [], []
        with torch.inference_mode():
            for b in range(0, len(enc["input_ids"]), batch):
                o = model(**{k: enc[k][b:b + batch] for k in ("input_ids", "token_type_ids", "attention_mask")})
                starts.append(o.start_logits.numpy())
                ends.append(o.end_logits.numpy())
        s_all, e_all = np.concatenate(starts), np.concatenate(ends)
        best: dict[int, tuple[float, str]] = {}
        for w in range(len(s_all)):
            i = int(enc["overflow_to_sample_mapping"][w])
            seq = enc.sequence_ids(w)
            offsets = enc["offset_mapping"][w].tolist()
            ctx = [j for j, s in enumerate(seq) if s == 1]
            lo, hi = ctx[0], ctx[-1]
            s_idx = np.argsort(-s_all[w][lo:hi + 1])[:n_best] + lo
            e_idx = np.argsort(-e_all[w][lo:hi + 1])[:n_best] + lo
            for s in s_idx:
                for e in e_idx:
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(s_all[w][s] + e_all[w][e])
                    if i not in best or score > best[i][0]:
                        best[i] = (score, part[i].context[offsets[s][0]:offsets[e][1]])
        for i, ex in enumerate(part):
            out[ex.id] = best.get(i, (0.0, ""))[1]
    return out


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return r, time.perf_counter() - t0


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a QA model directory (wellread finetune --task squad)")
    ap.add_argument("--train-articles", type=int, default=38, help="answer the articles after the first N")
    ap.add_argument("--max-questions", type=int, default=None, help="only the first N questions (a quick check)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="passes per system, taking turns; the best counts")
    ap.add_argument("--backends", default=None, help="comma-separated (default: every one installed here)")
    return ap.parse_args(argv)


def main() -> None:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from wellread import env as wellread_env

    a = parse_args()
    torch.set_num_threads(a.threads)
    print(wellread_env.describe(), flush=True)
    sf = squad.read_squad(DATA / "squad" / "dev-v1.1.json", "squad", quiet=True)
    examples = [e for e in sf.examples if e.article >= a.train_articles][:a.max_questions]
    gold = {e.id: [t for t, _ in e.answers] for e in examples}
    backends = a.backends.split(",") if a.backends else list(wellread_env.inference_backends())
    result: dict = {"questions": len(examples), "split": f"SQuAD v1.1 dev, articles {a.train_articles}+ (by article)",
                    "threads": a.threads, "repeat": a.repeat}
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForQuestionAnswering.from_pretrained(a.model).eval()
    systems = {"hf": lambda: hf_answers(tok, model, examples)}
    hf_answers(tok, model, examples[:8])  # warm-up, as each of ours below
    with tempfile.TemporaryDirectory() as tmp:
        # as `wellread export --int8 --task squad` does: OpenVINO's int8 calibrated on 256 training questions
        train = [e for e in sf.examples if e.article < a.train_articles]
        export_qa_onnx(a.model, Path(tmp) / "exp", int8=True, calibration=calibration_questions(train))
        for backend in backends:
            predictor = QAPredictor(a.model if backend == "torch" else Path(tmp) / "exp", backend=backend,
                                    threads=a.threads)
            predictor.predictions(examples[:8])
            result[backend] = {"precision": predictor.precision}
            systems[backend] = lambda p=predictor: p.predictions(examples).text
        best: dict[str, float] = {}
        answers: dict[str, dict] = {}
        for _ in range(a.repeat):
            for name, run in systems.items():
                answers[name], secs = timed(run)
                best[name] = min(best.get(name, float("inf")), secs)
    for name in systems:
        r = squad_scores(gold, answers[name], v2=False)
        result.setdefault(name, {}).update({"questions_per_s": len(examples) / best[name], "seconds": best[name],
                                            "exact_match": r["exact_match"], "f1": r["f1"]})
        if name != "hf":
            result[name]["speedup_vs_hf"] = result[name]["questions_per_s"] / result["hf"]["questions_per_s"]
    result |= {"torch_version": torch.__version__, "machine": platform.processor() or platform.machine()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
