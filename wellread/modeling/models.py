"""Models on transformers' BERT classes: initialise a miniature, load and save in the HF layout.

Weight names are the contract: what we write loads with ``transformers.AutoModel*`` unchanged, and
we load what transformers (or Google's converted checkpoints) write. Our loader is strict: a
missing or mis-shaped weight is an error naming the tensor, never a silent random init.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertForPreTraining
from transformers.utils import logging as hf_logging

from wellread.errors import WellreadError
from wellread.io import atomic_directory, check_output_dir, read_json
from wellread.modeling import zoo
from wellread.tokenization import PAD, TOKENIZER_FILES, check_vocabulary, load_tokenizer, write_tokenizer_files

MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")
# Tensors that are derived, not learned: tied to the word embeddings, or buffers rebuilt at init.
_DERIVED_SUFFIXES = ("position_ids", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def init_model(name: str | zoo.Miniature, tokenizer: Tokenizer, *, seed: int = 0, **config_overrides):
    """A randomly initialised ``BertForPreTraining`` (encoder, pooler, MLM and NSP heads).

    The vocabulary size and [PAD] id come from ``tokenizer``; the same seed gives the same weights
    bit for bit (initialisation draws only from torch's CPU generator, seeded here).
    """
    m = name if isinstance(name, zoo.Miniature) else zoo.get(name)
    config = m.bert_config(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        pad_token_id=tokenizer.token_to_id(PAD),
        architectures=["BertForPreTraining"],
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = BertForPreTraining(config)
    model.eval()
    return model


def save_model(model, tokenizer: Tokenizer, out: str | Path) -> Path:
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
    out = check_output_dir(out, allowed=set(MODEL_FILES) | set(TOKENIZER_FILES))
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
    cfg_file = Path(path) / "config.json"
    raw = read_json(cfg_file, missing="not a model directory: no config.json")
    if not isinstance(raw, dict):
        raise WellreadError("expected a JSON object", file=cfg_file)
    if raw.get("model_type", "bert") != "bert":
        raise WellreadError(f"model_type is {raw.get('model_type')!r}, expected 'bert'", file=cfg_file, field="model_type")
    return BertConfig.from_dict(raw)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of model.safetensors (never unpickles a .bin unless asked, with weights_only)."""
    path = Path(path)
    f = path / "model.safetensors"
    if f.is_file():
        try:
            return load_file(f)
        except Exception as e:
            raise WellreadError(f"cannot read safetensors: {e}", file=f) from None
    if (path / "pytorch_model.bin").is_file():
        try:
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for anything but tensors; a truncated or foreign file
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WellreadError(f"refused: not a plain state dict of tensors ({reason[:200]})",
                                file=path / "pytorch_model.bin") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WellreadError("refused: not a state dict of tensors", file=path / "pytorch_model.bin")
        return state
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


CLASSES = {"base": "BertModel", "pretraining": "BertForPreTraining", "mlm": "BertForMaskedLM",
           "classifier": "BertForSequenceClassification", "qa": "BertForQuestionAnswering"}


def load_model(path: str | Path, kind: str = "base", *, config=None, optional: tuple[str, ...] = (),
               fresh: tuple[str, ...] = (), seed: int | None = None, **config_overrides):
    """Load a model directory strictly into a transformers BERT class: the one loader of the package.

    ``kind``: ``base`` (BertModel), ``pretraining`` (BertForPreTraining), ``mlm`` (BertForMaskedLM),
    ``classifier`` (BertForSequenceClassification), ``qa`` (BertForQuestionAnswering: span extraction).
    Every learned tensor the class needs must be present
    with the right shape, except those under a prefix in ``optional`` (started at random when absent) or
    in ``fresh`` (never read from the file: a new head). Weights the class does not use (e.g. heads when
    loading the encoder) are ignored, as transformers does. ``config``: the config to build (default:
    the directory's config.json, with ``config_overrides``); ``seed``: seeds torch before the random
    init of what is not loaded. Returns the model in eval mode.
    """
    if kind not in CLASSES:
        raise ValueError(f"kind must be one of {sorted(CLASSES)}")
    path = Path(path)
    config = read_config(path) if config is None else config
    for k, v in config_overrides.items():
        setattr(config, k, v)
    cls = getattr(transformers, CLASSES[kind])
    with torch.device("meta"):
        expected = cls(config).state_dict()
    weights = path / "model.safetensors"
    state = {k: v for k, v in align_prefix(read_weights(path), set(expected)).items() if not k.startswith(fresh)}
    missing = [k for k in expected if k not in state and not k.endswith(_DERIVED_SUFFIXES)
               and not k.startswith(optional + fresh)]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        what = "not a fine-tuned classifier: weights missing for" if kind == "classifier" and not fresh else \
            f"weights missing for {CLASSES[kind]}:"
        raise WellreadError(f"{what} {shown}", file=weights)
    for k, t in expected.items():
        if k in state and tuple(state[k].shape) != tuple(t.shape):
            raise WellreadError(f"tensor {k} has shape {tuple(state[k].shape)}, config.json implies {tuple(t.shape)}",
                                file=weights, field=k)
    if seed is not None:
        torch.manual_seed(seed)
    model = cls(config)  # real tensors; the loaded ones are overwritten just below
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    model.tie_weights()
    return model.eval()


def load_pretrained(path: str | Path, kind: str = "base"):
    """A model and its tokenizer from one directory, checking they agree on the vocabulary size."""
    model = load_model(path, kind)
    tok = load_tokenizer(path)
    check_vocabulary(tok, model.config.vocab_size, path)
    return model, tok


def load_classifier(path: str | Path):
    """A fine-tuned ``BertForSequenceClassification`` from ``path``, strictly: every tensor present and shaped
    as config.json says (a pre-trained encoder without its classifier is refused), in eval mode."""
    return load_model(path, "classifier")
