"""SQuAD v1.1 / v2.0: read and check the JSON, split by article, Google's windowed preprocessing and
the post-processing that turns start/end logits back into answer text.

Preprocessing follows google-research/bert ``run_squad.py``: the question is cut to
``max_query_length`` word pieces; the context is cut into windows of ``max_seq_length - len(q) - 3``
word pieces that start ``doc_stride`` apart; each window is ``[CLS] question [SEP] window [SEP]``.
Answer spans are mapped from characters to word pieces through the fast tokenizer's offsets (in
place of Google's whitespace-token bookkeeping); a window that does not hold the whole answer (and
every window of an unanswerable v2.0 question) is trained to point at [CLS]. Each context token
remembers the window where it has the most context on both sides ("max context"), where a
predicted answer may start.

Post-processing follows ``write_predictions``: per window the ``n_best_size`` best starts and ends,
spans that lie in the context, end after the start, are at most ``max_answer_length`` long and start
at a max-context token; the best span over all windows of a question wins. v2.0 compares it with
the null score (the smallest [CLS] start+end over the windows): the question is answered null when
``null_score - best_span_score`` exceeds a threshold, chosen on dev.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
from tokenizers import Tokenizer

from wellread.config import configclass, field
from wellread.data.batching import Features
from wellread.errors import WellreadError
from wellread.io import read_json

QA_TASKS = ("squad", "squad_v2")
DEV_FILES = {"squad": "dev-v1.1.json", "squad_v2": "dev-v2.0.json"}
TRAIN_FILES = {"squad": "train-v1.1.json", "squad_v2": "train-v2.0.json"}


@configclass
class QASettings:
    """Extractive QA: Google's run_squad windows, and the split by article used without a training file
    (the ``qa`` group of finetune and distill)."""

    max_seq_length: int = field(384, ge=16, le=512, help="QA: tokens per window, question included (Google: 384)")
    doc_stride: int = field(128, ge=1, help="QA: windows of a long context start this many tokens apart (Google: 128)")
    max_query_length: int = field(64, ge=1, help="QA: questions are cut to this many tokens (Google: 64)")
    train_articles: int | None = field(None, help="QA without the official train file: train on the first N "
                                                  "articles of the dev file, evaluate on the rest (a split by "
                                                  "article; default: 80%% of the articles)")
    source: Literal["local", "hub"] = field("local", help="QA: local (--data-dir) or hub: the official train and dev files from the "
                                      "Hugging Face hub (rajpurkar/squad, rajpurkar/squad_v2), downloaded once "
                                      "into wellread's cache")

    def __post_init__(self) -> None:
        if self.doc_stride > self.max_seq_length:
            raise WellreadError("must be at most max_seq_length", field="doc_stride")
        if self.max_query_length > self.max_seq_length - 4:
            raise WellreadError("must be at most max_seq_length - 4", field="max_query_length")

    def windows(self, max_positions: int = 512) -> dict:
        """The keyword arguments of ``preprocess`` (the window cut to the model's positions)."""
        return {"max_seq_length": min(self.max_seq_length, max_positions), "doc_stride": self.doc_stride,
                "max_query_length": self.max_query_length}


@dataclasses.dataclass(frozen=True)
class QAExample:
    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # gold (text, answer_start); empty for an unanswerable question
    is_impossible: bool
    article: int  # index of the article in its file


@dataclasses.dataclass
class SquadFile:
    path: Path
    version: str  # "1.1" or "2.0"
    titles: list[str]
    examples: list[QAExample]
    mismatched: list[tuple[str, str, int]]  # (id, answer text, answer_start) not found at answer_start

    def gold(self) -> dict[str, list[str]]:
        """id -> gold answer texts, as the official scripts read them."""
        return {e.id: [a for a, _ in e.answers] for e in self.examples}

    def subset(self, articles: range | list[int]) -> list[QAExample]:
        keep = set(articles)
        return [e for e in self.examples if e.article in keep]


def is_qa_task(task: str) -> bool:
    return task in QA_TASKS


def squad_path(task: str, data_dir: str | Path, split: str = "dev") -> Path:
    """The JSON file of ``task``: ``data_dir`` itself when it is a file, else its official file name."""
    if task not in QA_TASKS:
        raise WellreadError(f"unknown QA task {task!r} (squad, squad_v2)", field="task")
    path = Path(data_dir)
    if path.is_file():
        return path
    if not path.is_dir():
        raise WellreadError("no such file or directory", file=path)
    name = (DEV_FILES if split == "dev" else TRAIN_FILES)[task]
    if not (path / name).is_file():
        raise WellreadError(f"no {name} here (give the SQuAD folder or the JSON file itself)", file=path)
    return path / name


def _need(obj, key: str, kind: type, where: str, path: Path):
    if not isinstance(obj, dict):
        raise WellreadError(f"not in the SQuAD layout: {where} is a {type(obj).__name__}, expected an object", file=path)
    if key not in obj:
        raise WellreadError(f"not in the SQuAD layout: {where} has no {key!r} key", file=path, field=f"{where}.{key}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise WellreadError(f"not in the SQuAD layout: {where}.{key} is a {type(value).__name__}, expected "
                            f"{getattr(kind, '__name__', kind)}", file=path, field=f"{where}.{key}")
    return value


def read_squad(path: str | Path, task: str, *, quiet: bool = False) -> SquadFile:
    """Read and check a SQuAD JSON file for ``task`` (squad = v1.1, squad_v2 = v2.0).

    Refused, naming the place: a file that is not in the SQuAD layout (which key is missing where),
    an empty context or question, a repeated id, an answer outside its context, a v2.0 file (with
    unanswerable questions) given as v1.1 and the reverse. An answer whose text is not the context
    at ``answer_start`` is counted, reported and kept for scoring (the official scripts compare texts)
    but skipped in training.
    """
    path = Path(path)
    raw = read_json(path)
    articles = _need(raw, "data", list, "the top-level object", path)
    v2_fields = 0
    unanswerable: str | None = None
    examples: list[QAExample] = []
    mismatched: list[tuple[str, str, int]] = []
    titles: list[str] = []
    seen: set[str] = set()
    for ai, art in enumerate(articles):
        paragraphs = _need(art, "paragraphs", list, f"data[{ai}]", path)
        titles.append(str(art.get("title", f"article {ai}")))
        for pi, par in enumerate(paragraphs):
            where_p = f"data[{ai}].paragraphs[{pi}]"
            context = _need(par, "context", str, where_p, path)
            qas = _need(par, "qas", list, where_p, path)
            if qas and not context.strip():
                raise WellreadError("the context is empty", file=path, field=f"{where_p}.context")
            for qi, qa in enumerate(qas):
                where = f"{where_p}.qas[{qi}]"
                qid = _need(qa, "id", str, where, path)
                question = _need(qa, "question", str, where, path).strip()
                if not question:
                    raise WellreadError(f"question {qid} is empty", file=path, field=f"{where}.question")
                if qid in seen:
                    raise WellreadError(f"the id {qid} is used twice", file=path, field=f"{where}.id")
                seen.add(qid)
                impossible = False
                if "is_impossible" in qa:
                    v2_fields += 1
                    impossible = _need(qa, "is_impossible", bool, where, path)
                    if impossible and unanswerable is None:
                        unanswerable = qid
                answers = []
                for ni, ans in enumerate(_need(qa, "answers", list, where, path)):
                    text = _need(ans, "text", str, f"{where}.answers[{ni}]", path)
                    start = _need(ans, "answer_start", int, f"{where}.answers[{ni}]", path)
                    if not 0 <= start <= len(context) - len(text):
                        raise WellreadError(f"answer_start {start} with {len(text)} characters lies outside the "
                                            f"context of {len(context)}", file=path, field=f"{where}.answers[{ni}]")
                    if context[start:start + len(text)] != text:
                        mismatched.append((qid, text, start))
                    answers.append((text, start))
                if impossible:
                    answers = []
                elif not answers:
                    raise WellreadError(f"question {qid} has no answer" + ("" if task == "squad" else
                                        " and is not marked is_impossible"), file=path, field=f"{where}.answers")
                examples.append(QAExample(qid, question, context, tuple(answers), impossible, ai))
    if task == "squad" and v2_fields:
        raise WellreadError("this is a SQuAD 2.0 file (is_impossible present" + (f"; e.g. {unanswerable} is "
                            "unanswerable" if unanswerable else "") + "); use --task squad_v2", file=path, field="task")
    if task == "squad_v2" and not v2_fields and examples:
        raise WellreadError("this is a SQuAD 1.1 file (no is_impossible field); use --task squad", file=path,
                            field="task")
    if not examples:
        raise WellreadError("no questions in the file", file=path)
    if mismatched and not quiet:
        qid, text, start = mismatched[0]
        print(f"{path}: {len(mismatched)} answer(s) whose text is not the context at answer_start (first: id {qid}, "
              f"{text!r} at {start}); kept for scoring, skipped in training", file=sys.stderr)
    return SquadFile(path, "2.0" if v2_fields else "1.1", titles, examples, mismatched)


# --- the official files from the Hugging Face hub -------------------------------------------------------

# task -> (hub data set, config): the hub's copies of the official SQuAD files, as parquet (one row per question)
HUB_DATASETS = {"squad": ("rajpurkar/squad", "plain_text"), "squad_v2": ("rajpurkar/squad_v2", "squad_v2")}


def squad_json_from_rows(rows: list[dict], *, v2: bool, where: Path) -> dict:
    """The official JSON layout from the hub's rows (id, title, context, question, answers{text,
    answer_start}): articles by title and paragraphs by context, both in order of first appearance (the
    hub's rows keep the official files' order), ``is_impossible`` for v2.0 (a question without answers)."""
    articles: dict[str, dict] = {}
    paragraphs: dict[tuple[str, str], dict] = {}
    for n, row in enumerate(rows):
        missing = [k for k in ("id", "title", "context", "question", "answers") if k not in row]
        if missing:
            raise WellreadError(f"not the hub's SQuAD layout: row {n} has no {missing[0]!r} column", file=where)
        answers = row["answers"] or {}
        texts, starts = list(answers.get("text") or []), list(answers.get("answer_start") or [])
        if len(texts) != len(starts):
            raise WellreadError(f"row {n} ({row['id']}): {len(texts)} answer texts but {len(starts)} answer_start",
                                file=where)
        article = articles.setdefault(row["title"], {"title": row["title"], "paragraphs": []})
        key = (row["title"], row["context"])
        if key not in paragraphs:
            paragraphs[key] = {"context": row["context"], "qas": []}
            article["paragraphs"].append(paragraphs[key])
        qa = {"id": row["id"], "question": row["question"],
              "answers": [{"text": t, "answer_start": int(a)} for t, a in zip(texts, starts)]}
        if v2:
            qa["is_impossible"] = not texts
        paragraphs[key]["qas"].append(qa)
    return {"version": "v2.0" if v2 else "1.1", "data": list(articles.values())}


def fetch_squad(task: str, *, quiet: bool = False) -> Path:
    """The official training and dev files of ``task`` from the Hugging Face hub (``rajpurkar/squad``,
    ``rajpurkar/squad_v2``), through wellread's downloader and cache (resumable, SHA-256 recorded;
    ``WELLREAD_OFFLINE=1`` reads the cache), written once in the official JSON layout under their
    official names (train-v1.1.json, dev-v1.1.json, ...). Returns the folder: a ``--data-dir``."""
    from wellread.data.arrow_files import record_batches
    from wellread.data.own_task import hub_split_files
    from wellread.io import atomic_write_text

    if task not in QA_TASKS:
        raise WellreadError(f"unknown QA task {task!r} (squad, squad_v2)", field="task")
    hub_id, config = HUB_DATASETS[task]
    out = None
    for name, split in ((TRAIN_FILES[task], "train"), (DEV_FILES[task], "validation")):
        folder = hub_split_files(hub_id, config, split)
        out = folder.parent
        dest = out / name
        if dest.is_file():
            continue
        rows: list[dict] = []
        for part in sorted(folder.glob("*.parquet")):
            for cols, _ in record_batches(part):
                rows.extend(dict(zip(cols, values)) for values in zip(*cols.values()))
        data = squad_json_from_rows(rows, v2=task == "squad_v2", where=folder)
        atomic_write_text(dest, json.dumps(data, ensure_ascii=False))
        if not quiet:
            print(f"{hub_id} {split}: {len(rows):,} questions -> {dest}", file=sys.stderr)
    assert out is not None
    return out


def split_by_article(n_articles: int, train_articles: int) -> tuple[range, range]:
    """(train, test) article indices: the first ``train_articles`` in file order, and the rest.

    No article (so no paragraph or question) is on both sides.
    """
    if not 1 <= train_articles < n_articles:
        raise WellreadError(f"must be between 1 and {n_articles - 1} (the file has {n_articles} articles)",
                            field="train_articles")
    return range(train_articles), range(train_articles, n_articles)


# --- preprocessing ------------------------------------------------------------------------------

@dataclasses.dataclass
class QAFeatures:
    """Windows of many questions. Per-token arrays are flat and aligned with ``feats.ids``."""

    feats: Features
    example: np.ndarray  # int32, the example (question) each window belongs to
    char_start: np.ndarray  # int32 per token: its first character in the context, -1 outside the context
    char_end: np.ndarray  # int32 per token: one past its last character, -1 outside the context
    max_context: np.ndarray  # bool per token: this window is the token's best (max-context) window
    start_positions: np.ndarray  # int64 per window: the answer's first token, 0 ([CLS]) when not inside
    end_positions: np.ndarray  # int64 per window
    unmapped: list[str]  # ids of answerable questions whose training answer maps to no token

    def __len__(self) -> int:
        return len(self.feats)


def _windows(n: int, max_doc: int, stride: int) -> list[tuple[int, int]]:
    """Google's doc spans: (start, length) of windows of ``max_doc`` tokens, ``stride`` apart."""
    spans, start = [], 0
    while True:
        length = min(n - start, max_doc)
        spans.append((start, length))
        if start + length >= n:
            return spans
        start += min(length, stride)


def _max_context(spans: list[tuple[int, int]], n: int) -> np.ndarray:
    """For each token the window (index) where min(left, right) context + 0.01 * length is largest."""
    best = np.zeros(n, dtype=np.int32)
    score = np.full(n, -1.0)
    for w, (start, length) in enumerate(spans):
        pos = np.arange(start, start + length)
        s = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        better = s > score[pos]
        best[pos[better]] = w
        score[pos[better]] = s[better]
    return best


def answer_token_span(char_starts: np.ndarray, char_ends: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """(first, last) context token covering characters [start, end), or None when no token does."""
    first = int(np.searchsorted(char_ends, start, side="right"))  # first token ending after start
    last = int(np.searchsorted(char_starts, end, side="left")) - 1  # last token starting before end
    if first >= len(char_ends) or last < first:
        return None
    return first, last


def _plain_tokenizer(tok: Tokenizer) -> Tokenizer:
    if tok.truncation is None and tok.padding is None:
        return tok
    tok = Tokenizer.from_str(tok.to_str())  # a private copy: no truncation or padding
    tok.no_truncation()
    tok.no_padding()
    return tok


def preprocess(tok: Tokenizer, examples: list[QAExample], *, max_seq_length: int = 384, doc_stride: int = 128,
               max_query_length: int = 64, training: bool = False) -> QAFeatures:
    """Google's windows for ``examples``. With ``training``, answers that do not match their
    context at answer_start are not used; the first remaining answer is the target."""
    if max_query_length + 4 > max_seq_length:
        raise WellreadError(f"max_seq_length {max_seq_length} leaves no room for a context after a question of "
                            f"{max_query_length} tokens", field="max_seq_length")
    tok = _plain_tokenizer(tok)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    contexts = list(dict.fromkeys(e.context for e in examples))
    ctx_index = {c: i for i, c in enumerate(contexts)}
    ctx_enc = tok.encode_batch(contexts, add_special_tokens=False)
    ctx_tok = []
    for enc in ctx_enc:
        off = np.asarray(enc.offsets, dtype=np.int32).reshape(-1, 2)
        ctx_tok.append((np.asarray(enc.ids, dtype=np.int32), off[:, 0].copy(), off[:, 1].copy()))
    # the questions' offsets are never used: encode_batch_fast (tokenizers >= 0.20) skips them
    encode_fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
    q_enc = encode_fast([e.question for e in examples], add_special_tokens=False)
    ids, types, cs, ce, mc = [], [], [], [], []
    example_of, starts, ends, lengths, unmapped = [], [], [], [], []
    for ei, (ex, qe) in enumerate(zip(examples, q_enc)):
        q_ids = qe.ids[:max_query_length]
        c_ids, c_start, c_end = ctx_tok[ctx_index[ex.context]]
        n = len(c_ids)
        spans = _windows(n, max_seq_length - len(q_ids) - 3, doc_stride)
        best = _max_context(spans, n)
        target = None
        if training and not ex.is_impossible:
            for text, a_start in ex.answers:
                if ex.context[a_start:a_start + len(text)] == text:
                    target = answer_token_span(c_start, c_end, a_start, a_start + len(text))
                    if target is None:
                        unmapped.append(ex.id)
                    break
            else:
                unmapped.append(ex.id)
        head = len(q_ids) + 2
        for w, (s, length) in enumerate(spans):
            ids.append(np.concatenate([[cls_id], q_ids, [sep_id], c_ids[s:s + length], [sep_id]]).astype(np.int32))
            types.append(np.concatenate([np.zeros(head, np.int8), np.ones(length + 1, np.int8)]))
            pad = np.full(head, -1, np.int32)
            cs.append(np.concatenate([pad, c_start[s:s + length], [-1]]).astype(np.int32))
            ce.append(np.concatenate([pad, c_end[s:s + length], [-1]]).astype(np.int32))
            mc.append(np.concatenate([np.zeros(head, bool), best[s:s + length] == w, [False]]))
            if target is not None and s <= target[0] and target[1] < s + length:
                starts.append(target[0] - s + head)
                ends.append(target[1] - s + head)
            else:
                starts.append(0)
                ends.append(0)
            example_of.append(ei)
            lengths.append(head + length + 1)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    feats = Features(ids=cat(ids, np.int32), type_ids=cat(types, np.int8), offsets=offsets)
    return QAFeatures(feats, np.asarray(example_of, dtype=np.int32), cat(cs, np.int32), cat(ce, np.int32),
                      cat(mc, bool), np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64), unmapped)


# --- post-processing ----------------------------------------------------------------------------

@dataclasses.dataclass
class Predictions:
    text: dict[str, str]  # id -> answer ("" for null), what predictions.json holds
    nbest: dict[str, list[dict]]  # id -> up to n_best {text, probability, start_logit, end_logit, start, end}
    null_odds: dict[str, float]  # id -> null score - best span score (v2.0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _best_spans(qf: QAFeatures, start_logits: np.ndarray, end_logits: np.ndarray, n_best_size: int,
                max_answer_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The valid (start, end) token pairs among each window's ``n_best_size`` best starts × best ends,
    for all windows at once: flat token indices (start, end), their window, and their score
    start_logit + end_logit (float32). Pairs come in Google's order: window by window, then by the
    rank of the start, then by the rank of the end (ranks by a stable sort, so ties keep token order).
    """
    offsets = qf.feats.offsets
    lengths = np.diff(offsets)
    n_windows, width = len(lengths), int(lengths.max())
    k = min(n_best_size, width)
    col = np.arange(width)
    inside = col[None, :] < lengths[:, None]
    flat = np.minimum(offsets[:-1, None] + col[None, :], len(start_logits) - 1)  # in range; masked below
    neg_inf = np.float32(-np.inf)
    s_rank = np.argsort(np.where(inside, -start_logits[flat], -neg_inf), axis=1, kind="stable")[:, :k]
    e_rank = np.argsort(np.where(inside, -end_logits[flat], -neg_inf), axis=1, kind="stable")[:, :k]
    s_tok = np.broadcast_to(s_rank[:, :, None], (n_windows, k, k))
    e_tok = np.broadcast_to(e_rank[:, None, :], (n_windows, k, k))
    s_flat = offsets[:-1, None, None] + s_tok
    e_flat = offsets[:-1, None, None] + e_tok
    n = lengths[:, None, None]
    ok = (s_tok < n) & (e_tok < n)  # a window shorter than n_best_size has fewer candidates
    s_flat, e_flat = np.where(ok, s_flat, 0), np.where(ok, e_flat, 0)
    ok &= ((qf.char_start[s_flat] >= 0) & (qf.char_start[e_flat] >= 0) & (e_tok >= s_tok)
           & (e_tok - s_tok + 1 <= max_answer_length) & qf.max_context[s_flat])
    window = np.broadcast_to(np.arange(n_windows)[:, None, None], ok.shape)[ok]
    s_flat, e_flat = s_flat[ok], e_flat[ok]
    return s_flat, e_flat, window, start_logits[s_flat] + end_logits[e_flat]


def postprocess(examples: list[QAExample], qf: QAFeatures, start_logits: np.ndarray, end_logits: np.ndarray, *,
                v2: bool, n_best_size: int = 20, max_answer_length: int = 30,
                null_threshold: float = 0.0) -> Predictions:
    """Answers from per-token logits (flat, aligned with ``qf.feats.ids``), as Google's write_predictions.

    The candidate spans of every window are found and scored in numpy at once (``_best_spans``); per
    question only its best candidates are turned into text, until ``n_best_size`` distinct answers.
    """
    text: dict[str, str] = {}
    nbest: dict[str, list[dict]] = {}
    odds: dict[str, float] = {}
    start_logits = np.asarray(start_logits, dtype=np.float32)
    end_logits = np.asarray(end_logits, dtype=np.float32)
    null_of = np.full(len(examples), np.inf)  # v2.0's null score: the smallest [CLS] start + end over the windows
    bounds, cand = [0] * (len(examples) + 1), []
    if len(qf):
        s_flat, e_flat, window, scores = _best_spans(qf, start_logits, end_logits, n_best_size, max_answer_length)
        example_of = qf.example[window]
        order = np.lexsort((-scores, example_of))  # by question, then best score first (stable: Google's order)
        bounds = np.searchsorted(example_of[order], np.arange(len(examples) + 1)).tolist()
        s_flat, e_flat = s_flat[order], e_flat[order]
        # Python numbers for the loop below (float32 values, as float() of each would give)
        cand = list(zip(qf.char_start[s_flat].tolist(), qf.char_end[e_flat].tolist(), scores[order].tolist(),
                        start_logits[s_flat].tolist(), end_logits[e_flat].tolist()))
        cls = qf.feats.offsets[:-1]
        np.minimum.at(null_of, qf.example, (start_logits[cls] + end_logits[cls]).astype(np.float64))
    for q, ex in enumerate(examples):
        entries, seen = [], set()
        for c in range(bounds[q], bounds[q + 1]):
            c0, c1, score, s_l, e_l = cand[c]
            answer = ex.context[c0:c1]
            if answer in seen:
                continue
            seen.add(answer)
            entries.append({"text": answer, "score": score, "start_logit": s_l, "end_logit": e_l, "start": c0, "end": c1})
            if len(entries) >= n_best_size:
                break
        null = float(null_of[q])
        best_span = entries[0] if entries else None
        if v2 and null != float("inf"):
            entries.append({"text": "", "score": null, "start_logit": None, "end_logit": None, "start": -1, "end": -1})
            entries.sort(key=lambda x: -x["score"])
        if not entries:
            entries = [{"text": "", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0, "start": -1, "end": -1}]
        probs = _softmax(np.asarray([x["score"] for x in entries], dtype=np.float64))
        for x, p in zip(entries, probs):
            x["probability"] = float(p)
        nbest[ex.id] = entries
        if v2:
            diff = null - best_span["score"] if best_span is not None else float("inf")
            odds[ex.id] = diff if diff != float("inf") else 1e9
            text[ex.id] = "" if best_span is None or diff > null_threshold else best_span["text"]
        else:
            text[ex.id] = best_span["text"] if best_span is not None else ""
    return Predictions(text, nbest, odds)
