"""The 24 BERT miniatures as one table: L x H, heads H/64, feed-forward 4H.

Everything else (names, hub ids, Google zip URLs, ``BertConfig``) is derived from the table, as
litgpt derives its configs from data. Turc et al. (2019) name five of them: Tiny, Mini, Small,
Medium and Base.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

from wellread.errors import WellreadError

LAYERS = (2, 4, 6, 8, 10, 12)
HIDDEN = (128, 256, 512, 768)
VOCAB_SIZE = 30522  # the standard uncased WordPiece vocabulary
MAX_POSITIONS = 512
TYPE_VOCAB = 2
ALIASES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768)}
# The PyTorch ports people use for the four small aliases; Base is Google's own port.
ALIAS_HUB_IDS = {"tiny": "prajjwal1/bert-tiny", "mini": "prajjwal1/bert-mini",
                 "small": "prajjwal1/bert-small", "medium": "prajjwal1/bert-medium"}
ZIP_URL = "https://storage.googleapis.com/bert_models/2020_02_20/uncased_L-{L}_H-{H}_A-{A}.zip"
ALL_ZIP_URL = "https://storage.googleapis.com/bert_models/2020_02_20/all_bert_models.zip"


@dataclass(frozen=True)
class Miniature:
    """One of the 24 miniatures."""

    layers: int
    hidden: int

    @property
    def heads(self) -> int:
        return self.hidden // 64

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden

    @property
    def name(self) -> str:
        return f"L-{self.layers}_H-{self.hidden}"

    @property
    def alias(self) -> str | None:
        return next((a for a, lh in ALIASES.items() if lh == (self.layers, self.hidden)), None)

    @property
    def google_name(self) -> str:
        return f"uncased_L-{self.layers}_H-{self.hidden}_A-{self.heads}"

    @property
    def google_hub_id(self) -> str:
        return f"google/bert_{self.google_name}"

    @property
    def hub_id(self) -> str:
        """The hub id users know it by: prajjwal1's port for the named small ones, else Google's."""
        return ALIAS_HUB_IDS.get(self.alias or "", self.google_hub_id)

    @property
    def zip_url(self) -> str:
        return ZIP_URL.format(L=self.layers, H=self.hidden, A=self.heads)

    def bert_config(self, vocab_size: int = VOCAB_SIZE, **overrides):
        """The ``transformers.BertConfig`` of the standard BERT recipe at this size."""
        from transformers import BertConfig

        kwargs = dict(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            intermediate_size=self.intermediate,
            hidden_act="gelu",
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
            max_position_embeddings=MAX_POSITIONS,
            type_vocab_size=TYPE_VOCAB,
            initializer_range=0.02,
            layer_norm_eps=1e-12,
            pad_token_id=0,
        )
        kwargs.update(overrides)
        return BertConfig(**kwargs)

    def parameter_formula(self, vocab_size: int = VOCAB_SIZE) -> int:
        """Parameters of ``BertModel`` (embeddings, encoder, pooler), by formula.

        embeddings: (V + P + T) * H + 2H (LayerNorm); each layer: 12H^2 + 13H
        (Q, K, V, O: 4(H^2 + H); FFN: H*4H + 4H + 4H*H + H; two LayerNorms: 4H); pooler: H^2 + H.
        """
        h = self.hidden
        embeddings = (vocab_size + MAX_POSITIONS + TYPE_VOCAB) * h + 2 * h
        layer = 12 * h * h + 13 * h
        pooler = h * h + h
        return embeddings + self.layers * layer + pooler


MINIATURES: tuple[Miniature, ...] = tuple(Miniature(L, H) for L in LAYERS for H in HIDDEN)


def _keys(m: Miniature) -> list[str]:
    keys = [m.name, m.google_name, f"bert_{m.google_name}", m.google_hub_id, f"L{m.layers}_H{m.hidden}"]
    if m.alias:
        keys += [m.alias, ALIAS_HUB_IDS.get(m.alias, ""), f"bert-{m.alias}"]
    return [k.lower() for k in keys if k]


_BY_KEY = {k: m for m in MINIATURES for k in _keys(m)}


def get(name: str) -> Miniature:
    """Resolve a name, alias, Google name or hub id to a miniature; unknown names suggest the nearest."""
    key = name.strip().lower()
    if key in _BY_KEY:
        return _BY_KEY[key]
    m = re.fullmatch(r"l-?(\d+)[_-]h-?(\d+)(?:[_-]a-?\d+)?", key)
    if m and (int(m.group(1)), int(m.group(2))) in {(x.layers, x.hidden) for x in MINIATURES}:
        return Miniature(int(m.group(1)), int(m.group(2)))
    canonical = {x.name.lower(): x.name for x in MINIATURES} | {a: a for a in ALIASES}
    suggestions = [canonical[s] for s in difflib.get_close_matches(key, list(canonical), n=3)]
    hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
    raise WellreadError(
        f"unknown model name {name!r}{hint} (names: {', '.join(ALIASES)}, or L-<2..12>_H-<128|256|512|768>; "
        "`wellread models` lists all 24)",
        field="model",
    )


def is_known(name: str) -> bool:
    try:
        get(name)
    except WellreadError:
        return False
    return True


def parameter_count(m: Miniature, vocab_size: int = VOCAB_SIZE) -> int:
    """Parameters of the built ``BertModel`` (on the meta device, so no memory or init time is spent)."""
    import torch
    from transformers import BertModel

    with torch.device("meta"):
        model = BertModel(m.bert_config(vocab_size=vocab_size))
    return sum(p.numel() for p in model.parameters())


def table(vocab_size: int = VOCAB_SIZE) -> list[dict]:
    """One row per miniature, as ``wellread models`` prints it."""
    rows = []
    for m in MINIATURES:
        row = asdict(m)
        row.update(
            name=m.name,
            alias=m.alias,
            heads=m.heads,
            intermediate=m.intermediate,
            parameters=parameter_count(m, vocab_size),
            hub_id=m.hub_id,
            google_hub_id=m.google_hub_id,
            zip_url=m.zip_url,
        )
        rows.append(row)
    return rows
