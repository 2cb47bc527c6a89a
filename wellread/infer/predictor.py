"""One ``Predictor`` over its backends: PyTorch, ONNX Runtime fp32 and int8, and OpenVINO.

What makes it fast on a CPU is shared by all three backends: the Rust tokenizer encodes a whole list
at once; inputs are sorted by length and cut into batches padded only to their own longest input
(dynamic padding), so short sentences do not pay for long ones; PyTorch runs under
``inference_mode``; ONNX Runtime runs with every graph optimisation, several batches side by side
(one per core); OpenVINO runs the same ONNX graph in bf16 on CPUs where bf16 is native (AMX,
AVX-512-BF16), with one inference stream per core, and ``openvino-int8`` the static int8 model that
``wellread export --int8`` calibrates with NNCF (``wellread.infer.openvino``). ``auto`` picks the backend this CPU runs fastest
(``wellread.env.auto_backend``). Results always come back in input order.

A model directory is what ``wellread finetune`` writes (HF layout, ``id2label`` in config.json; one
output with ``problem_type: regression`` is a score), or what ``wellread export`` writes (the same
config and tokenizer, plus model.onnx / model.int8.onnx / model.int8.xml). ONNX and OpenVINO backends on a directory without the
.onnx file export it on the fly (checked against PyTorch) and say so on stderr.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from wellread import env
from wellread.errors import WellreadError
from wellread.io import model_directory, read_json
from wellread.tokenization import PAD, check_vocabulary, load_tokenizer

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "auto")
# the file each exported backend runs (openvino-int8: OpenVINO IR, its weights in model.int8.bin beside it)
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "openvino": "model.onnx",
              "openvino-int8": "model.int8.xml"}
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def backend_files(backend: str) -> tuple[str, ...]:
    """Every file an exported backend reads (the OpenVINO IR is a graph and its weights)."""
    name = ONNX_FILES[backend]
    return (name, name.removesuffix(".xml") + ".bin") if name.endswith(".xml") else (name,)


def check_backend(backend: str) -> str:
    """The backend to run: ``auto`` resolved for this CPU; an unknown or uninstalled one refused in one line."""
    if backend not in BACKENDS:
        raise WellreadError(f"unknown backend {backend!r} (choose {', '.join(BACKENDS)})", field="backend")
    if backend == "auto":
        return env.auto_backend()
    if backend not in env.inference_backends():
        package = backend.removesuffix("-int8")
        raise WellreadError(f"the {backend} backend needs the package {package}: pip install {package}",
                            field="backend")
    return backend


def output_labels(config: dict, path: Path) -> tuple[str, ...] | None:
    """The label name of each output (config.json's id2label), or None for a one-score regression model."""
    where = {"file": path / "config.json"}
    n = config.get("num_labels")
    id2label = config.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise WellreadError("id2label must be a mapping of output id to label name", field="id2label", **where)
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise WellreadError("id2label keys must be output ids (0, 1, ...)", field="id2label", **where) from None
    n = n if isinstance(n, int) else len(names)
    if n < 1:
        raise WellreadError("not a fine-tuned classifier: no id2label / num_labels", field="id2label", **where)
    if n == 1 and config.get("problem_type") in (None, "regression"):
        return None
    if n == 1:
        raise WellreadError(f"one output with problem_type {config.get('problem_type')!r}: not a classifier nor "
                            "a regression model", field="problem_type", **where)
    labels = tuple(names.get(i, f"LABEL_{i}") for i in range(n))
    if len(set(labels)) != n:
        raise WellreadError(f"label names repeat: {list(labels)}", field="id2label", **where)
    return labels


def default_threads() -> int:
    """Threads for the model: $OMP_NUM_THREADS when set, else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def load_torch_classifier(path: Path):
    """A ``BertForSequenceClassification`` loaded strictly: every tensor present with its shape."""
    from wellread.modeling.models import load_classifier

    weights = path / "model.safetensors"
    if not weights.is_file() and not (path / "pytorch_model.bin").is_file():
        raise WellreadError("no model.safetensors here (an export directory holds ONNX only: use --backend onnx "
                            "or onnx-int8, or the fine-tuned model directory)", file=path)
    return load_classifier(path)


def ort_session(model: str | Path | bytes, threads: int):
    """An ONNX Runtime CPU session: all graph optimisations, ``threads`` intra-op threads, no spinning.

    Spinning (worker threads busy-waiting for the next job) is off: on a machine whose cores are
    shared with other work, and between the tokenisation steps of our own loop, the spinning threads
    only take CPU time from the work that matters.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                providers=["CPUExecutionProvider"])


class Predictor:
    """Labels and probabilities (or a score) for sentences and sentence pairs, on one backend.

    ``backend``: ``torch``, ``onnx`` (fp32, equal to PyTorch to ~1e-6) or ``onnx-int8`` (weights
    quantised to int8, activations quantised per batch: results move slightly with the batch an input
    falls in). ``batch_size`` caps the inputs of one model call; inputs longer than ``max_length``
    tokens are truncated (pairs longest-first, as fine-tuning did). ``onnx_model``: the ONNX graph's bytes
    (an export made on the fly, ``wellread.infer.loading``) instead of the directory's file.
    """

    def __init__(self, model_dir: str | Path, *, backend: str = "torch", max_length: int = 128,
                 batch_size: int = 64, threads: int | None = None,
                 onnx_model: bytes | tuple[bytes, bytes] | None = None) -> None:
        backend = check_backend(backend)
        if batch_size < 1:
            raise WellreadError("must be at least 1", field="batch_size")
        self.path = model_directory(model_dir)
        self.config = read_json(self.path / "config.json")
        if not isinstance(self.config, dict):
            raise WellreadError("expected a JSON object", file=self.path / "config.json")
        self.labels = output_labels(self.config, self.path)
        self.backend = backend
        self.precision = "int8" if backend == "onnx-int8" else "fp32"
        self.batch_size = batch_size
        self.threads = threads or default_threads()
        self.max_length = min(max_length, int(self.config.get("max_position_embeddings", max_length)))
        if self.max_length < 8:
            raise WellreadError("must be at least 8", field="max_length")
        tok = load_tokenizer(self.path)
        check_vocabulary(tok, self.config.get("vocab_size"), self.path)
        # A private copy with truncation on: encode_batch then does all the work in Rust.
        self.tokenizer = Tokenizer.from_str(tok.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_length, strategy="longest_first")
        self.pad_id = tok.token_to_id(PAD)
        if backend == "torch":
            self._run = self._torch_runner()
        elif backend.startswith("openvino"):
            self._run = self._openvino_runner(onnx_model)
        else:
            self._run = self._onnx_runner(onnx_model)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    # --- backends ------------------------------------------------------------------------------

    def _torch_runner(self) -> Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]:
        import torch

        model = load_torch_classifier(self.path)
        threads = self.threads

        def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            with torch.inference_mode():
                return [model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy()
                        for b in batches]

        return run

    def _onnx_runner(self, onnx_model: bytes | None) -> Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]:
        """Several batches run side by side, one per thread, each with one intra-op thread: for Tiny's
        128-wide products that scales better than splitting every product over the cores (measured
        on 2 cores: ~10,600 vs ~8,400 sentences/s at best). A lone batch (batch-1 latency, the
        service's micro-batches) gets a session with all the threads instead."""
        file, model = self._onnx_model(onnx_model)
        wide = ort_session(model, self.threads)
        names = {i.name for i in wide.get_inputs()}
        if names != set(INPUT_NAMES):
            raise WellreadError(f"the ONNX model's inputs are {sorted(names)}, expected {list(INPUT_NAMES)}", file=file)
        if self.threads == 1:
            return lambda batches: [wide.run(["logits"], b)[0] for b in batches]
        narrow = ort_session(model, 1)  # ONNX Runtime sessions may run from several threads at once
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="wellread-ort")

        def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
            if len(batches) == 1:
                return [wide.run(["logits"], batches[0])[0]]
            return list(pool.map(lambda b: narrow.run(["logits"], b)[0], batches))

        return run

    def _onnx_model(self, onnx_model: bytes | tuple[bytes, bytes] | None) -> tuple[Path, Path | bytes | tuple]:
        """The backend's ONNX file, or the bytes given for it (an export made on the fly)."""
        file = self.path / ONNX_FILES[self.backend]
        if onnx_model is not None:
            return file, onnx_model
        if file.is_file():
            return file, file
        raise WellreadError(f"no {file.name} here: run `wellread export{' --int8' if 'int8' in self.backend else ''}` "
                            "(or open the model with "
                            "wellread.infer.loading.open_predictor, which exports it on the fly)", file=self.path)

    def _openvino_runner(self, onnx_model: bytes | tuple[bytes, bytes] | None
                         ) -> Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]:
        """OpenVINO on model.onnx, in bf16 where the CPU has it natively (AMX, AVX-512-BF16), else fp32;
        ``openvino-int8``: on model.int8.xml, its products in int8 and the rest as above.

        As with ONNX Runtime, a lone batch runs on all the threads (latency), several batches run side
        by side on one inference stream per thread (throughput). bf16 moves probabilities by ~1e-3
        (``wellread export`` records how far from PyTorch on its check inputs).
        """
        import openvino as ov

        from wellread.infer.openvino import precision_hint, read_graph

        file, model = self._onnx_model(onnx_model)
        core = ov.Core()
        graph = read_graph(core, model)
        names = {i.get_any_name() for i in graph.inputs}
        if names != set(INPUT_NAMES):
            raise WellreadError(f"the model's inputs are {sorted(names)}, expected {list(INPUT_NAMES)}", file=file)
        self.precision, hint = precision_hint(self.backend)
        common = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads}
        wide = core.compile_model(graph, "CPU", {**common, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
        wide_request = wide.create_infer_request()
        narrow = core.compile_model(graph, "CPU", {**common, "PERFORMANCE_HINT": "THROUGHPUT",
                                                   "NUM_STREAMS": self.threads})
        queue = ov.AsyncInferQueue(narrow, self.threads)
        lock = threading.Lock()  # one request queue: calls from several threads take turns

        def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
            with lock:
                if len(batches) == 1 or self.threads == 1:
                    return [wide_request.infer(b)[0].copy() for b in batches]
                out: list[np.ndarray | None] = [None] * len(batches)
                queue.set_callback(lambda request, i: out.__setitem__(i, request.get_output_tensor(0).data.copy()))
                for i, b in enumerate(batches):
                    queue.start_async(b, i)
                queue.wait_all()
                return out  # type: ignore[return-value]

        return run

    # --- the work ------------------------------------------------------------------------------

    def encode(self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None = None) -> list:
        """``tokenizers.Encoding`` of each input ([CLS] a [SEP] (b [SEP])), truncated to ``max_length``.

        ``encode_batch_fast`` (tokenizers >= 0.20) gives the same ids without character offsets,
        which we never use: ~15% less tokenising time.
        """
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        if texts_b is None or all(b is None for b in texts_b):
            return encode(list(texts_a))
        if len(texts_b) != len(texts_a):
            raise ValueError("texts_a and texts_b differ in length")
        return encode([a if b is None else (a, b) for a, b in zip(texts_a, texts_b)])

    def batches(self, encodings: list) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(indices, padded int64 inputs) of length-sorted batches of at most ``batch_size`` inputs."""
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        order = np.argsort(lengths, kind="stable")
        out = []
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            lens = lengths[index]
            mask = np.arange(int(lens.max()))[None, :] < lens[:, None]
            ids = np.full(mask.shape, self.pad_id, dtype=np.int64)
            types = np.zeros(mask.shape, dtype=np.int64)
            total = int(lens.sum())
            ids[mask] = np.fromiter(itertools.chain.from_iterable(encodings[i].ids for i in index), np.int64, total)
            types[mask] = np.fromiter(itertools.chain.from_iterable(encodings[i].type_ids for i in index), np.int64,
                                      total)
            out.append((index, {"input_ids": ids, "attention_mask": mask.astype(np.int64), "token_type_ids": types}))
        return out

    def logits(self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None = None) -> np.ndarray:
        """Raw model outputs, shape (n, outputs), in input order."""
        n_out = 1 if self.labels is None else len(self.labels)
        out = np.zeros((len(texts_a), n_out), dtype=np.float32)
        if not len(texts_a):
            return out
        batches = self.batches(self.encode(texts_a, texts_b))
        for (index, _), logits in zip(batches, self._run([b for _, b in batches])):
            out[index] = logits
        return out

    def probabilities(self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None = None) -> np.ndarray:
        """Softmax over the labels (classification only), shape (n, labels), in input order."""
        if self.labels is None:
            raise WellreadError("a regression model predicts a score, not probabilities")
        return softmax(self.logits(texts_a, texts_b))

    def predict(self, texts_a: Sequence[str], texts_b: Sequence[str | None] | None = None) -> list[dict]:
        """One dict per input: ``{"label", "probabilities": {label: p}}``, or ``{"score"}`` for regression."""
        logits = self.logits(texts_a, texts_b)
        if self.labels is None:
            return [{"score": float(s)} for s in logits[:, 0]]
        probs = softmax(logits)
        labels = self.labels
        return [{"label": labels[int(k)], "probabilities": dict(zip(labels, p.tolist()))}
                for k, p in zip(probs.argmax(axis=1), probs)]

    def describe(self) -> dict:
        return {"model": str(self.path), "backend": self.backend, "precision": self.precision, "labels": None if self.labels is None
                else list(self.labels), "kind": "regression" if self.labels is None else "classification",
                "max_length": self.max_length, "batch_size": self.batch_size, "threads": self.threads}
