"""Extractive QA inference: (question, context) pairs -> answer text, score and character offsets.

A QA model directory is what ``wellread finetune --task squad|squad_v2`` writes: a
``BertForQuestionAnswering`` in the HF layout whose config.json also records the windows it was
trained with (``squad_windows``) and, for v2.0, the null threshold chosen on its held-out questions
(``null_score_diff_threshold``). Long contexts are windowed exactly as in training (never
truncated); answers are post-processed as Google's ``write_predictions``. Backends: PyTorch, the
ONNX Runtime files of ``wellread export`` (fp32, int8), and OpenVINO on the same model.onnx (bf16 where
the CPU has it natively: AMX, AVX-512-BF16), chosen by ``--backend`` as for classification.
"""

from __future__ import annotations

import json
import random
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wellread import env
from wellread.data import squad
from wellread.data.batching import collate, eval_batches
from wellread.errors import WellreadError
from wellread.eval.squad import squad_scores
from wellread.infer.onnx import EXPORT_FILES, FP32_TOLERANCE, INT8_OPS, finish_files, int8_backends
from wellread.infer.predictor import INPUT_NAMES, ONNX_FILES, default_threads, ort_session
from wellread.infer.stream import atomic_output, read_records
from wellread.io import atomic_directory, atomic_write_json, check_output_dir, model_directory, read_json
from wellread.tokenization import PAD, load_tokenizer

QA_ARCHITECTURE = "BertForQuestionAnswering"
CALIBRATION_QUESTIONS = 256  # training questions whose windows calibrate the OpenVINO int8 model
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
    with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
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
        from wellread.infer.predictor import check_backend

        backend = check_backend(backend)  # auto: the backend this CPU runs fastest; openvino: installed
        self.backend = backend
        self.precision = "int8" if backend == "onnx-int8" else "fp32"
        self.max_tokens = max_tokens
        if threads:
            torch.set_num_threads(threads)
        if backend == "torch":
            self.model = load_qa_model(self.path)
            self._call = lambda batch: _torch_call(self.model, batch, "cpu", False)
        elif backend in ("onnx", "onnx-int8"):
            self._call = _onnx_session(self.path, backend, threads)
        else:
            self._call, self.precision = _openvino_call(self.path, threads, backend)

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
    from wellread.modeling.models import load_model

    weights = Path(path) / "model.safetensors"
    if not weights.is_file() and not (Path(path) / "pytorch_model.bin").is_file():
        raise WellreadError("no model.safetensors here (an export directory holds ONNX only: use --backend onnx "
                            "or onnx-int8, or the fine-tuned model directory)", file=path)
    return load_model(path, "qa")


def _onnx_session(path: Path, backend: str, threads: int | None):
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


def _openvino_call(path: Path, threads: int | None, backend: str = "openvino"):
    """OpenVINO on model.onnx, in bf16 where the CPU has it natively (AMX, AVX-512-BF16), else fp32
    (``openvino-int8``: model.int8.xml, its products in int8); one inference stream on ``threads`` threads.
    Returns (call, precision)."""
    import openvino as ov

    from wellread.infer.openvino import precision_hint, read_graph

    file = path / ONNX_FILES[backend]
    if not file.is_file():
        raise WellreadError(f"no {file.name} here; run `wellread export --model MODEL --out DIR"
                            f"{' --int8' if 'int8' in backend else ''}` and give DIR", file=path)
    core = ov.Core()
    graph = read_graph(core, file)
    names = {i.get_any_name() for i in graph.inputs}
    if names != set(INPUT_NAMES):
        raise WellreadError(f"the model's inputs are {sorted(names)}, expected {list(INPUT_NAMES)}", file=file)
    precision, hint = precision_hint(backend)
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "INFERENCE_NUM_THREADS": threads or default_threads(),
                                                 "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    request = compiled.create_infer_request()
    outputs = [compiled.output(name) for name in START_END]

    def call(batch: dict) -> tuple[np.ndarray, np.ndarray]:
        result = request.infer({k: batch[k].numpy().astype(np.int64) for k in INPUT_NAMES})
        return result[outputs[0]].copy(), result[outputs[1]].copy()

    return call, precision


def write_predictions(file: Path, preds: squad.Predictions, *, v2: bool) -> None:
    """``file`` (predictions.json: id -> text, what the official scripts read), and beside it
    nbest_predictions.json and, for v2.0, null_odds.json (the official script's --na-prob-file)."""
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


class QAService:
    """``QAPredictor`` behind the interface ``wellread serve`` calls: ``predict(questions, contexts)``."""

    labels = None

    def __init__(self, predictor: QAPredictor) -> None:
        self.qa = predictor
        self.path = predictor.path

    def predict(self, texts_a: list[str], texts_b: list[str | None]) -> list[dict]:
        for i, b in enumerate(texts_b):
            if b is None:
                raise WellreadError(f"input {i + 1} has no context (give question and context)", field="context")
        return self.qa.answer(list(zip(texts_a, texts_b)))

    def describe(self) -> dict:
        return {"model": str(self.path), "backend": self.qa.backend, "precision": self.qa.precision,
                "kind": "question-answering",
                "version_2_with_negative": self.qa.v2, "null_threshold": self.qa.null_threshold, **self.qa.windows}


def predict_qa_file(predictor: QAPredictor, input: str | Path, output: str | Path, *, text_a: str | None = None,
                    text_b: str | None = None, chunk_size: int = 4096) -> dict:
    """Answer every (question, context) of ``input`` into ``output``.

    ``input``: a SQuAD JSON file (its questions, by id), or .jsonl / .tsv / stdin records with
    ``question`` and ``context`` fields (or --text-a / --text-b). ``output``: .jsonl records
    ({id, answer, score, start, end}), or .json: {id: answer}, the official predictions file.
    """
    t0 = time.perf_counter()
    input, output = str(input), str(output)
    rows: list[tuple[object, dict]] = []
    if input.endswith(".json"):
        sf = squad.read_squad(input, "squad_v2" if predictor.v2 else "squad")
        preds = predictor.predictions(sf.examples)
        for e in sf.examples:
            best = next(x for x in preds.nbest[e.id] if x["text"] == preds.text[e.id])
            rows.append((e.id, {"answer": preds.text[e.id], "score": best["probability"], "start": best["start"],
                                "end": best["end"]}))
    else:
        batch: list = []
        records = read_records(input, text_a=text_a or "question", text_b=text_b or "context")

        def flush() -> None:
            answers = QAService(predictor).predict([r.text_a for r in batch], [r.text_b for r in batch])
            rows.extend((r.id, a) for r, a in zip(batch, answers))
            batch.clear()

        for r in records:
            batch.append(r)
            if len(batch) == chunk_size:
                flush()
        if batch:
            flush()
    with atomic_output(output) as f:
        if output.endswith(".json"):
            if any(i is None for i, _ in rows):
                raise WellreadError("a .json output maps ids to answers: the inputs need an id field", field="output")
            f.write(json.dumps({str(i): a["answer"] for i, a in rows}, ensure_ascii=False))
        else:
            for i, a in rows:
                f.write(json.dumps(({"id": i} if i is not None else {}) | a, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - t0
    return {"inputs": len(rows), "seconds": seconds, "inputs_per_s": len(rows) / max(seconds, 1e-9)}


# Built-in check inputs for the export: short and long contexts (one needing several windows).
CHECK_QA = [
    ("Which team won Super Bowl 50?", "Super Bowl 50 was an American football game. The Denver Broncos defeated the "
     "Carolina Panthers 24-10 to earn their third Super Bowl title."),
    ("Where is the treasure?", " ".join(["The old village has narrow streets, a market square and a church."] * 60)
     + " The treasure is buried under the old oak tree by the river."),
    ("When was the university founded?", "The university was founded in 1851 and admitted its first students two "
     "years later; its library holds four million volumes."),
    ("What colour is the sky?", "On a clear day the sky over the plains is a deep blue, turning orange at dusk."),
    ("Who wrote the report?", "The committee, chaired by Dr. Ana Lima, published its report after the hearings."),
]


def export_qa_onnx(model_dir: str | Path, out: str | Path, *, int8: bool = False, opset: int = 17,
                   calibration: list[squad.QAExample] | None = None,
                   gate: Callable[[Path], dict] | None = None) -> dict:
    """``wellread export`` for a QA model: model.onnx (start_logits, end_logits), model.int8.onnx and, where
    OpenVINO and NNCF are installed, model.int8.xml/.bin (static int8, its activation ranges from the windows
    of ``calibration`` questions, else of the built-in check questions).

    The int8 weights have one scale per output column (``per_channel``): with one scale per matrix the
    fine-tuned all-MiniLM-L6-v2 lost 2.9 F1 on held-out SQuAD questions (30.1 against PyTorch's 33.0),
    with one per column 0.9 (32.2), for about 3% more time (docs/qa.md).

    Checked against PyTorch on the built-in (question, context) pairs, all windows: an fp32 export
    whose per-window start/end probabilities differ by more than 1e-4 is an error and nothing is
    written; ``label_agreement`` is the share of questions given the same answer text. ``gate``: as for
    classification (``qa_int8_gate``), called on the finished files before they are kept.
    """
    path = model_directory(model_dir)
    out = check_output_dir(out, allowed=EXPORT_FILES)
    reference = QAPredictor(path)
    examples = [squad.QAExample(str(i), q, c, (), False, 0) for i, (q, c) in enumerate(CHECK_QA)]
    qf = squad.preprocess(reference.tok, examples, **reference.windows)
    example = collate(qf.feats, np.arange(min(3, len(qf))), reference.pad_id)

    with atomic_directory(out) as tmp:
        wrapper, graph = _qa_graph(reference.model.eval(), {k: v.numpy() for k, v in example.items()})
        wrapper.eval()
        axes = {k: {0: "batch", 1: "sequence"} for k in (*INPUT_NAMES, *START_END)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(example[k] for k in INPUT_NAMES), str(tmp / "model.onnx"), dynamo=False,
                              input_names=list(INPUT_NAMES), output_names=list(START_END), dynamic_axes=axes,
                              opset_version=opset, do_constant_folding=True)
        finish_files(tmp, path, out, int8=int8, per_channel=True)
        ov_int8 = None
        if "openvino-int8" in int8_backends(int8):
            from wellread.infer.openvino import quantize

            cal = squad.preprocess(reference.tok, calibration or examples, **reference.windows)
            batches = [{k: v.numpy().astype(np.int64) for k, v in collate(cal.feats, index, reference.pad_id).items()}
                       for index in eval_batches(cal.feats.lengths, max_tokens=8 * reference.windows["max_seq_length"])]
            ov_int8 = quantize(tmp / "model.onnx", tmp, batches)
            ov_int8["calibration"] = (f"{len(calibration)} given questions" if calibration
                                      else "the built-in check questions")
        ref_s, ref_e = _spans(reference._call, qf, reference.pad_id, 16384)
        ref_answers = reference.predictions(examples).text
        checks = {}
        # OpenVINO runs model.onnx itself (in bf16 where the CPU has it): checked too where it is installed
        for backend in ("onnx", *int8_backends(int8), *(("openvino",) if env.have("openvino") else ())):
            other = QAPredictor(tmp, backend=backend)
            s, e = _spans(other._call, qf, other.pad_id, 16384)
            diff = max(_window_prob_diff(qf, ref_s, s), _window_prob_diff(qf, ref_e, e))
            answers = other.predictions(examples).text
            same = np.mean([answers[k] == ref_answers[k] for k in ref_answers])
            checks[backend] = {"n": len(examples), "windows": len(qf), "max_abs_diff_probability": diff,
                               "label_agreement": float(same), "precision": other.precision}
        if checks["onnx"]["max_abs_diff_probability"] > FP32_TOLERANCE:
            raise WellreadError(f"the ONNX export disagrees with PyTorch (max difference "
                                f"{checks['onnx']['max_abs_diff_probability']:.2e} > {FP32_TOLERANCE:g}); nothing "
                                "written", file=out)
        gated = gate(tmp) if gate is not None else None
        files = {f.name: f.stat().st_size for f in sorted(tmp.iterdir())}
        record = {"model": str(path), "task": "question-answering", "exporter": "torch.onnx.export (dynamo=False)",
                  "opset": opset, "graph": graph, "inputs": list(INPUT_NAMES),
                  "outputs": list(START_END), "dynamic_axes": ["batch", "sequence"],
                  "int8": {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                           "per_channel": True, "op_types_to_quantize": INT8_OPS} if int8 else None,
                  "openvino_int8": ov_int8, "check": {"reference": "PyTorch (the same weights)", **checks},
                  **({"int8_gate": gated} if gated is not None else {}), "files": files}
        atomic_write_json(tmp / "export.json", record)
    for backend in ("onnx-int8", "openvino-int8", "openvino"):
        if backend in checks and checks[backend]["label_agreement"] < 0.95:
            print(f"note: {backend} ({checks[backend]['precision']}) gives PyTorch's answer on only "
                  f"{checks[backend]['label_agreement']:.0%} of the check questions", file=sys.stderr)
    return record


def qa_gate_data(model: str | Path, task: str, data_dir: str | Path) -> tuple[list[squad.QAExample],
                                                                            list[squad.QAExample], dict]:
    """(calibration questions, gate questions, what they are) for exporting a QA model: the split its
    fine-tuning run recorded (results.json in the run directory, or beside its model/), else the one
    ``wellread finetune`` would make (the official train and dev files; else 80% of the articles by article)."""
    path = Path(model)
    run = next((read_json(d / "results.json") for d in (path, path.parent) if (d / "results.json").is_file()), None)
    split = (run or {}).get("split") or {}
    data_dir = Path(data_dir)
    dev = squad.read_squad(squad.squad_path(task, data_dir), task, quiet=True)
    if split.get("kind") == "by_article" or not (data_dir.is_dir() and (data_dir / squad.TRAIN_FILES[task]).is_file()):
        n = int(split.get("train_articles") or round(0.8 * len(dev.titles)))
        train_a, test_a = squad.split_by_article(len(dev.titles), n)
        where = {"kind": "by_article", "file": str(dev.path), "train_articles": n,
                 "from": "the fine-tuning run" if split else "the default split (80% of the articles)"}
        return dev.subset(train_a), dev.subset(test_a), where
    train = squad.read_squad(data_dir / squad.TRAIN_FILES[task], task, quiet=True)
    return train.examples, dev.examples, {"kind": "official", "train": str(train.path), "test": str(dev.path)}


def calibration_questions(train: list[squad.QAExample]) -> list[squad.QAExample]:
    """A seeded sample of training questions whose windows calibrate the OpenVINO int8 QA model."""
    return random.Random(0).sample(train, min(CALIBRATION_QUESTIONS, len(train)))


def qa_int8_gate(export_dir: Path, examples: list[squad.QAExample], max_drop: float, *, v2: bool,
                 threads: int | None = None) -> dict:
    """The int8 gate for QA: EM and F1 of each int8 model of ``export_dir`` and of its fp32 self (model.onnx)
    on ``examples``; an int8 model passes when it loses at most ``max_drop`` points of either."""
    from wellread.infer.gate import present_int8

    gold = {e.id: [a for a, _ in e.answers] for e in examples}

    def score(backend: str) -> dict:
        preds = QAPredictor(export_dir, backend=backend, threads=threads).predictions(examples)
        r = squad_scores(gold, preds.text, v2=v2, na_probs=preds.null_odds if v2 else None)
        return {"exact_match": r["exact_match"], "f1": r["f1"]}

    fp32 = score("onnx")
    backends = {}
    for backend in present_int8(export_dir):
        r = score(backend)
        drop = max(fp32["exact_match"] - r["exact_match"], fp32["f1"] - r["f1"])
        backends[backend] = {"int8": r["f1"] / 100, "int8_metrics": r, "drop_points": drop, "passed": drop <= max_drop}
    return {"split": "held-out questions", "n": len(examples), "fp32": fp32["f1"] / 100, "fp32_metrics": fp32,
            "metric": "F1 (a model passes when neither EM nor F1 drops by more)", "max_drop_points": max_drop,
            "backends": backends, "passed": all(r["passed"] for r in backends.values())}


class SpanLogits(torch.nn.Module):
    """Start and end logits of every token, BERT's layers written out as ``wellread.infer.onnx._layer``.

    The same products as the transformers forward, traced into a plainer graph: the attention mask is
    added to the scores (transformers 5 traces its mask as ``Where`` over every score and an ``IsNaN``
    guard after the softmax, which took about a fifth of ONNX Runtime's time on 384-token windows).
    The export compares it with the transformers forward and keeps that one if they differ.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        from wellread.infer.onnx import _layer, embed_and_mask

        bert = self.model.bert
        h, mask = embed_and_mask(bert, input_ids, attention_mask, token_type_ids)
        for layer in bert.encoder.layer:
            h = _layer(layer, h, mask)
        logits = self.model.qa_outputs(h)
        return logits[..., 0], logits[..., 1]


class FullSpans(torch.nn.Module):
    """The transformers forward, positional inputs in INPUT_NAMES order, (start_logits, end_logits) out."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        o = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return o.start_logits, o.end_logits


def _qa_graph(model, example: dict[str, np.ndarray]) -> tuple[torch.nn.Module, str]:
    """SpanLogits when the model is a plain BERT QA model and agrees with transformers on ``example``'s
    real tokens, else FullSpans."""
    config = model.config
    plain = (type(model).__name__ == QA_ARCHITECTURE and not config.is_decoder
             and not getattr(config, "add_cross_attention", False)
             and getattr(config, "position_embedding_type", "absolute") == "absolute"
             and all(type(m).__name__ == "BertLayer" for m in model.bert.encoder.layer))
    if plain:
        args = {k: torch.from_numpy(v) for k, v in example.items()}
        real = args["attention_mask"].bool()
        with torch.inference_mode():
            fast, full = SpanLogits(model).eval()(**args), FullSpans(model).eval()(**args)
        if all(torch.allclose(a[real], b[real], atol=1e-5, rtol=0) for a, b in zip(fast, full)):
            return SpanLogits(model), "layers written out (additive attention mask)"
    return FullSpans(model), "the transformers forward"


def _window_prob_diff(qf: squad.QAFeatures, a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of the per-window softmax probabilities of two flat logit arrays."""
    worst = 0.0
    for f in range(len(qf)):
        lo, hi = qf.feats.offsets[f], qf.feats.offsets[f + 1]
        pa, pb = np.exp(a[lo:hi] - a[lo:hi].max()), np.exp(b[lo:hi] - b[lo:hi].max())
        worst = max(worst, float(np.abs(pa / pa.sum() - pb / pb.sum()).max()))
    return worst
