"""Models on transformers' BERT classes: initialise a miniature, load and save in the HF layout.

Weight names are the contract: what we write loads with ``transformers.AutoModel*`` unchanged, and
we load what transformers (or Google's converted checkpoints) write. Our loader is strict: a
missing or mis-shaped weight is an error naming the tensor, never a silent random init.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer

from wellread.errors import WellreadError
from wellread.io import atomic_directory, check_output_dir, read_json
from wellread.modeling import zoo
from wellread.tokenization import PAD, TOKENIZER_FILES, load_tokenizer, write_tokenizer_files

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")
# Tensors that are derived, not learned: tied to the word embeddings, or buffers rebuilt at init.
_DERIVED_SUFFIXES = ("position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


POSITION_INITS = ("random", "sinusoidal")


def sinusoidal_positions(positions: int, width: int, std: float) -> torch.Tensor:
    """The Transformer's sine/cosine position table (Vaswani et al. 2017, 3.5), scaled to ``std`` per element.

    Row ``p`` holds sin(p·ω_i) and cos(p·ω_i) for ω_i = 10000^(-2i/width), so that the dot product of two rows
    depends on their distance only; scaled so that its elements have the spread of BERT's random init
    (``initializer_range``), the word embeddings are not drowned under the embeddings' LayerNorm.
    """
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    omega = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float64) / width)
    table = torch.zeros(positions, width, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * omega)
    table[:, 1::2] = torch.cos(pos * omega)[:, : width // 2]
    return (table * (std / table.std())).float()


def init_model(name: str | zoo.Miniature, tokenizer: Tokenizer, *, seed: int = 0, position_init: str = "random",
               **config_overrides):
    """A randomly initialised ``BertForPreTraining`` (encoder, pooler, MLM and NSP heads).

    The vocabulary size and [PAD] id come from ``tokenizer``; the same seed gives the same weights
    bit for bit (initialisation draws only from torch's CPU generator, seeded here).
    ``position_init="sinusoidal"`` starts the (still learned) position embeddings from
    :func:`sinusoidal_positions` instead of BERT's independent random rows: the architecture and the
    saved weights' layout are BERT's either way.
    """
    if position_init not in POSITION_INITS:
        raise WellreadError(f"must be one of {', '.join(POSITION_INITS)}, not {position_init!r}", field="position_init")
    from transformers import BertForPreTraining

    m = name if isinstance(name, zoo.Miniature) else zoo.get(name)
    config = m.bert_config(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        pad_token_id=tokenizer.token_to_id(PAD),
        architectures=["BertForPreTraining"],
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    if position_init == "sinusoidal":
        emb = model.bert.embeddings.position_embeddings.weight
        with torch.no_grad():
            emb.copy_(sinusoidal_positions(emb.shape[0], emb.shape[1], config.initializer_range))
    model.eval()
    return model


def save_model(model, tokenizer: Tokenizer, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` and its tokenizer as one HF-layout directory, atomically.

    Files: config.json, model.safetensors, vocab.txt, tokenizer.json, tokenizer_config.json,
    special_tokens_map.json. The directory appears complete or not at all.
    """
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if model.config.vocab_size != vocab_size:
        raise WellreadError(
            f"model has {model.config.vocab_size} embedding rows but the vocabulary has {vocab_size} tokens",
            field="vocab",
        )
    out = check_output_dir(out, overwrite=overwrite, allowed=set(MODEL_FILES) | set(TOKENIZER_FILES))
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one small file: transformers' "Writing model shards" bar is noise
    try:
        with atomic_directory(out) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            write_tokenizer_files(tokenizer, tmp, model_max_length=model.config.max_position_embeddings)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return out


def read_config(path: str | Path):
    from transformers import BertConfig

    cfg_file = Path(path) / "config.json"
    raw = read_json(cfg_file, missing="not a model directory: no config.json")
    if not isinstance(raw, dict):
        raise WellreadError("expected a JSON object", file=cfg_file)
    if raw.get("model_type", "bert") != "bert":
        raise WellreadError(f"model_type is {raw.get('model_type')!r}, expected 'bert'", file=cfg_file, field="model_type")
    return BertConfig.from_dict(raw)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (never unpickles a .bin unless asked, with weights_only)."""
    from safetensors.torch import load_file

    path = Path(path)
    f = path / "model.safetensors"
    if f.is_file():
        try:
            return load_file(f)
        except Exception as e:
            raise WellreadError(f"cannot read safetensors: {e}", file=f) from None
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise WellreadError("no model.safetensors (or pytorch_model.bin) in the directory", file=path)


def align_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Map between checkpoints saved with and without the ``bert.`` prefix (BertModel vs heads)."""
    has_prefix = any(k.startswith("bert.") for k in state)
    wants_prefix = any(k.startswith("bert.") for k in expected)
    if has_prefix and not wants_prefix:
        return {k[5:]: v for k, v in state.items() if k.startswith("bert.")}
    if wants_prefix and not has_prefix:
        return {(k if k.startswith("cls.") or k.startswith("classifier.") else f"bert.{k}"): v for k, v in state.items()}
    return state


def load_encoder(model, state: dict[str, torch.Tensor], path: str | Path):
    """Load a checkpoint's encoder (and whatever else of ``state`` fits) into ``model``, a BERT with a head.

    The encoder must load completely: a missing or mis-shaped tensor is an error. A pooler that is
    absent (e.g. in an MLM-only checkpoint) keeps its initial values; so does any head not in ``state``.
    """
    path = Path(path)
    expected = model.state_dict()
    state = align_prefix(state, set(expected))
    needed = [k for k in expected if k.startswith("bert.") and "pooler" not in k and not k.endswith("position_ids")]
    missing = [k for k in needed if k not in state]
    if missing:
        raise WellreadError(f"the encoder is incomplete: missing {', '.join(missing[:3])}", file=path / "model.safetensors")
    for k, v in state.items():
        if k in expected and tuple(v.shape) != tuple(expected[k].shape):
            raise WellreadError(f"tensor {k} has shape {tuple(v.shape)}, config.json implies {tuple(expected[k].shape)}",
                                file=path / "model.safetensors", field=k)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model


def load_model(path: str | Path, kind: str = "base", **config_overrides):
    """Load a model directory strictly into a transformers BERT class.

    ``kind``: ``base`` (BertModel), ``pretraining`` (BertForPreTraining), ``mlm`` (BertForMaskedLM),
    ``qa`` (BertForQuestionAnswering: span extraction, SQuAD).
    Every learned tensor the class needs must be present with the right shape; weights the class
    does not use (e.g. heads when loading the encoder) are ignored, as transformers does.
    """
    import transformers

    classes = {"base": "BertModel", "pretraining": "BertForPreTraining", "mlm": "BertForMaskedLM",
               "qa": "BertForQuestionAnswering"}
    if kind not in classes:
        raise ValueError(f"kind must be one of {sorted(classes)}")
    path = Path(path)
    config = read_config(path)
    for k, v in config_overrides.items():
        setattr(config, k, v)
    cls = getattr(transformers, classes[kind])
    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    state = align_prefix(read_weights(path), set(expected))
    missing = [k for k in expected if k not in state and not k.endswith(_DERIVED_SUFFIXES)]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise WellreadError(f"weights missing for {classes[kind]}: {shown}", file=path / "model.safetensors")
    for k, t in expected.items():
        if k in state and tuple(state[k].shape) != tuple(t.shape):
            raise WellreadError(
                f"tensor {k} has shape {tuple(state[k].shape)}, config.json implies {tuple(t.shape)}",
                file=path / "model.safetensors",
                field=k,
            )
    model = cls(config)  # real tensors; initialised values are overwritten just below
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.tie_weights()
    model.eval()
    return model


def load_pretrained(path: str | Path, kind: str = "base"):
    """A model and its tokenizer from one directory, checking they agree on the vocabulary size."""
    model = load_model(path, kind)
    tok = load_tokenizer(path)
    n = tok.get_vocab_size(with_added_tokens=True)
    if n != model.config.vocab_size:
        raise WellreadError(
            f"vocabulary has {n} tokens but the model has {model.config.vocab_size} embedding rows", file=path
        )
    return model, tok


def load_classifier(path: str | Path):
    """A fine-tuned ``BertForSequenceClassification`` from ``path``, strictly: every tensor present and shaped
    as config.json says (a pre-trained encoder without its classifier is refused), in eval mode."""
    from transformers import BertForSequenceClassification

    path = Path(path)
    config = read_config(path)
    with torch.device("meta"):
        expected = BertForSequenceClassification(config).state_dict()
    weights = path / "model.safetensors"
    state = align_prefix(read_weights(path), set(expected))
    missing = [k for k in expected if k not in state and not k.endswith("position_ids")]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise WellreadError(f"not a fine-tuned classifier: weights missing for {shown}", file=weights)
    for k, t in expected.items():
        if k in state and tuple(state[k].shape) != tuple(t.shape):
            raise WellreadError(f"tensor {k} has shape {tuple(state[k].shape)}, config.json implies {tuple(t.shape)}",
                                file=weights, field=k)
    model = BertForSequenceClassification(config)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.eval()
