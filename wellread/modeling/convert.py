"""Google's BERT TensorFlow checkpoints -> the Hugging Face layout, without TensorFlow.

Reads the tensor bundle with ``wellread.modeling.tfcheckpoint``, maps Google's TF1 names (and the TF2 Model
Garden's object-based names) to ``BertForPreTraining``'s, skips optimizer state, checks every shape
against bert_config.json, and writes the model with ``modeling.save_model``. The written directory
is read back and compared tensor by tensor, so what is on disk is exactly what was in the checkpoint.
A checkpoint may be a directory or a .zip (unpacked safely: no absolute paths, ``..`` or links).
"""

from __future__ import annotations

import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from wellread import tokenization
from wellread.errors import WellreadError
from wellread.io import read_json
from wellread.modeling.models import load_model, read_weights, save_model
from wellread.modeling.tfcheckpoint import CheckpointReader, find_prefix

CHECK_TEXT = "the quick brown fox jumps over the lazy dog"

# Optimizer state and bookkeeping, never model weights: Google's AdamWeightDecayOptimizer slots
# (adam_m, adam_v), tf.train.AdamOptimizer's (Adam, Adam_1, beta1_power, beta2_power), the step
# counter, and the TF2 object graph, optimizer and save counter.
_SKIP = re.compile(r"(^|/)(adam_m|adam_v|Adam|Adam_1|beta1_power|beta2_power)$|^global_step$|"
                   r"^_CHECKPOINTABLE_OBJECT_GRAPH$|/\.OPTIMIZER_SLOT/|^optimizer/|^save_counter/")

_LAYER_PARTS = {
    "attention/self/query": "attention.self.query", "attention/self/key": "attention.self.key",
    "attention/self/value": "attention.self.value", "attention/output/dense": "attention.output.dense",
    "attention/output/LayerNorm": "attention.output.LayerNorm", "intermediate/dense": "intermediate.dense",
    "output/dense": "output.dense", "output/LayerNorm": "output.LayerNorm",
}
_LEAF = {"kernel": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}
_TF1_FIXED = {
    "bert/embeddings/word_embeddings": "bert.embeddings.word_embeddings.weight",
    "bert/embeddings/position_embeddings": "bert.embeddings.position_embeddings.weight",
    "bert/embeddings/token_type_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "cls/predictions/output_bias": "cls.predictions.bias",
    "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",  # stored [2, H]: no transpose
    "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
}
_TF1_DENSE = {"bert/embeddings/LayerNorm": "bert.embeddings.LayerNorm", "bert/pooler/dense": "bert.pooler.dense",
              "cls/predictions/transform/dense": "cls.predictions.transform.dense",
              "cls/predictions/transform/LayerNorm": "cls.predictions.transform.LayerNorm"}
# TF2 Model Garden encoder blocks: sub-object path -> HF part.
_TF2_BLOCK = {
    "_attention_layer/_query_dense": "attention.self.query", "_attention_layer/_key_dense": "attention.self.key",
    "_attention_layer/_value_dense": "attention.self.value",
    "_attention_layer/_output_dense": "attention.output.dense", "_attention_output_dense": "attention.output.dense",
    "_attention_layer_norm": "attention.output.LayerNorm", "_intermediate_dense": "intermediate.dense",
    "_output_dense": "output.dense", "_output_layer_norm": "output.LayerNorm",
}
_MLM = ("cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias")
_NSP = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")
_POOLER = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")


def is_skipped(name: str) -> bool:
    """Whether a checkpoint tensor is optimizer state or bookkeeping rather than a model weight."""
    return bool(_SKIP.search(name))


def map_tf1_name(name: str) -> tuple[str, bool] | None:
    """(HF name, transpose?) for a Google TF1 BERT variable, or None if it is not one.

    TF dense kernels are [in, out] and torch's Linear weights [out, in], so kernels are transposed;
    ``cls/seq_relationship/output_weights`` is already [2, H] and is not.
    """
    if name in _TF1_FIXED:
        return _TF1_FIXED[name], False
    m = re.fullmatch(r"(.+)/(kernel|bias|gamma|beta)", name)
    if not m:
        return None
    scope, leaf = m.groups()
    hf_leaf = _LEAF[leaf]
    if scope in _TF1_DENSE:
        return f"{_TF1_DENSE[scope]}.{hf_leaf}", leaf == "kernel"
    layer = re.fullmatch(r"bert/encoder/layer_(\d+)/(.+)", scope)
    if layer and layer.group(2) in _LAYER_PARTS:
        return f"bert.encoder.layer.{int(layer.group(1))}.{_LAYER_PARTS[layer.group(2)]}.{hf_leaf}", leaf == "kernel"
    return None


def map_tf2_name(name: str, num_layers: int) -> tuple[str, bool] | None:
    """(HF name, is a kernel?) for a TF2 Model Garden BertEncoder variable, or None.

    Names look like ``model/layer_with_weights-K/<path>/.ATTRIBUTES/VARIABLE_VALUE`` (root ``model``
    or ``encoder``): K = 0, 1, 2 word/position/type embeddings, 3 the embedding LayerNorm,
    4 .. 4+L-1 the encoder blocks, 4+L the pooler. Attention kernels are [H, heads, head_dim] (output:
    [heads, head_dim, H]) and are flattened to [H, H] before the transpose.
    """
    m = re.fullmatch(r"(?:model|encoder)/layer_with_weights-(\d+)/(.+)/\.ATTRIBUTES/VARIABLE_VALUE", name)
    if not m:
        return None
    k, path = int(m.group(1)), m.group(2)
    if k <= 2:
        if path != "embeddings":
            return None
        kind = ("word", "position", "token_type")[k]
        return f"bert.embeddings.{kind}_embeddings.weight", False
    sub, _, leaf = path.rpartition("/")
    if leaf not in _LEAF:
        return None
    if k == 3 and sub == "" and leaf in ("gamma", "beta"):
        return f"bert.embeddings.LayerNorm.{_LEAF[leaf]}", False
    if 4 <= k < 4 + num_layers and sub in _TF2_BLOCK:
        return f"bert.encoder.layer.{k - 4}.{_TF2_BLOCK[sub]}.{_LEAF[leaf]}", leaf == "kernel"
    if k == 4 + num_layers and sub == "" and leaf in ("kernel", "bias"):
        return f"bert.pooler.dense.{_LEAF[leaf]}", leaf == "kernel"
    return None


# --- reading the checkpoint directory ------------------------------------------------------------

def read_bert_config(path: str | Path):
    """Google's bert_config.json as a ``transformers.BertConfig`` (same key names)."""
    from transformers import BertConfig

    path = Path(path)
    raw = read_json(path, missing="no bert_config.json beside the checkpoint")
    if not isinstance(raw, dict):
        raise WellreadError("expected a JSON object", file=path)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(raw.get(key), int) or raw[key] <= 0:
            raise WellreadError(f"{key} must be a positive integer, got {raw.get(key)!r}", file=path, field=key)
    if raw["hidden_size"] % raw["num_attention_heads"]:
        raise WellreadError("hidden_size is not a multiple of num_attention_heads", file=path,
                            field="num_attention_heads")
    raw.setdefault("hidden_act", "gelu")
    raw["architectures"] = None
    return BertConfig(**raw)


def find_checkpoint_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` (itself included) holding a checkpoint index, shallowest first."""
    found = sorted({p.parent for p in root.rglob("*.index")}, key=lambda p: (len(p.parts), str(p)))
    return [p for p in found if not p.name.startswith(".")]


@contextmanager
def checkpoint_dir(source: str | Path) -> Iterator[Path]:
    """A directory holding one checkpoint (bert_config.json, vocab.txt, PREFIX.index, PREFIX.data-*).

    ``source`` is such a directory (or one above it), a checkpoint prefix/.index, or a .zip, which is
    unpacked into a temporary directory removed on exit.
    """
    source = Path(source)
    if not source.exists() and not source.with_name(source.name + ".index").exists():
        raise WellreadError("no such checkpoint file or directory", file=source)
    if source.is_file() and source.suffix == ".zip":
        with tempfile.TemporaryDirectory(prefix="wellread-unzip-") as tmp:
            safe_extract(source, Path(tmp))
            dirs = find_checkpoint_dirs(Path(tmp))
            if not dirs:
                raise WellreadError("the zip holds no TensorFlow checkpoint (*.index)", file=source)
            if len(dirs) > 1:
                raise WellreadError(f"the zip holds {len(dirs)} checkpoints; unpack it and convert one directory",
                                    file=source)
            yield dirs[0]
        return
    if source.is_dir():
        dirs = [source] if any(source.glob("*.index")) else find_checkpoint_dirs(source)
        if not dirs:
            raise WellreadError("no TensorFlow checkpoint here (no *.index file)", file=source)
        if len(dirs) > 1:
            shown = ", ".join(str(d.relative_to(source)) for d in dirs[:4])
            raise WellreadError(f"several checkpoints under this directory ({shown}); name one", file=source)
        yield dirs[0]
        return
    yield find_prefix(source).parent


def safe_extract(zip_path: Path, dest: Path) -> list[Path]:
    """Unpack a zip, refusing absolute paths, ``..``, links and device files; a truncated or
    corrupt archive (bad central directory, CRC mismatch, short member) is an error naming it."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise WellreadError(f"not a zip file, or truncated ({e})", file=zip_path) from None
    except OSError as e:
        raise WellreadError(f"cannot read: {e.strerror or e}", file=zip_path) from None
    out: list[Path] = []
    dest = dest.resolve()
    with zf:
        for info in zf.infolist():
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if (name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name)
                    or any(p.startswith("/") for p in parts)):
                raise WellreadError(f"refusing unsafe path {name!r} in the zip", file=zip_path, field=name)
            kind = stat.S_IFMT(info.external_attr >> 16)  # Unix type bits; 0 when the writer set none
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                raise WellreadError(f"refusing link or special file {name!r} in the zip", file=zip_path, field=name)
            target = dest.joinpath(*parts) if parts else dest
            if not target.resolve().is_relative_to(dest):
                raise WellreadError(f"refusing unsafe path {name!r} in the zip", file=zip_path, field=name)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as e:
                raise WellreadError(f"corrupt or truncated member {name!r}: {e}", file=zip_path, field=name) from None
            out.append(target)
    return out


# --- the conversion --------------------------------------------------------------------------------

@dataclass
class Conversion:
    """What was read from a checkpoint: HF-named tensors and an account of everything else."""

    tensors: dict[str, np.ndarray]
    config: object  # transformers.BertConfig
    naming: str  # "tf1" or "tf2"
    skipped: dict[str, int] = field(default_factory=dict)  # kind of optimizer state -> count
    dropped: list[str] = field(default_factory=list)  # heads no transformers class could hold with the rest

    @property
    def heads(self) -> list[str]:
        kept = []
        if all(k in self.tensors for k in _POOLER):
            kept.append("pooler")
        if all(k in self.tensors for k in _MLM):
            kept.append("mlm")
        if all(k in self.tensors for k in _NSP):
            kept.append("nsp")
        return kept


def _skip_kind(name: str) -> str:
    for kind in ("adam_m", "adam_v", "global_step", "_CHECKPOINTABLE_OBJECT_GRAPH", ".OPTIMIZER_SLOT"):
        if kind in name:
            return kind
    return name.split("/")[0] if name.startswith(("optimizer/", "save_counter/")) else name.rsplit("/", 1)[-1]


def read_checkpoint(ckpt_dir: str | Path, config=None) -> Conversion:
    """Map, reshape and shape-check every model tensor of the checkpoint in ``ckpt_dir``.

    Unknown tensors are an error (naming them), not silently dropped; so are missing encoder weights,
    a partial head, and any tensor whose shape disagrees with bert_config.json.
    """
    import torch
    from transformers import BertForPreTraining

    ckpt_dir = Path(ckpt_dir)
    config_file = ckpt_dir / "bert_config.json"
    if config is None:
        config = read_bert_config(config_file)
    reader = CheckpointReader(ckpt_dir)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in BertForPreTraining(config).state_dict().items()}
    names = [n for n in reader.names() if not is_skipped(n)]
    naming = "tf2" if any(n.endswith("/.ATTRIBUTES/VARIABLE_VALUE") for n in names) else "tf1"
    skipped: dict[str, int] = {}
    for n in reader.names():
        if is_skipped(n):
            skipped[_skip_kind(n)] = skipped.get(_skip_kind(n), 0) + 1
    tensors: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}
    unknown: list[str] = []
    for name in names:
        mapped = map_tf1_name(name) if naming == "tf1" else map_tf2_name(name, config.num_hidden_layers)
        if mapped is None:
            unknown.append(name)
            continue
        hf, kernel = mapped
        if hf in tensors:
            raise WellreadError(f"tensors {sources[hf]} and {name} both map to {hf}", file=reader.index_path, field=name)
        if hf not in expected:  # e.g. layer_5 in a 4-layer config
            raise WellreadError(f"tensor {name} ({hf}) does not fit bert_config.json "
                                f"({config.num_hidden_layers} layers)", file=config_file, field=name)
        array = reader.read(name)
        want = expected[hf]
        if kernel and array.ndim == 3:  # TF2 attention kernels: [H, A, d] -> [H, H]; output [A, d, H] -> [H, H]
            array = array.reshape(-1, array.shape[-1]) if "output" in hf else array.reshape(array.shape[0], -1)
        elif naming == "tf2" and hf.endswith(".bias") and array.ndim == 2:  # [A, d] -> [H]
            array = array.reshape(-1)
        if kernel:
            array = array.T
        if tuple(array.shape) != want:
            raise WellreadError(
                f"tensor {name} has shape {list(reader.entries[name].shape)}, but bert_config.json implies "
                f"{list(want)}{' (transposed)' if kernel else ''} for {hf}",
                file=config_file, field=name)
        if not np.issubdtype(array.dtype, np.floating):
            raise WellreadError(f"tensor {name} is {array.dtype}, expected floats", file=reader.index_path, field=name)
        tensors[hf] = np.ascontiguousarray(array, dtype=np.float32)
        sources[hf] = name
    if unknown:
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise WellreadError(f"tensors that are neither BERT weights nor optimizer state: {shown}",
                            file=reader.index_path)
    core = [k for k in expected if k.startswith("bert.") and not k.startswith("bert.pooler")
            and not k.endswith("position_ids")]
    missing = [k for k in core if k not in tensors]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise WellreadError(f"checkpoint lacks encoder weights: {shown}", file=reader.index_path)
    for group, what in ((_POOLER, "pooler"), (_MLM, "MLM head"), (_NSP, "NSP head")):
        present = [k for k in group if k in tensors]
        if present and len(present) != len(group):
            lacking = ", ".join(k for k in group if k not in tensors)
            raise WellreadError(f"the {what} is incomplete: missing {lacking}", file=reader.index_path)
    return Conversion(tensors, config, naming, skipped)


def build_model(conv: Conversion):
    """The transformers model holding the converted tensors: BertForPreTraining when the pooler and
    both heads are present, BertForMaskedLM with the MLM head but no NSP head, else BertModel (with
    the pooler if present). What no transformers class can hold alongside (the pooler without NSP
    under MLM, NSP without MLM) is left out and listed in ``conv.dropped``."""
    import torch
    from transformers import BertForMaskedLM, BertForPreTraining, BertModel

    heads = conv.heads
    config = conv.config
    if "mlm" in heads and "nsp" in heads and "pooler" in heads:
        model, prefix, keep = BertForPreTraining(config), "", heads
    elif "mlm" in heads:
        model, prefix, keep = BertForMaskedLM(config), "", ["mlm"]
    else:
        model, prefix = BertModel(config, add_pooling_layer="pooler" in heads), "bert."
        keep = [h for h in heads if h == "pooler"]
    groups = {"pooler": _POOLER, "mlm": _MLM, "nsp": _NSP}
    conv.dropped = [h for h in heads if h not in keep]
    for h in conv.dropped:
        for k in groups[h]:
            del conv.tensors[k]
    config.architectures = [type(model).__name__]
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in conv.tensors.items()}
    result = model.load_state_dict(state, strict=False)
    derived = ("position_ids", "decoder.weight", "decoder.bias")
    missing = [k for k in result.missing_keys if not k.endswith(derived)]
    if missing or result.unexpected_keys:
        raise AssertionError(f"internal: missing {missing}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    model.eval()
    return model


@dataclass
class ConvertResult:
    """What ``convert`` did, for the CLI to print."""

    out: Path
    naming: str
    model_class: str
    tensors: int
    heads: list[str]
    skipped: dict[str, int]
    norms: list[float] | None = None
    dropped: list[str] = field(default_factory=list)


def convert(source: str | Path, out: str | Path, *, vocab: str | Path | None = None,
            check: bool = False, check_text: str = CHECK_TEXT) -> ConvertResult:
    """Convert a Google BERT TF checkpoint (directory or .zip) into an HF model directory at ``out``.

    The checkpoint's vocab.txt (or ``vocab``) becomes the tokenizer; its size must equal the config's
    vocab_size. After writing, the directory is read back and each tensor compared with the source.
    ``check`` also runs a forward pass on ``check_text`` and returns per-layer hidden-state norms.
    """

    with checkpoint_dir(source) as ckpt:
        vocab_path = Path(vocab) if vocab is not None else ckpt / "vocab.txt"
        if not vocab_path.exists():
            raise WellreadError("no vocab.txt beside the checkpoint (pass --vocab)", file=vocab_path)
        tok = tokenization.load_tokenizer(vocab_path)
        conv = read_checkpoint(ckpt)
    tokenization.check_vocabulary(tok, conv.config.vocab_size, vocab_path, names=("vocab.txt", "bert_config.json"))
    conv.config.pad_token_id = tok.token_to_id(tokenization.PAD)
    model = build_model(conv)
    out = save_model(model, tok, out)
    verify_written(out, conv)
    result = ConvertResult(Path(out), conv.naming, type(model).__name__, len(conv.tensors), conv.heads, conv.skipped,
                           dropped=conv.dropped)
    if check:
        result.norms = check_model(out, check_text)
    return result


def verify_written(out: Path, conv: Conversion) -> None:
    """Read the written weights back and require them equal to the checkpoint's, bit for bit."""
    written = read_weights(out)
    prefixed = any(k.startswith("bert.") for k in written)
    for k, v in conv.tensors.items():
        key = k if prefixed or k.startswith("cls.") else k[len("bert."):]
        if key not in written or not np.array_equal(written[key].numpy(), v):
            raise WellreadError(f"written model differs from the checkpoint at {k}", file=out / "model.safetensors")


def check_model(model_dir: str | Path, text: str = CHECK_TEXT, pair: str | None = None) -> list[float]:
    """Run the encoder on ``text`` (and ``pair``); the mean L2 norm of the token vectors after the
    embeddings and after each layer. Non-finite values are an error (a broken conversion)."""
    import torch

    model = load_model(model_dir, "base")
    tok = tokenization.load_tokenizer(model_dir)
    enc = tok.encode(text, pair)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        states = model(input_ids=ids, token_type_ids=torch.tensor([enc.type_ids]),
                       output_hidden_states=True).hidden_states
    norms = [float(s[0].norm(dim=-1).mean()) for s in states]
    if not all(np.isfinite(norms)):
        raise WellreadError(f"forward pass gives non-finite hidden states: norms {norms}", file=model_dir)
    return norms


__all__ = ["convert", "read_checkpoint", "build_model", "check_model", "safe_extract", "checkpoint_dir",
           "map_tf1_name", "map_tf2_name", "is_skipped", "read_bert_config", "Conversion", "ConvertResult"]
