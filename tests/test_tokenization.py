"""Our WordPiece tokenizer against transformers' pure-Python BERT tokenizer, on real text."""

from __future__ import annotations

import gzip
import unicodedata

import pytest

from tests.conftest import data_path
from wellread import tokenization as T
from wellread.errors import WellreadError

# Lines real data lacks: CJK, words over 100 characters, odd Unicode. Each was a known pitfall of
# BERT tokenizer ports (accent stripping order, CJK splitting, control characters, the 100-char cap).
EDGE_CASES = [
    "İstanbul ŞEHİR ß straße ﬁne Ωmega ΆΈΉ",
    "日本語のテキスト 中文分词 한국어 混合English文本",
    "emoji 😀👍🏽 zero\u200bwidth joiner\u200d nbsp\u00a0here\ttab\r\ncrlf bom\ufeffmid",
    "control\x00\x01\x7f chars \ufffd",
    "a" * 101, "b" * 100, "x" + "é" * 100, "supercalifragilistic" * 6,
    "don't «quote» “smart” —dash– … (parens) [brackets] {braces} a/b c\\d e@f #hash $5.00 100%",
    "[MASK] token [SEP] [cls] [UNK]",
    "Ǆ ǅ ǆ Ⅻ ⅻ ① mañana café naïve coöperate résumé \u0301lone combining ﬀ ﬃ Ａｂｃ　ｆｕｌｌ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ǰ ΐ",
    "", "   ",
]


def real_lines() -> list[str]:
    """About 22,000 real lines: every 5th SST-2 training sentence and every 20th line of each prose file (at most 2,000 each)."""
    lines = []
    with open(data_path("glue", "SST-2", "train.tsv"), encoding="utf-8") as f:
        next(f)
        lines += [row.split("\t")[0] for i, row in enumerate(f) if i % 5 == 0]
    for name in ("gcide_definitions", "linux_doc_6.1_prose", "python3.11_doc_prose", "kjv_bible_verses"):
        with gzip.open(data_path("text", f"{name}.txt.gz"), "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % 20 == 0:
                    lines.append(line.rstrip("\n"))
                if i >= 20 * 2000:
                    break
    return lines


@pytest.fixture(scope="module")
def legacy(std_vocab):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    return BertTokenizerLegacy(str(std_vocab), do_lower_case=True)


def test_ids_equal_the_pure_python_bert_tokenizer_on_20000_real_lines(std_tokenizer, legacy):
    lines = real_lines() + EDGE_CASES
    assert len(lines) >= 20_000
    # The sample must exercise what the parity is about.
    assert sum(any(unicodedata.combining(c) for c in unicodedata.normalize("NFD", s)) for s in lines) >= 50
    assert any("\u4e00" <= c <= "\u9fff" for s in lines for c in s)
    assert any(len(w) > 100 for s in lines for w in s.split())
    ours = [e.ids for e in std_tokenizer.encode_batch(lines)]
    mismatches = [(s, a) for s, a, b in zip(lines, ours, (legacy.encode(s) for s in lines)) if a != b]
    assert not mismatches, f"{len(mismatches)} lines differ, first: {mismatches[0][0][:120]!r}"


def test_sentence_pairs_match_ids_and_segment_ids(std_tokenizer, legacy):
    pairs = []
    with open(data_path("glue", "RTE", "dev.tsv"), encoding="utf-8") as f:
        next(f)
        for row in f:
            cols = row.rstrip("\n").split("\t")
            pairs.append((cols[1], cols[2]))
    for a, b in pairs:
        ref = legacy(a, b, return_token_type_ids=True)
        enc = T.encode(std_tokenizer, a, b)
        assert enc.ids == ref["input_ids"]
        assert enc.type_ids == ref["token_type_ids"]


def test_words_over_100_characters_become_unk(std_tokenizer):
    enc = T.encode(std_tokenizer, "short " + "a" * 101, special_tokens=False)
    assert enc.tokens == ["short", "[UNK]"]


def test_saved_vocab_loads_in_transformers_autotokenizer_with_the_same_ids(std_tokenizer, tmp_path):
    from transformers import AutoTokenizer

    out = T.save_vocab(std_tokenizer, tmp_path / "vocab")
    assert sorted(p.name for p in out.iterdir()) == sorted(T.TOKENIZER_FILES)
    hf = AutoTokenizer.from_pretrained(out)
    text, pair = "Héllo, wörld! The naïve café.", "Second segment 中文."
    assert hf(text, pair)["input_ids"] == T.encode(std_tokenizer, text, pair).ids
    assert hf.mask_token_id == 103 and hf.pad_token_id == 0 and hf.unk_token_id == 100
    assert hf.cls_token_id == 101 and hf.sep_token_id == 102


def test_a_vocab_trained_on_real_text_has_bert_specials_first_and_encodes_it(tmp_path):
    lines = []
    with gzip.open(data_path("text", "kjv_bible_verses.txt.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 3000:
                break
            lines.append(line)
    corpus = tmp_path / "kjv.txt"
    corpus.write_text("".join(lines), encoding="utf-8")
    tok = T.train_vocab([corpus], size=2000, show_progress=False)
    vocab = T.vocab_list(tok)
    assert vocab[:5] == list(T.SPECIAL_TOKENS)
    assert 1000 < len(vocab) <= 2000
    assert "the" in vocab and "lord" in vocab and any(t.startswith("##") for t in vocab)
    assert all(t == t.lower() for t in vocab[5:]), "uncased: no upper-case tokens"
    assert all(not unicodedata.combining(c) for t in vocab for c in t), "accents are stripped"
    enc = T.encode(tok, "And GOD said, Let there be light")
    assert enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]" and "[UNK]" not in enc.tokens
    # What we train is what we load back from disk.
    out = T.save_vocab(tok, tmp_path / "v")
    assert T.load_tokenizer(out).encode("And GOD said").ids == tok.encode("And GOD said").ids
    assert T.vocab_hash(T.load_tokenizer(out)) == T.vocab_hash(tok)


def test_a_vocab_without_the_special_tokens_is_refused(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("[PAD]\n[UNK]\nhello\nworld\n", encoding="utf-8")
    with pytest.raises(WellreadError, match=r"vocab.txt.*lacks the special token\(s\) \[CLS\], \[SEP\], \[MASK\]"):
        T.load_tokenizer(p)


def test_a_repeated_token_is_refused_with_its_line(tmp_path):
    p = tmp_path / "vocab.txt"
    p.write_text("\n".join(T.SPECIAL_TOKENS) + "\nhello\nhello\n", encoding="utf-8")
    with pytest.raises(WellreadError, match=r"vocab.txt:7.*repeats line 6"):
        T.read_vocab(p)


def test_an_empty_corpus_and_a_missing_file_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(WellreadError, match="no text"):
        T.train_vocab([empty], size=100, show_progress=False)
    with pytest.raises(WellreadError, match="no such file"):
        T.train_vocab([tmp_path / "nope.txt"], size=100, show_progress=False)
