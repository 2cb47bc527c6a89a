"""QA inference: `wellread predict` (PyTorch, ONNX fp32, ONNX int8) against the Hugging Face QA path.

transformers 5 removed ``pipeline("question-answering")`` (it now raises "The task question-answering
has been removed"), so the baseline is what that pipeline and run_qa.py's evaluation did, written out
here: the fast tokenizer with ``truncation="only_second"``, max_length 384, stride 128 and overflowing
windows, ``AutoModelForQuestionAnswering`` in PyTorch (batches of 32 windows, inference mode), and
the best span over the windows (top 20 starts x ends in the context, at most 30 tokens) cut from the
context by the offsets. Every system answers the same questions (by default the held-out articles of
SQuAD v1.1 dev after the first --train-articles: a split BY ARTICLE) with the same model; EM/F1 are
the official metrics. Prints questions/s, EM, F1 and the speed ratios.

    python benchmarks/qa_inference.py --model RUN/model
    python benchmarks/qa_inference.py --model RUN/model --max-questions 50   # a quick start check
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
from wellread.infer.qa import QAPredictor, export_qa_onnx

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a QA model directory (wellread finetune --task squad)")
    ap.add_argument("--train-articles", type=int, default=38, help="answer the articles after the first N")
    ap.add_argument("--max-questions", type=int, default=None, help="only the first N questions (a quick check)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    sf = squad.read_squad(DATA / "squad" / "dev-v1.1.json", "squad", quiet=True)
    examples = [e for e in sf.examples if e.article >= a.train_articles][:a.max_questions]
    gold = {e.id: [t for t, _ in e.answers] for e in examples}
    result: dict = {"questions": len(examples), "split": f"SQuAD v1.1 dev, articles {a.train_articles}+ (by article)"}
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForQuestionAnswering.from_pretrained(a.model).eval()
    hf_answers(tok, model, examples[:8])  # warm-up, as each of ours below
    base, secs = timed(lambda: hf_answers(tok, model, examples))
    r = squad_scores(gold, base, v2=False)
    result["hf"] = {"questions_per_s": len(examples) / secs, "exact_match": r["exact_match"], "f1": r["f1"]}
    with tempfile.TemporaryDirectory() as tmp:
        export_qa_onnx(a.model, Path(tmp) / "exp", int8=True)
        for backend, where in (("torch", a.model), ("onnx", Path(tmp) / "exp"), ("onnx-int8", Path(tmp) / "exp")):
            predictor = QAPredictor(where, backend=backend, threads=a.threads)
            predictor.predictions(examples[:8])
            preds, secs = timed(lambda: predictor.predictions(examples).text)  # noqa: B023
            r = squad_scores(gold, preds, v2=False)
            result[backend] = {"questions_per_s": len(examples) / secs, "exact_match": r["exact_match"], "f1": r["f1"],
                               "speedup_vs_hf": (len(examples) / secs) / result["hf"]["questions_per_s"]}
    result |= {"torch_version": torch.__version__, "threads": a.threads, "machine": platform.processor() or platform.machine()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
