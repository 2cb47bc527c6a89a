"""``wellread export``: a fine-tuned model to ONNX (and int8), checked against PyTorch before it is kept.

The exporter is torch's TorchScript tracer (``torch.onnx.export(..., dynamo=False)``). torch 2.13
still ships it (deprecated since 2.9, when ``dynamo=True`` became the default); the dynamo exporter
needs the extra package ``onnxscript``, and for BERT the traced graph is plain ONNX that ONNX
Runtime fuses well. The graph has dynamic batch and sequence axes; inputs ``input_ids``,
``attention_mask``, ``token_type_ids`` (int64), output ``logits`` (float32, batch × outputs).

What is traced is ``ClsLogits``: BERT's forward with the last layer computed at [CLS] only (all the
classifier reads), about 1.5× less work for Tiny; a model it does not reproduce exactly gets the
plain transformers forward instead.

``--int8`` adds model.int8.onnx: ``onnxruntime.quantization.quantize_dynamic`` with int8 weights on
the MatMul nodes (the encoder's dense layers). The embedding table stays fp32: quantising its Gather
saves disk but measured slower here (each lookup must be dequantised). Where OpenVINO and NNCF are
installed it also adds model.int8.xml/.bin, a static int8 model for ``--backend openvino-int8``
(``wellread.infer.openvino``), its activation ranges calibrated on ``calibration`` inputs (the task's
training examples with ``wellread export --int8 --task``) or else on the check inputs below.

The check runs PyTorch and each exported file on built-in sentences and sentence pairs (short,
long, truncated, several padded batches) and records the largest probability difference and the
label agreement in export.json. An fp32 export that differs from PyTorch by more than 1e-4 in
probability is an error, and nothing is written.
"""

from __future__ import annotations

import logging
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wellread import env
from wellread.errors import WellreadError
from wellread.infer.predictor import (
    INPUT_NAMES,
    ONNX_FILES,
    Predictor,
    backend_files,
    load_torch_classifier,
    model_directory,
    softmax,
)
from wellread.io import atomic_directory, atomic_write_json, check_output_dir
from wellread.tokenization import TOKENIZER_FILES

OPSET = 17
FP32_TOLERANCE = 1e-4
EXPORT_FILES = {"model.onnx", "model.int8.onnx", "model.int8.xml", "model.int8.bin", "export.json", "config.json",
                *TOKENIZER_FILES}
INT8_OPS = ["MatMul"]

# Real-looking inputs for the check: reviews, news, questions; one long enough to be truncated.
CHECK_SENTENCES = [
    "a gripping, beautifully acted drama that never loses its nerve.",
    "the plot is thin and the jokes fall flat.",
    "it's not a bad film, exactly, but it's hard to care about anyone in it.",
    "one of the most charming comedies of the year",
    "dull.",
    "The central bank raised interest rates by a quarter of a percentage point on Wednesday.",
    "Where can I find the nearest train station?",
    "I loved every minute of it, and so did my kids!",
    "an overlong, self-indulgent mess with a few striking images.",
    "The committee will publish its report after the hearings conclude next month.",
    "Visually stunning, emotionally hollow.",
    "Honestly? Worth seeing twice.",
    "the performances are uniformly excellent, but the script lets them down at every turn , "
    "piling coincidence on coincidence until the final act collapses under its own weight .",
    " ".join(["a long, winding and occasionally brilliant meditation on memory, loss and the stubborn "
              "persistence of hope in a small town that the rest of the country has forgotten"] * 6),
    "ok",
    "Caf\u00e9 owners in Z\u00fcrich say the new rules are na\u00efve.",
]
CHECK_PAIRS = [
    ("A man is playing a guitar.", "A person plays an instrument."),
    ("The cat sat on the mat.", "A dog is running in the park."),
    ("How do I learn to cook?", "What is the best way to learn cooking?"),
    ("The company reported record profits.", "Profits fell sharply at the company last quarter."),
    ("She finished the marathon in under four hours.", "She ran a marathon."),
    ("Two children are playing in the snow.", "Kids play outside in winter, building a snowman and "
     "throwing snowballs at each other while their parents watch from the porch."),
]


def _attention(sa, query: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT self-attention of ``query`` (b, q, H) over ``x`` (b, s, H); ``mask`` additive (b, 1, 1, s)."""
    heads, size = sa.num_attention_heads, sa.attention_head_size

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], t.shape[1], heads, size).transpose(1, 2)

    q, k, v = split(sa.query(query)), split(sa.key(x)), split(sa.value(x))
    scores = torch.matmul(q, k.transpose(-1, -2)) * getattr(sa, "scaling", size ** -0.5) + mask
    ctx = torch.matmul(scores.softmax(-1), v).transpose(1, 2)
    return ctx.reshape(ctx.shape[0], ctx.shape[1], heads * size)


def embed_and_mask(bert, input_ids, attention_mask, token_type_ids):
    """BERT's embeddings and the additive attention mask (0 where attended, the dtype's minimum elsewhere)."""
    h = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    return h, (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min


def _layer(layer, x: torch.Tensor, mask: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
    """One BertLayer (post-norm: attention, add & norm, feed-forward, add & norm), for ``query``'s positions."""
    q = x if query is None else query
    a = layer.attention.output.LayerNorm(layer.attention.output.dense(_attention(layer.attention.self, q, x, mask)) + q)
    hidden = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(a))
    return layer.output.LayerNorm(layer.output.dense(hidden) + a)


class ClsLogits(torch.nn.Module):
    """The classifier's logits, with the last layer computed at [CLS] only.

    The pooler and the classifier read one vector: the last layer's output at [CLS]. It needs every
    token's keys and values in that layer's attention, but its query, the attention's output
    projection, the feed-forward block and both layer norms only at [CLS]. For a 2-layer encoder that
    skips about 40% of the work (and all of the last layer's GELU), with the same result: the export
    compares it with the transformers forward and keeps the full graph if they differ.
    """

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        bert = self.model.bert
        h, mask = embed_and_mask(bert, input_ids, attention_mask, token_type_ids)
        layers = bert.encoder.layer
        for layer in layers[:-1]:
            h = _layer(layer, h, mask)
        cls = _layer(layers[-1], h, mask, query=h[:, :1])
        return self.model.classifier(bert.pooler(cls))


class FullLogits(torch.nn.Module):
    """The transformers forward, positional inputs in INPUT_NAMES order, the logits tensor out."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def _graph_module(model, example: dict[str, np.ndarray]) -> tuple[torch.nn.Module, str]:
    """ClsLogits when the model is a plain BERT classifier and agrees with transformers, else FullLogits."""
    config = model.config
    plain = (type(model).__name__ == "BertForSequenceClassification" and not config.is_decoder
             and not getattr(config, "add_cross_attention", False)
             and getattr(config, "position_embedding_type", "absolute") == "absolute"
             and all(type(m).__name__ == "BertLayer" for m in model.bert.encoder.layer))
    if plain:
        args = {k: torch.from_numpy(v) for k, v in example.items()}
        with torch.inference_mode():
            fast, full = ClsLogits(model).eval()(**args), FullLogits(model).eval()(**args)
        if torch.allclose(fast, full, atol=1e-5, rtol=0):
            return ClsLogits(model), "last layer at [CLS] only"
    return FullLogits(model), "the transformers forward"


def _export_graph(model, example: dict[str, np.ndarray], file: Path, opset: int) -> str:
    # eval() on the wrapper matters: the exporter restores the wrapper's mode afterwards, recursively,
    # and a wrapper left in training mode would switch the model's dropout on for the caller.
    wrapper, graph = _graph_module(model.eval(), example)
    wrapper.eval()
    args = tuple(torch.from_numpy(example[k]) for k in INPUT_NAMES)
    axes = {k: {0: "batch", 1: "sequence"} for k in INPUT_NAMES} | {"logits": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
        torch.onnx.export(wrapper, args, str(file), dynamo=False, input_names=list(INPUT_NAMES),
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    return graph


def _quantize(src: Path, dst: Path, *, per_channel: bool = False) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a generic "consider pre-processing" warning on the root logger. For this
    # graph quant_pre_process changed neither speed nor outputs (measured on SST-2 dev; its symbolic
    # shape inference fails here and has to be skipped), so it is not done.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS,
                         per_channel=per_channel)
    finally:
        logging.disable(logging.NOTSET)


def finish_files(tmp: Path, model_dir: Path, out: Path, *, int8: bool, per_channel: bool = False) -> None:
    """Check ``tmp/model.onnx``, quantise it to model.int8.onnx when asked (``per_channel``: one weight scale
    per output column, else one per matrix), copy config and tokenizer beside it."""
    import onnx

    try:
        onnx.checker.check_model(str(tmp / "model.onnx"))
    except onnx.checker.ValidationError as e:
        raise WellreadError(f"the exported graph is not valid ONNX: {e}", file=out / "model.onnx") from None
    if int8:
        _quantize(tmp / "model.onnx", tmp / "model.int8.onnx", per_channel=per_channel)
    shutil.copy2(model_dir / "config.json", tmp / "config.json")
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tmp / name)


def compare(reference: Predictor, other: Predictor, texts_a: list[str], texts_b: list[str | None]) -> dict:
    """How far ``other``'s outputs are from ``reference``'s: probabilities (or scores) and labels."""
    ref, out = reference.logits(texts_a, texts_b), other.logits(texts_a, texts_b)
    if reference.is_regression:
        return {"n": len(texts_a), "max_abs_diff_score": float(np.abs(ref - out).max())}
    p, q = softmax(ref), softmax(out)
    return {"n": len(texts_a), "max_abs_diff_probability": float(np.abs(p - q).max()),
            "label_agreement": float((p.argmax(1) == q.argmax(1)).mean())}


def check_inputs() -> tuple[list[str], list[str | None]]:
    texts_a = CHECK_SENTENCES + [a for a, _ in CHECK_PAIRS]
    texts_b: list[str | None] = [None] * len(CHECK_SENTENCES) + [b for _, b in CHECK_PAIRS]
    return texts_a, texts_b


def int8_backends(int8: bool) -> tuple[str, ...]:
    """The int8 backends an export with ``--int8`` writes files for here."""
    from wellread.infer.openvino import can_quantize

    return (("onnx-int8",) + (("openvino-int8",) if can_quantize() else ())) if int8 else ()


def export_onnx(model_dir: str | Path, out: str | Path, *, int8: bool = False, opset: int = OPSET,
                max_length: int = 128, quiet: bool = False,
                gate: Callable[[Path], dict] | None = None,
                calibration: tuple[list[str], list[str | None]] | None = None) -> dict:
    """Write ``out/`` (model.onnx, [model.int8.onnx, model.int8.xml/.bin], config.json, tokenizer files, export.json).

    Returns export.json's content. The directory appears complete, with a passed check, or not at all.
    ``gate``: called on the finished files (a directory the Predictor loads) before they are kept; it
    returns a record for export.json (``int8_gate``) or raises to keep nothing (``wellread.infer.gate``).
    ``calibration``: (texts_a, texts_b) whose activations calibrate the OpenVINO int8 model (default: the
    check inputs).
    """
    import onnx
    import onnxruntime
    import transformers

    path = model_directory(model_dir)
    out = check_output_dir(out, allowed=EXPORT_FILES)
    reference = Predictor(path, backend="torch", max_length=max_length, batch_size=8)
    model = load_torch_classifier(path)
    texts_a, texts_b = check_inputs()
    _, example = reference.batches(reference.encode(texts_a[:3], texts_b[:3]))[0]
    with atomic_directory(out) as tmp:
        graph = _export_graph(model, example, tmp / "model.onnx", opset)
        finish_files(tmp, path, out, int8=int8)
        ov_int8 = None
        if "openvino-int8" in int8_backends(int8):
            from wellread.infer.openvino import quantize

            cal_a, cal_b = calibration or (texts_a, texts_b)
            batches = [b for _, b in reference.batches(reference.encode(cal_a, cal_b))]  # padded as predict pads
            ov_int8 = quantize(tmp / "model.onnx", tmp, batches)
            ov_int8["calibration"] = "the given inputs" if calibration else "the built-in check inputs"
        checks = {}
        # OpenVINO runs model.onnx itself (in bf16 where the CPU has it): checked too where it is installed
        for backend in ("onnx", *int8_backends(int8), *(("openvino",) if env.have("openvino") else ())):
            other = Predictor(tmp, backend=backend, max_length=max_length, batch_size=8, threads=reference.threads)
            checks[backend] = compare(reference, other, texts_a, texts_b) | {"precision": other.precision}
        fp32 = checks["onnx"]
        diff = fp32.get("max_abs_diff_probability", fp32.get("max_abs_diff_score"))
        if diff > FP32_TOLERANCE or fp32.get("label_agreement", 1.0) < 1.0:
            raise WellreadError(f"the ONNX export disagrees with PyTorch (max difference {diff:.2e} > "
                                f"{FP32_TOLERANCE:g}); nothing written", file=out)
        gated = gate(tmp) if gate is not None else None
        files = {f.name: f.stat().st_size for f in sorted(tmp.iterdir())}
        record = {
            "model": str(path), "labels": None if reference.labels is None else list(reference.labels),
            "exporter": "torch.onnx.export, TorchScript tracer (dynamo=False)", "opset": opset, "graph": graph,
            "inputs": list(INPUT_NAMES), "outputs": ["logits"], "dynamic_axes": ["batch", "sequence"],
            "int8": {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
                     "op_types_to_quantize": INT8_OPS} if int8 else None,
            "openvino_int8": ov_int8,
            "check": {"reference": "PyTorch (the same weights)", "max_length": reference.max_length, **checks},
            **({"int8_gate": gated} if gated is not None else {}),
            "files": files,
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "transformers": transformers.__version__},
        }
        atomic_write_json(tmp / "export.json", record)
    for backend in ("onnx-int8", "openvino-int8", "openvino"):
        agreement = checks.get(backend, {}).get("label_agreement", 1.0)
        if agreement < 0.95 and not quiet:
            print(f"note: {backend} ({checks[backend]['precision']}) agrees with PyTorch on only {agreement:.0%} of "
                  "the check inputs", file=sys.stderr)
    return record


def describe_check(record: dict) -> str:
    """One line per exported file: what the check measured."""
    lines = []
    for backend, c in record["check"].items():
        if backend not in ONNX_FILES:
            continue
        if "max_abs_diff_probability" in c:
            what = (f"max |p - p_torch| {c['max_abs_diff_probability']:.2e}, labels agree "
                    f"{c['label_agreement']:.1%}")
        else:
            what = f"max |score - score_torch| {c['max_abs_diff_score']:.2e}"
        size = sum(record["files"].get(name, 0) for name in backend_files(backend))
        lines.append(f"  {ONNX_FILES[backend]:16s} {size / 1e6:6.1f} MB  "
                     f"{backend} ({c.get('precision', '?')}): {what} on {c['n']} inputs")
    return "\n".join(lines)
