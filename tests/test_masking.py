"""Pre-training instances and masking: Google's recipe, its statistics, and batches that resume exactly."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tests.test_corpus import real_lines
from wellread.data.corpus import build_corpus
from wellread.data.masking import (
    MaskingCollator,
    continuation_table,
    create_instances_from_document,
    create_masked_lm_predictions,
    truncate_seq_pair,
)
from wellread.data.pretraining import PretrainingDataset, split_documents
from wellread.data.shards import load_corpus
from wellread.errors import WellreadError
from wellread.experiments.cpu_aids import CopyPairs
from wellread.tokenization import load_tokenizer, vocab_list

CLS, SEP, PAD, MASK = 101, 102, 0, 103


@pytest.fixture(scope="module")
def corpus(std_vocab, tmp_path_factory):
    """3,000 real paragraphs in Google's format: ten consecutive paragraphs a document, in small shards
    (so random next segments come from other shards too)."""
    lines = real_lines(750)
    path = tmp_path_factory.mktemp("text") / "google.txt"
    path.write_text("\n\n".join("\n".join(lines[i:i + 10]) for i in range(0, len(lines), 10)) + "\n", encoding="utf-8")
    out = tmp_path_factory.mktemp("shards") / "out"
    build_corpus([path], std_vocab, out, workers=1, shard_tokens=30_000, show_progress=False)
    c = load_corpus(out)
    assert c.num_documents == 300 and len(c.shards) > 3
    return c


@pytest.fixture(scope="module")
def instances(corpus):
    rng = random.Random(1)
    return [x for d in range(corpus.num_documents)
            for x in create_instances_from_document(corpus, d, 128, 0.1, True, rng)]


@pytest.fixture(scope="module")
def continuation(std_tokenizer):
    return continuation_table(std_tokenizer)


def collator(whole_word: bool, continuation: np.ndarray, max_predictions: int = 128) -> MaskingCollator:
    return MaskingCollator(vocab_size=30522, special_ids={"[CLS]": CLS, "[SEP]": SEP, "[PAD]": PAD, "[MASK]": MASK},
                           max_predictions_per_seq=max_predictions, whole_word=whole_word, continuation=continuation)


def words_of(ids: list[int], cont: np.ndarray) -> list[list[int]]:
    """Positions grouped by word: a ## piece joins the piece right before it (specials split)."""
    words: list[list[int]] = []
    for i, t in enumerate(ids):
        if t in (CLS, SEP, PAD):
            continue
        if cont[t] and i > 0 and ids[i - 1] not in (CLS, SEP, PAD):
            words[-1].append(i)
        else:
            words.append([i])
    return words


# --- Google's code, transcribed literally (create_pretraining_data.py), to compare draw for draw ---------

def google_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_num_tokens:
            break
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        assert len(trunc_tokens) >= 1
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


def google_create_masked_lm_predictions(tokens, masked_lm_prob, max_predictions_per_seq, vocab_words, rng,
                                        do_whole_word_mask):
    cand_indexes = []
    for (i, token) in enumerate(tokens):
        if token == "[CLS]" or token == "[SEP]":
            continue
        if do_whole_word_mask and len(cand_indexes) >= 1 and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)
    output_tokens = list(tokens)
    num_to_predict = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked_lms = []
    covered_indexes = set()
    for index_set in cand_indexes:
        if len(masked_lms) >= num_to_predict:
            break
        if len(masked_lms) + len(index_set) > num_to_predict:
            continue
        if any(index in covered_indexes for index in index_set):
            continue
        for index in index_set:
            covered_indexes.add(index)
            if rng.random() < 0.8:
                masked_token = "[MASK]"
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked_lms.append((index, tokens[index]))
    masked_lms.sort()
    return output_tokens, [i for i, _ in masked_lms], [t for _, t in masked_lms]


def test_truncate_seq_pair_cuts_as_google_does():
    for seed in range(200):
        r = random.Random(seed)
        a, b = list(range(r.randint(1, 150))), list(range(1000, 1000 + r.randint(1, 150)))
        ga, gb = list(a), list(b)
        truncate_seq_pair(a, b, 125, random.Random(seed))
        google_truncate_seq_pair(ga, gb, 125, random.Random(seed))
        assert (a, b) == (ga, gb)


@pytest.mark.parametrize("whole_word", [False, True])
def test_create_masked_lm_predictions_matches_googles_code_draw_for_draw(instances, std_tokenizer, continuation,
                                                                         whole_word):
    vocab = vocab_list(std_tokenizer)
    compared = 0
    for k, inst in enumerate(instances[:400]):
        ids = inst.tokens.tolist()
        if whole_word and continuation[ids[inst.b_start]]:
            continue  # B opens with a ## piece: Google joins it to A's last word across [SEP]; we do not
        out, pos, labels = create_masked_lm_predictions(
            ids, [t in (CLS, SEP) for t in ids], (~continuation[inst.tokens]).tolist(), 0.15, 20, len(vocab), MASK,
            random.Random(k), whole_word)
        g_out, g_pos, g_labels = google_create_masked_lm_predictions(
            [vocab[t] for t in ids], 0.15, 20, vocab, random.Random(k), whole_word)
        assert ([vocab[t] for t in out], pos, [vocab[t] for t in labels]) == (g_out, g_pos, g_labels)
        compared += 1
    assert compared > 350


@pytest.mark.parametrize("whole_word", [False, True])
def test_masking_statistics_15_percent_and_80_10_10(instances, continuation, whole_word):
    batch = collator(whole_word, continuation)(instances, torch.Generator().manual_seed(0))
    attn = batch["attention_mask"]
    non_special = int(attn.sum()) - 3 * len(instances)
    pos, labels = batch["masked_positions"], batch["masked_labels"]
    assert abs(len(pos) / non_special - 0.15) < 0.01
    shown = batch["input_ids"].reshape(-1)[pos]
    n = len(pos)
    assert n > 20_000
    assert abs((shown == MASK).sum().item() / n - 0.8) < 0.01
    kept = (shown == labels).sum().item() / n  # 10% kept, plus random draws that hit the same id
    assert abs(kept - 0.1) < 0.01
    assert abs(((shown != MASK) & (shown != labels)).sum().item() / n - 0.1) < 0.01


def test_each_sequence_gets_googles_number_of_predictions(instances, continuation):
    for max_pred in (20, 5):
        batch = collator(False, continuation, max_pred)(instances, torch.Generator().manual_seed(1))
        width = batch["input_ids"].shape[1]
        per_row = torch.bincount(batch["masked_positions"] // width, minlength=len(instances))
        lengths = batch["attention_mask"].sum(1).tolist()
        expect = [min(max_pred, max(1, int(round(n * 0.15)))) for n in lengths]
        assert per_row.tolist() == expect  # what google's num_to_predict says, with the cap
    wwm = collator(True, continuation, 5)(instances, torch.Generator().manual_seed(2))
    assert torch.bincount(wwm["masked_positions"] // wwm["input_ids"].shape[1]).max() <= 5


def test_whole_word_budget_is_filled_as_google_fills_it(instances, continuation):
    """Google skips a word that would overrun num_to_predict and tries the next ones: so do we."""
    batch = collator(True, continuation, 20)(instances, torch.Generator().manual_seed(5))
    per_row = torch.bincount(batch["masked_positions"] // batch["input_ids"].shape[1], minlength=len(instances))
    google = []
    for k, inst in enumerate(instances):
        ids = inst.tokens.tolist()
        _, pos, _ = create_masked_lm_predictions(ids, [t in (CLS, SEP) for t in ids],
                                                 (~continuation[inst.tokens]).tolist(), 0.15, 20, 30522, MASK,
                                                 random.Random(k), True)
        google.append(len(pos))
    differ = sum(a != b for a, b in zip(per_row.tolist(), google))
    assert differ <= len(instances) // 100, f"{differ} rows got another number of predictions than Google's"


@pytest.mark.parametrize("whole_word", [False, True])
def test_special_tokens_and_padding_are_never_masked(instances, continuation, whole_word):
    batch = collator(whole_word, continuation)(instances, torch.Generator().manual_seed(3))
    labels = batch["masked_labels"]
    assert not torch.isin(labels, torch.tensor([CLS, SEP, PAD])).any()
    assert batch["attention_mask"].reshape(-1)[batch["masked_positions"]].all()


def test_whole_word_masking_never_splits_a_word(instances, continuation):
    batch = collator(True, continuation)(instances, torch.Generator().manual_seed(4))
    width = batch["input_ids"].shape[1]
    masked = torch.zeros(len(instances) * width, dtype=torch.bool)
    masked[batch["masked_positions"]] = True
    masked = masked.reshape(len(instances), width)
    multi_piece = 0
    for b, inst in enumerate(instances):
        for word in words_of(inst.tokens.tolist(), continuation):
            states = {bool(masked[b, i]) for i in word}
            assert len(states) == 1, f"word at {word} of instance {b} was split"
            multi_piece += len(word) > 1 and masked[b, word[0]].item()
    assert multi_piece > 100  # words of several pieces were masked, whole
    for k, inst in enumerate(instances[:300]):  # and the one-sequence function
        ids = inst.tokens.tolist()
        _, pos, _ = create_masked_lm_predictions(ids, [t in (CLS, SEP) for t in ids],
                                                 (~continuation[inst.tokens]).tolist(), 0.15, 20, 30522, MASK,
                                                 random.Random(k), True)
        for word in words_of(ids, continuation):
            assert len({i in pos for i in word}) == 1


def find(hay: np.ndarray, needle: np.ndarray, start: int = 0) -> int:
    """Index of the first occurrence of ``needle`` in ``hay`` at or after ``start``, else -1."""
    hits = np.flatnonzero(hay[start:len(hay) - len(needle) + 1] == needle[0]) + start
    return next((int(i) for i in hits if np.array_equal(hay[i:i + len(needle)], needle)), -1)


def test_nsp_is_half_random_and_segments_stay_inside_their_documents(corpus, instances):
    tossed = [x for x in instances if not x.forced_random_next]
    assert len(tossed) > 1500
    assert abs(np.mean([x.is_random_next for x in tossed]) - 0.5) < 0.04
    assert all(x.is_random_next for x in instances if x.forced_random_next)
    shards = {id(corpus.locate(x.a_document)[0]) != id(corpus.locate(x.b_document)[0]) for x in instances}
    assert True in shards  # some random next segments came from another shard
    for x in instances:
        a, b = x.tokens[1:x.b_start - 1], x.tokens[x.b_start:-1]
        assert len(x.tokens) <= 128 and x.tokens[0] == CLS and x.tokens[x.b_start - 1] == SEP == x.tokens[-1]
        doc_a = corpus.document_ids(x.a_document)
        pa = find(doc_a, a)
        assert pa >= 0, "segment A is not a contiguous piece of its document"
        if x.is_random_next:
            assert x.b_document != x.a_document
            assert find(corpus.document_ids(x.b_document), b) >= 0
        else:
            assert x.b_document == x.a_document
            assert find(doc_a, b, pa + len(a)) >= 0, "real next segment B does not follow A in the document"


def test_without_nsp_documents_are_packed_into_full_single_segments(corpus):
    rng = random.Random(0)
    for d in range(0, corpus.num_documents, 3):
        made = create_instances_from_document(corpus, d, 128, 0.0, False, rng)
        assert all(len(x.tokens) <= 128 and x.b_start == len(x.tokens) and x.is_random_next is None for x in made)
        body = np.concatenate([x.tokens[1:-1] for x in made])
        assert np.array_equal(body, corpus.document_ids(d))  # every token, in order, once
        lengths = [len(x.tokens) - 2 for x in made]
        assert all(n == 126 for n in lengths[:-1]) and 0 < lengths[-1] <= 126  # full, but for the last
    short = inner = 0
    for d in range(corpus.num_documents):  # short_seq_prob draws a shorter length per sequence, not per document
        made = create_instances_from_document(corpus, d, 128, 0.1, False, rng)
        assert np.array_equal(np.concatenate([x.tokens[1:-1] for x in made]), corpus.document_ids(d))
        inner += len(made) - 1
        short += sum(len(x.tokens) - 2 < 126 for x in made[:-1])
    assert inner > 300 and 0.05 < short / inner < 0.15, (short, inner)


def test_length_pools_reorder_a_pool_of_the_stream_into_batches_that_pad_little(corpus):
    kw = dict(batch_size=16, eval_documents=20, seed=3, block_documents=1000)
    plain = batches(PretrainingDataset(corpus, pool_batches=1, **kw), 64)
    pooled = batches(PretrainingDataset(corpus, pool_batches=8, **kw), 64)

    def rows(bs):  # each sequence as (length, length of segment B): what masking leaves unchanged
        out = []
        for b in bs:
            for i in range(len(b["input_ids"])):
                n = int(b["attention_mask"][i].sum())
                out.append((n, int(b["token_type_ids"][i].sum())))
        return out

    for p in range(0, 64, 8):  # a pool of 8 batches holds the same sequences as the 8 plain batches
        assert sorted(rows(plain[p:p + 8])) == sorted(rows(pooled[p:p + 8]))
    waste = [sum(int((b["attention_mask"] == 0).sum()) for b in bs) for bs in (plain, pooled)]
    assert waste[1] < 0.5 * waste[0], waste
    lengths = [int(b["attention_mask"].sum(1).max()) for b in pooled[:8]]
    assert lengths != sorted(lengths)  # the batches of a pool are shuffled, not served short to long


def batches(ds, n: int) -> list[dict[str, torch.Tensor]]:
    it = iter(ds)
    return [next(it) for _ in range(n)]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("whole_word", [False, True])
def test_batches_resume_bit_for_bit_from_a_saved_position(corpus, std_tokenizer, whole_word):
    kw = dict(batch_size=32, eval_documents=20, seed=7, block_documents=40, whole_word=whole_word,
              tokenizer=std_tokenizer)
    first = PretrainingDataset(corpus, **kw)
    it = iter(first)
    head = [next(it) for _ in range(3)]
    state = first.state_dict()
    tail = [next(it) for _ in range(40)]
    assert first.state_dict()["block"] > state["block"]  # crossed blocks of documents
    resumed = PretrainingDataset(corpus, **kw)
    resumed.load_state_dict(state)
    assert all(same(a, b) for a, b in zip(tail, batches(resumed, 40)))
    again = batches(PretrainingDataset(corpus, **kw), 3)
    assert all(same(a, b) for a, b in zip(head, again))
    other_seed = batches(PretrainingDataset(corpus, **{**kw, "seed": 8}), 1)[0]
    assert not same(head[0], other_seed)


def test_a_corpus_smaller_than_one_batch_still_fills_batches_across_epochs(tmp_path, std_vocab):
    lines = real_lines(2)
    f = tmp_path / "small.txt"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    c = load_corpus(build_corpus([f], std_vocab, tmp_path / "o", workers=1, show_progress=False).path.parent)
    ds = PretrainingDataset(c, batch_size=64, seed=0, pool_batches=1)
    got = batches(ds, 3)
    assert all(b["input_ids"].shape[0] == 64 for b in got)
    assert ds.state_dict()["epoch"] > 10
    state = ds.state_dict()
    nxt = batches(ds, 1)[0]
    ds2 = PretrainingDataset(c, batch_size=64, seed=0, pool_batches=1)
    ds2.load_state_dict(state)
    assert same(nxt, batches(ds2, 1)[0])
    pooled = batches(PretrainingDataset(c, batch_size=64, seed=0), 3)  # length pools: still full batches
    assert all(b["input_ids"].shape[0] == 64 for b in pooled)


def test_held_out_documents_never_reach_training_and_eval_batches_are_fixed(corpus):
    train, held = split_documents(corpus.num_documents, 20)
    assert len(held) == 20 and held[0] == 0 and held[-1] == corpus.num_documents - 1
    assert not set(train.tolist()) & set(held.tolist()) and len(train) + len(held) == corpus.num_documents
    ds = PretrainingDataset(corpus, batch_size=16, eval_documents=20, seed=3, block_documents=1000)
    used = {d for x in ds.block_instances(0, 0) for d in (x.a_document, x.b_document)}
    assert used and not used & set(held.tolist())
    ev = PretrainingDataset(corpus, batch_size=16, eval_documents=20, seed=3, split="eval")
    one, two = list(ev), list(ev)
    assert len(one) > 1 and all(same(a, b) for a, b in zip(one, two))
    assert sum(len(b["next_sentence_label"]) for b in one) == len(ev.block_instances(0, 0))


def test_whole_word_batches_have_googles_form_and_resume_across_an_epoch(corpus, std_tokenizer):
    """Batches of the dynamic dataset (whole words, NSP, length pools): [CLS] first, no special token as a
    label, most predictions shown as [MASK], at most max_predictions_per_seq a row, NSP labels 0/1; a
    position saved in one epoch resumes bit for bit into the next, and ``position_after`` finds it by
    counting instances alone."""
    kw = dict(batch_size=64, eval_documents=20, seed=1, max_predictions_per_seq=20, whole_word=True,
              tokenizer=std_tokenizer, block_documents=100, pool_batches=4)
    ds = PretrainingDataset(corpus, **kw)
    it = iter(ds)
    got = [next(it) for _ in range(5)]
    state = ds.state_dict()
    per_epoch = sum(len(ds.block_instances(0, b)) for b in range(corpus.num_documents // 100 + 1)) // 64
    more = [next(it) for _ in range(per_epoch + 2)]  # crosses into the next epoch
    assert ds.state_dict()["epoch"] == 1
    again = PretrainingDataset(corpus, **kw)
    assert again.position_after(again.state_dict(), 5 + per_epoch + 2) == ds.state_dict()
    again.load_state_dict(state)
    assert all(same(a, b) for a, b in zip(more, batches(again, per_epoch + 2)))
    for b in got:
        shown = b["input_ids"].reshape(-1)[b["masked_positions"]]
        assert (b["input_ids"][:, 0] == CLS).all()
        assert not torch.isin(b["masked_labels"], torch.tensor([CLS, SEP, PAD])).any()
        assert (shown == MASK).float().mean() > 0.7
        width = b["input_ids"].shape[1]
        assert torch.bincount(b["masked_positions"] // width).max() <= 20
        assert set(b["next_sentence_label"].tolist()) <= {0, 1}


def test_a_model_vocab_other_than_the_shards_is_refused(corpus, tiny_test_vocab):
    with pytest.raises(WellreadError, match=f"shards were made with vocab {corpus.vocab_hash}, the model's vocab is"):
        PretrainingDataset(corpus, batch_size=8, tokenizer=load_tokenizer(tiny_test_vocab))


def test_copy_pairs_are_real_next_pairs_and_copies_of_a_in_the_asked_share(corpus):
    """--copy-pairs: every sequence is [CLS] A [SEP] B [SEP] from one document, B A's real continuation
    or (in the asked share) A itself, A then at most half the length; no NSP label; the batch says
    which rows are copies and A's length there."""
    rng = random.Random(0)
    made = [x for d in range(corpus.num_documents)
            for x in CopyPairs(0.3)(corpus, d, 128, 0.1, False, rng)]
    pairs = [x for x in made if x.b_start < len(x.tokens)]
    assert len(pairs) > 0.97 * len(made) and len(made) > 1000
    assert abs(np.mean([x.copy for x in pairs]) - 0.3) < 0.04
    for x in made:
        a, b = x.tokens[1:x.b_start - 1], x.tokens[x.b_start:-1]
        assert len(x.tokens) <= 128 and x.tokens[0] == CLS and x.tokens[x.b_start - 1] == SEP == x.tokens[-1]
        assert x.is_random_next is None
        doc = corpus.document_ids(x.a_document)
        pa = find(doc, a)
        assert pa >= 0, "segment A is not a contiguous piece of its document"
        if x.copy:
            assert np.array_equal(a, b) and len(a) <= 125 // 2
        elif len(b):
            assert x.b_document == x.a_document
            assert find(doc, b, pa + len(a)) >= 0, "B does not follow A in the document"
    batch = collator(False, np.zeros(30522, dtype=bool))(made[:64], torch.Generator().manual_seed(0))
    assert "next_sentence_label" not in batch
    want = [x.b_start - 2 if x.copy else 0 for x in made[:64]]
    assert batch["copy_length"].tolist() == want and any(want)
    with pytest.raises(ValueError, match="next-sentence"):
        CopyPairs(0.5)(corpus, 0, 128, 0.1, True, rng)
    with pytest.raises(WellreadError, match="copy"):
        CopyPairs(0.5, nsp=True)
    ds = PretrainingDataset(corpus, batch_size=8, nsp=False, instances=CopyPairs(0.3), pool_batches=1)
    assert any("copy_length" in b for b in batches(ds, 4))
