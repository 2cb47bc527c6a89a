"""Extractive QA inference: (question, context) pairs -> answer text, score and character offsets.

A QA model directory is what ``wellread finetune --task squad|squad_v2`` writes: a
``BertForQuestionAnswering`` in the HF layout whose config.json also records the windows it was
trained with (``squad_windows``) and, for v2.0, the null threshold chosen on its held-out questions
(``null_score_diff_threshold``). Long contexts are windowed exactly as in training (never
truncated); answers are post-processed as Google's ``write_predictions``. Backends: PyTorch, and the
ONNX Runtime files of ``wellread export`` (fp32, int8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wellread.data import squad
from wellread.data.batching import collate, eval_batches
from wellread.errors import WellreadError
from wellread.io import model_directory, read_json
from wellread.tokenization import PAD, load_tokenizer

QA_ARCHITECTURE = "BertForQuestionAnswering"
START_END = ("start_logits", "end_logits")


def is_qa_model(path: str | Path) -> bool:
    """Whether a model (or run, or export) directory holds a span-extraction model."""
    try:
        config = read_json(model_directory(path) / "config.json")
    except WellreadError:
        return False
    return isinstance(config, dict) and QA_ARCHITECTURE in (config.get("architectures") or [])


@torch.no_grad()
def predict_spans(model: torch.nn.Module, qf: squad.QAFeatures, *, pad_id: int = 0, max_tokens: int = 16384,
                  device: torch.device | str = "cpu", bf16: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of every token of every window, flat and aligned with ``qf.feats.ids``."""
    was_training = model.training
    model.eval()
    try:
        return _spans(lambda batch: _torch_call(model, batch, device, bf16), qf, pad_id, max_tokens)
    finally:
        model.train(was_training)


def _torch_call(model, batch: dict, device, bf16: bool) -> tuple[np.ndarray, np.ndarray]:
    batch = {k: v.to(device) for k, v in batch.items()}
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        out = model(**batch)
    return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()


def _spans(call, qf: squad.QAFeatures, pad_id: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(qf.feats.ids), dtype=np.float32)
    ends = np.zeros(len(qf.feats.ids), dtype=np.float32)
    lengths = qf.feats.lengths
    for index in eval_batches(lengths, max_tokens=max_tokens):
        s, e = call(collate(qf.feats, index, pad_id))
        for row, i in enumerate(index):
            a, n = qf.feats.offsets[i], lengths[i]
            starts[a:a + n], ends[a:a + n] = s[row, :n], e[row, :n]
    return starts, ends


class QAPredictor:
    """Answers questions about contexts with a fine-tuned span-extraction model.

    ``backend``: torch, onnx (model.onnx) or onnx-int8 (model.int8.onnx, from ``wellread export``).
    ``null_threshold`` (v2.0 models): answer null when the null score beats the best span by more;
    default: the threshold recorded at fine-tuning, else 0.
    """

    def __init__(self, path: str | Path, *, backend: str = "torch", threads: int | None = None,
                 null_threshold: float | None = None, max_tokens: int = 16384) -> None:
        self.path = model_directory(path)
        config = read_json(self.path / "config.json")
        if QA_ARCHITECTURE not in (config.get("architectures") or []):
            raise WellreadError(f"not a question-answering model (architectures: {config.get('architectures')})",
                                file=self.path / "config.json", field="architectures")
        self.tok = load_tokenizer(self.path)
        self.pad_id = self.tok.token_to_id(PAD)
        windows = config.get("squad_windows") or {}
        self.windows = {"max_seq_length": min(int(windows.get("max_seq_length", 384)),
                                              int(config.get("max_position_embeddings", 512))),
                        "doc_stride": int(windows.get("doc_stride", 128)),
                        "max_query_length": int(windows.get("max_query_length", 64))}
        self.v2 = config.get("finetuning_task") == "squad_v2"
        self.null_threshold = float(null_threshold if null_threshold is not None
                                    else config.get("null_score_diff_threshold", 0.0))
        self.backend = backend
        self.max_tokens = max_tokens
        if threads:
            torch.set_num_threads(threads)
        if backend == "torch":
            self.model = load_qa_model(self.path)
            self._call = lambda batch: _torch_call(self.model, batch, "cpu", False)
        elif backend in ("onnx", "onnx-int8"):
            self._call = _onnx_session(self.path, backend, threads)
        else:
            raise WellreadError(f"unknown backend {backend!r} (torch, onnx, onnx-int8)", field="backend")

    def predictions(self, examples: list[squad.QAExample]) -> squad.Predictions:
        """Post-processed answers (text, nbest, null odds) for many questions."""
        qf = squad.preprocess(self.tok, examples, **self.windows)
        with torch.inference_mode():
            starts, ends = _spans(self._call, qf, self.pad_id, self.max_tokens)
        return squad.postprocess(examples, qf, starts, ends, v2=self.v2, null_threshold=self.null_threshold)

    def answer(self, pairs: list[tuple[str, str]]) -> list[dict]:
        """{"answer", "score" (probability among the n best), "start", "end" (character offsets; -1 for null)}."""
        examples = []
        for i, (question, context) in enumerate(pairs):
            if not question.strip():
                raise WellreadError(f"input {i + 1}: the question is empty", field="question")
            if not context.strip():
                raise WellreadError(f"input {i + 1}: the context is empty", field="context")
            examples.append(squad.QAExample(str(i), question.strip(), context, (), False, 0))
        preds = self.predictions(examples)
        out = []
        for ex in examples:
            text = preds.text[ex.id]
            best = next(x for x in preds.nbest[ex.id] if x["text"] == text)
            row = {"answer": text, "score": best["probability"], "start": best["start"], "end": best["end"]}
            if self.v2:
                row["null_odds"] = preds.null_odds[ex.id]
            out.append(row)
        return out


def load_qa_model(path: Path):
    """A ``BertForQuestionAnswering`` loaded strictly: every tensor present with its shape."""
    from transformers import BertForQuestionAnswering

    from wellread import modeling

    model = BertForQuestionAnswering(modeling.read_config(path))
    expected = model.state_dict()
    state = modeling.align_prefix(modeling.read_weights(path), set(expected))
    missing = [k for k in expected if k not in state and not k.endswith("position_ids")]
    if missing:
        raise WellreadError(f"incomplete question-answering model: missing {', '.join(missing[:3])}",
                            file=path / "model.safetensors")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    except RuntimeError as e:
        raise WellreadError(f"weights do not fit config.json: {str(e).splitlines()[-1].strip()}",
                            file=path / "model.safetensors") from None
    return model.eval()


def _onnx_session(path: Path, backend: str, threads: int | None):
    from wellread.infer.predictor import ONNX_FILES, default_threads, ort_session

    name = ONNX_FILES[backend]
    if not (path / name).is_file():
        raise WellreadError(f"no {name} here; run `wellread export --model MODEL --out DIR"
                            f"{' --int8' if 'int8' in backend else ''}` and give DIR", file=path)
    session = ort_session(path / name, threads or default_threads())

    def call(batch: dict) -> tuple[np.ndarray, np.ndarray]:
        feed = {k: batch[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        s, e = session.run(list(START_END), feed)
        return s, e

    return call


def write_predictions(file: Path, preds: squad.Predictions, *, v2: bool) -> None:
    """``file`` (predictions.json: id -> text, what the official scripts read), and beside it
    nbest_predictions.json and, for v2.0, null_odds.json (the official script's --na-prob-file)."""
    from wellread.io import atomic_write_json

    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, preds.text)
    atomic_write_json(file.parent / "nbest_predictions.json", preds.nbest)
    if v2:
        atomic_write_json(file.parent / "null_odds.json", preds.null_odds)


def evaluate_qa_model(model: str | Path, task: str, data_dir: str | Path, *, split: str | None = None,
                      predictions_out: Path | None = None, backend: str = "torch") -> dict:
    """Score a QA model with the official metrics on a SQuAD file (all of it, or one side of its run's split).

    ``split``: None/"all" scores every question; "test" / "train" the held-out / training articles of the
    fine-tuning run whose directory ``model`` is (read from its results.json). With ``predictions_out``,
    writes predictions.json there (nbest_predictions.json and null_odds.json beside it).
    """
    from wellread.eval.squad import squad_scores

    predictor = QAPredictor(model, backend=backend)
    sf = squad.read_squad(squad.squad_path(task, data_dir), task)
    examples = sf.examples
    if split not in (None, "all"):
        if split not in ("train", "test"):
            raise WellreadError(f"unknown split {split!r} for {task} (all, train, test)", field="split")
        results = Path(model) / "results.json"
        run = read_json(results, missing="--split train/test needs the fine-tuning run directory (its "
                                          "results.json records the split by article)") if results.is_file() else None
        if not run or (run.get("split") or {}).get("kind") != "by_article":
            raise WellreadError("no by-article split recorded; give the run directory, or --split all", file=model)
        n = run["split"]["train_articles"]
        examples = [e for e in examples if (e.article < n) == (split == "train")]
    preds = predictor.predictions(examples)
    gold = {e.id: [a for a, _ in e.answers] for e in examples}
    r = squad_scores(gold, preds.text, v2=task == "squad_v2", na_probs=preds.null_odds if predictor.v2 else None)
    if predictions_out is not None:
        write_predictions(Path(predictions_out), preds, v2=predictor.v2)
    return {"task": task, "model": str(predictor.path), "file": str(sf.path), "split": split or "all", **r}
