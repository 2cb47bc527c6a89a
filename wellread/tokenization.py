"""WordPiece vocabularies: load BERT's vocab.txt, train a new one, encode text, save in the HF layout.

The tokenizer is a ``tokenizers.Tokenizer`` (Rust) set up exactly as BERT's uncased tokenizer:
clean text, Chinese characters split, accents stripped, lower-cased, whitespace and punctuation
split, greedy longest-match WordPiece with ``##`` continuations and words over 100 characters
mapped to [UNK]. Tests check it against transformers' pure-Python ``BertTokenizerLegacy``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer

from wellread.errors import WellreadError
from wellread.io import atomic_directory, atomic_write_json, atomic_write_text, check_output_dir, open_text

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
MAX_INPUT_CHARS_PER_WORD = 100
# The standard uncased vocabulary of BERT and the 24 miniatures (30,522 tokens), shipped with the package.
STANDARD_VOCAB = Path(__file__).resolve().parent / "resources" / "bert-base-uncased-vocab.txt"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def read_vocab(path: str | Path) -> list[str]:
    """Read a vocab.txt (one token per line, line number = id) and check BERT's special tokens."""
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise WellreadError("no vocab.txt here", file=path)
    with open_text(path) as f:
        tokens = [line.rstrip("\n").rstrip("\r") for line in f]
    while tokens and tokens[-1] == "":  # a trailing blank line is not a token
        tokens.pop()
    if not tokens:
        raise WellreadError("vocabulary is empty", file=path)
    seen: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok in seen:
            raise WellreadError(f"token {tok!r} repeats line {seen[tok] + 1}", file=path, line=i + 1)
        seen[tok] = i
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise WellreadError(f"vocabulary lacks the special token(s) {', '.join(missing)}", file=path)
    return tokens


def build_tokenizer(vocab: list[str] | dict[str, int]) -> Tokenizer:
    """BERT's uncased tokenizer over a given vocabulary."""
    if isinstance(vocab, list):
        vocab = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    _set_bert_pipeline(tok)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS}:0 $A:0 {SEP}:0",
        pair=f"{CLS}:0 $A:0 {SEP}:0 $B:1 {SEP}:1",
        special_tokens=[(CLS, vocab[CLS]), (SEP, vocab[SEP])],
    )
    return tok


def _set_bert_pipeline(tok: Tokenizer) -> None:
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(SPECIAL_TOKENS))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load from a model/vocab directory, a vocab.txt, or a tokenizer.json.

    A directory's vocab.txt is authoritative (it is what the model's embedding rows mean), so the
    tokenizer is rebuilt from it rather than trusting a tokenizer.json that might disagree.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "vocab.txt").is_file():
            return build_tokenizer(read_vocab(path / "vocab.txt"))
        if (path / "tokenizer.json").is_file():
            path = path / "tokenizer.json"
        else:
            raise WellreadError("directory holds neither vocab.txt nor tokenizer.json", file=path)
    if not path.exists():
        raise WellreadError("no such vocabulary file or directory", file=path)
    if path.suffix == ".json":
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exception on bad JSON
            raise WellreadError(f"not a tokenizer.json: {e}", file=path) from None
        missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
        if missing:
            raise WellreadError(f"tokenizer lacks the special token(s) {', '.join(missing)}", file=path)
        return tok
    return build_tokenizer(read_vocab(path))


def vocab_list(tok: Tokenizer) -> list[str]:
    """The tokens in id order (the content of vocab.txt)."""
    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    if "" in tokens:
        raise WellreadError("tokenizer ids are not contiguous; cannot write vocab.txt")
    return tokens


def check_vocabulary(tok: Tokenizer, vocab_size: int | None, where: str | Path, *,
                     names: tuple[str, str] = ("vocabulary", "config.json")) -> None:
    """Refuse a tokenizer whose vocabulary is not the size a model's config gives (its embedding rows): the one
    check of a model directory, a hub download, a converted checkpoint and a predictor (``names``: what the
    message calls the vocabulary and the config)."""
    n = tok.get_vocab_size(with_added_tokens=True)
    if n != vocab_size:
        raise WellreadError(f"{names[0]} has {n} tokens but {names[1]} says vocab_size {vocab_size}", file=where)


def vocab_hash(tok_or_tokens: Tokenizer | list[str]) -> str:
    """A short SHA-256 of the vocabulary, to refuse data and models made with another one."""
    tokens = vocab_list(tok_or_tokens) if isinstance(tok_or_tokens, Tokenizer) else tok_or_tokens
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()[:16]


def write_tokenizer_files(tok: Tokenizer, out: str | Path, model_max_length: int = 512) -> None:
    """Write vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json into ``out``.

    The files are what ``transformers.AutoTokenizer.from_pretrained(out)`` reads (BertTokenizer).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "vocab.txt", "\n".join(vocab_list(tok)) + "\n")
    atomic_write_text(out / "tokenizer.json", tok.to_str(pretty=True))
    special = {"unk_token": UNK, "sep_token": SEP, "pad_token": PAD, "cls_token": CLS, "mask_token": MASK}
    atomic_write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": False,
            **special,
        },
    )
    atomic_write_json(out / "special_tokens_map.json", special)


def _texts(files: Iterable[str | Path], replaced: list[int] | None = None) -> Iterator[str]:
    """The non-empty lines of raw text files; bytes that are not UTF-8 become U+FFFD (as `wellread corpus`
    reads them), the lines holding them counted in ``replaced[0]``."""
    for path in files:
        with open_text(path, errors="replace") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
            if replaced is not None:
                replaced[0] += f.replaced


def count_lines(files: Iterable[str | Path]) -> int:
    """Non-empty lines in the files (used for the progress bar's total, and to refuse an empty corpus);
    says how many held bytes that are not UTF-8."""
    replaced = [0]
    n = sum(1 for _ in _texts(files, replaced))
    if replaced[0]:
        print(f"note: {replaced[0]:,} line(s) of the text hold bytes that are not UTF-8; they are read as U+FFFD",
              file=sys.stderr)
    return n


def train_vocab(
    files: list[str | Path],
    size: int = 30522,
    *,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    show_progress: bool = True,
) -> Tokenizer:
    """Learn an uncased WordPiece vocabulary of ``size`` tokens from text files (.txt or .gz).

    Special tokens take ids 0..4 ([PAD], [UNK], [CLS], [SEP], [MASK]). The text is normalised and
    pre-tokenised exactly as BERT does before the WordPiece trainer counts it.
    """
    if not files:
        raise WellreadError("no input files given", field="files")
    for f in files:
        if not Path(f).is_file():
            raise WellreadError("no such file", file=f)
    n = count_lines(files)
    if n == 0:
        raise WellreadError("the corpus has no text (all files are empty)", file=files[0])
    if size < len(SPECIAL_TOKENS) + 1:
        raise WellreadError(f"vocabulary size {size} is too small", field="size")
    tok = Tokenizer(WordPiece(unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
    _set_bert_pipeline(tok)
    trainer = WordPieceTrainer(
        vocab_size=size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    tok.train_from_iterator(_texts(files), trainer=trainer, length=n)
    # Rebuild from the learned vocabulary so the trained and the loaded tokenizer are one and the same.
    return build_tokenizer(tok.get_vocab(with_added_tokens=True))


def save_vocab(tok: Tokenizer, out: str | Path) -> Path:
    """Write a vocabulary directory atomically (it never exists half-written)."""
    out = check_output_dir(out, allowed=set(TOKENIZER_FILES))
    with atomic_directory(out) as tmp:
        write_tokenizer_files(tok, tmp)
    return out


def encode(tok: Tokenizer, text: str, pair: str | None = None, *, special_tokens: bool = True):
    """Encode one text (or a pair); returns a ``tokenizers.Encoding`` (ids, tokens, word_ids...)."""
    return tok.encode(text, pair, add_special_tokens=special_tokens)


def special_ids(tok: Tokenizer) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}


__all__ = [
    "SPECIAL_TOKENS", "read_vocab", "build_tokenizer", "load_tokenizer", "train_vocab", "save_vocab",
    "write_tokenizer_files", "encode", "vocab_hash", "vocab_list", "special_ids",
]
