"""SQuAD reading, Google's windows and post-processing, on the real dev files and on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import DATA, REPO, needs_squad
from wellread.data import squad
from wellread.errors import WellreadError
from wellread.eval.squad import normalize_answer, squad_scores
from wellread.tokenization import STANDARD_VOCAB, load_tokenizer

DEV1 = DATA / "squad" / "dev-v1.1.json"  # needs_squad skips the tests that read them when absent
DEV2 = DATA / "squad" / "dev-v2.0.json"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(STANDARD_VOCAB)


@pytest.fixture(scope="module")
def dev1(tok):
    sf = squad.read_squad(DEV1, "squad")
    return sf, squad.preprocess(tok, sf.examples)


def _windows_of(qf: squad.QAFeatures) -> list[list[int]]:
    by = [[] for _ in range(int(qf.example.max()) + 1)]
    for f, e in enumerate(qf.example):
        by[e].append(f)
    return by


def _context_part(qf: squad.QAFeatures, f: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = qf.feats.offsets[f], qf.feats.offsets[f + 1]
    inside = qf.char_start[a:b] >= 0
    return qf.char_start[a:b][inside], qf.char_end[a:b][inside], qf.max_context[a:b][inside]


@needs_squad
def test_the_dev_files_read_as_documented():
    v1, v2 = squad.read_squad(DEV1, "squad"), squad.read_squad(DEV2, "squad_v2")
    assert (len(v1.examples), len(v1.titles), sum(len(e.answers) for e in v1.examples)) == (10570, 48, 34726)
    assert (len(v2.examples), len(v2.titles), sum(e.is_impossible for e in v2.examples)) == (11873, 35, 5945)
    assert not v1.mismatched and not v2.mismatched
    assert all(e.question == e.question.strip() for e in v1.examples)


@needs_squad
def test_every_v11_gold_answer_maps_to_a_window_span_and_back(dev1):
    """Each of the 34,726 gold answers: a token span in some window whose characters normalise to the
    gold text. The ones that cannot all start or end inside a word piece (e.g. "gold" in "golden",
    "39" in "739"): counted, and that reason checked for each."""
    sf, qf = dev1
    failed, inside_piece = [], 0
    for ex, feats in zip(sf.examples, _windows_of(qf)):
        for text, start in ex.answers:
            end = start + len(text)
            ok = False
            for f in feats:
                cs, ce, _ = _context_part(qf, f)
                span = squad.answer_token_span(cs, ce, start, end)
                if span is not None and normalize_answer(ex.context[cs[span[0]]:ce[span[1]]]) == normalize_answer(text):
                    ok = True
                    break
            if not ok:
                failed.append((ex.id, text))
                cs, ce, _ = _context_part(qf, feats[0])
                lead = len(text) - len(text.lstrip())
                trail = len(text) - len(text.rstrip())
                if (start + lead) not in set(cs.tolist()) or (end - trail) not in set(ce.tolist()):
                    inside_piece += 1
    assert len(failed) == 77, failed[:5]  # 0.22% of 34,726
    assert inside_piece == len(failed), "every failure is an answer boundary inside a word piece"
    questions = {q for q, _ in failed}
    lost = [e.id for e in sf.examples if e.id in questions and
            all((e.id, t) in set(failed) for t, _ in e.answers)]
    assert len(lost) <= 10, "nearly every question keeps at least one gold answer that maps"


@needs_squad
def test_windows_cover_every_context_token_and_each_has_one_max_context_window(dev1, tok):
    sf, qf = dev1
    contexts = {}
    for ex, feats in zip(sf.examples, _windows_of(qf)):
        if ex.context in contexts:
            continue
        n = len(tok.encode(ex.context, add_special_tokens=False).ids)
        starts = np.concatenate([_context_part(qf, f)[0] for f in feats])
        best = np.concatenate([_context_part(qf, f)[2] for f in feats])
        full = tok.encode(ex.context, add_special_tokens=False).offsets
        assert sorted(set(starts.tolist())) == sorted({s for s, _ in full}), ex.id
        assert int(best.sum()) == n, "each context token is max-context in exactly one window"
        contexts[ex.context] = len(feats)
    assert max(qf.feats.lengths) <= 384
    assert max(contexts.values()) >= 3, "the longest contexts need several windows (doc stride 128)"


@needs_squad
def test_oracle_logits_give_back_the_gold_answers(tok):
    """Logits that point at the training target post-process to the gold answer (pre- and
    post-processing agree), over all windows of long contexts too."""
    sf = squad.read_squad(DEV1, "squad")
    examples = sf.examples[:1500]
    qf = squad.preprocess(tok, examples, training=True)
    starts = np.zeros(len(qf.feats.ids), np.float32)
    ends = np.zeros(len(qf.feats.ids), np.float32)
    for f in range(len(qf)):
        if qf.start_positions[f]:
            starts[qf.feats.offsets[f] + qf.start_positions[f]] = 10
            ends[qf.feats.offsets[f] + qf.end_positions[f]] = 10
    preds = squad.postprocess(examples, qf, starts, ends, v2=False)
    r = squad_scores({e.id: [a for a, _ in e.answers] for e in examples}, preds.text, v2=False)
    assert r["exact_match"] > 98.5 and r["f1"] > 98.5
    assert np.bincount(qf.example).max() > 1, "some questions span several windows"
    # each miss is a question whose first (training) answer starts or ends inside a word piece
    for e in examples:
        if normalize_answer(preds.text[e.id]) not in {normalize_answer(a) for a, _ in e.answers}:
            text, start = e.answers[0]
            pieces = tok.encode(e.context, add_special_tokens=False).offsets
            assert start not in {s for s, _ in pieces} or start + len(text) not in {t for _, t in pieces}, e.id


@needs_squad
def test_v2_unanswerable_windows_point_at_cls_and_oracle_logits_predict_null(tok):
    sf = squad.read_squad(DEV2, "squad_v2")
    examples = sf.examples[:400]
    qf = squad.preprocess(tok, examples, training=True)
    impossible = {i for i, e in enumerate(examples) if e.is_impossible}
    assert all(qf.start_positions[f] == 0 for f in range(len(qf)) if qf.example[f] in impossible)
    starts = np.zeros(len(qf.feats.ids), np.float32)
    ends = np.zeros(len(qf.feats.ids), np.float32)
    for f in range(len(qf)):
        a = qf.feats.offsets[f]
        starts[a + qf.start_positions[f]] = ends[a + qf.end_positions[f]] = 10
    preds = squad.postprocess(examples, qf, starts, ends, v2=True)
    r = squad_scores({e.id: [a for a, _ in e.answers] for e in examples}, preds.text, v2=True, na_probs=preds.null_odds)
    assert r["NoAns_exact"] == 100.0 and r["HasAns_exact"] > 99
    assert all(x["text"] == "" for e in examples if e.is_impossible for x in preds.nbest[e.id][:1])


def _write_predictions_loop(examples, qf, start_logits, end_logits, *, v2, n_best_size=20, max_answer_length=30,
                            null_threshold=0.0):
    """Google's write_predictions as plain loops (window by window, pair by pair): the reference that
    the vectorised ``squad.postprocess`` must reproduce exactly."""
    text, nbest, odds = {}, {}, {}
    for q, ex in enumerate(examples):
        cands, null = [], float("inf")
        for f in np.flatnonzero(qf.example == q):
            a, b = qf.feats.offsets[f], qf.feats.offsets[f + 1]
            sl, el = start_logits[a:b], end_logits[a:b]
            null = min(null, float(sl[0] + el[0]))
            for i in sorted(range(b - a), key=lambda t: -sl[t])[:n_best_size]:  # sorted(): stable
                for j in sorted(range(b - a), key=lambda t: -el[t])[:n_best_size]:
                    if (qf.char_start[a + i] < 0 or qf.char_start[a + j] < 0 or j < i or j - i + 1 > max_answer_length
                            or not qf.max_context[a + i]):
                        continue
                    cands.append((float(sl[i] + el[j]), float(sl[i]), float(el[j]), int(qf.char_start[a + i]),
                                  int(qf.char_end[a + j])))
        cands.sort(key=lambda c: -c[0])
        entries, seen = [], set()
        for score, s_l, e_l, c0, c1 in cands:
            if ex.context[c0:c1] not in seen and len(entries) < n_best_size:
                seen.add(ex.context[c0:c1])
                entries.append({"text": ex.context[c0:c1], "score": score, "start_logit": s_l, "end_logit": e_l,
                                "start": c0, "end": c1})
        best = entries[0] if entries else None
        if v2:
            entries = sorted(entries + [{"text": "", "score": null, "start_logit": None, "end_logit": None,
                                         "start": -1, "end": -1}], key=lambda x: -x["score"])
        entries = entries or [{"text": "", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0, "start": -1, "end": -1}]
        scores = np.asarray([x["score"] for x in entries])
        probs = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        for x, p in zip(entries, probs):
            x["probability"] = float(p)
        nbest[ex.id] = entries
        diff = null - best["score"] if best else float("inf")
        if v2:
            odds[ex.id] = diff if diff != float("inf") else 1e9
        text[ex.id] = "" if best is None or (v2 and diff > null_threshold) else best["text"]
    return text, nbest, odds


@needs_squad
@pytest.mark.parametrize("task", ["squad", "squad_v2"])
def test_postprocess_is_googles_loop_exactly_with_ties_and_short_windows(tok, task):
    """The vectorised post-processing gives what the plain loop gives: the same texts, n-best lists
    (order, scores, probabilities, offsets) and null odds, on random logits, on rounded logits (many
    ties: the order among equal scores must be Google's), and with windows (all of them, here) shorter than n_best_size."""
    examples = squad.read_squad(DEV1 if task == "squad" else DEV2, task).examples[:120]
    rng = np.random.default_rng(7)
    for windows, n_best in (({}, 7), ({"max_seq_length": 40, "doc_stride": 8, "max_query_length": 16}, 50)):
        qf = squad.preprocess(tok, examples, **windows)
        for rounded in (False, True):
            s = rng.standard_normal(len(qf.feats.ids)).astype(np.float32)
            e = rng.standard_normal(len(qf.feats.ids)).astype(np.float32)
            if rounded:
                s, e = np.round(s), np.round(e)
            got = squad.postprocess(examples, qf, s, e, v2=task == "squad_v2", n_best_size=n_best,
                                    max_answer_length=5, null_threshold=0.5)
            want = _write_predictions_loop(examples, qf, s, e, v2=task == "squad_v2", n_best_size=n_best,
                                           max_answer_length=5, null_threshold=0.5)
            assert (got.text, got.nbest, got.null_odds) == want


def test_a_long_context_is_windowed_never_truncated(tok):
    filler = " ".join(f"word{i}" for i in range(900))
    context = f"{filler} The treasure is buried under the old oak tree."
    ex = squad.QAExample("q", "Where is the treasure?", context, (("under the old oak tree", context.index("under")),),
                         False, 0)
    qf = squad.preprocess(tok, [ex], max_seq_length=128, doc_stride=64, training=True)
    assert len(qf) > 10 and max(qf.feats.lengths) <= 128
    assert qf.start_positions[-1] > 0 and not qf.start_positions[:-2].any(), "only the last windows hold the answer"


def _squad_json(path, qas, context="The Denver Broncos won Super Bowl 50 in 2016.", **top):
    path.write_text(json.dumps({"version": "1.1", **top, "data": [{"title": "T", "paragraphs": [{"context": context,
                                                                                                  "qas": qas}]}]}))
    return path


def _q(qid="q1", text="Denver Broncos", start=4, **kw):
    return {"id": qid, "question": "Who won?", "answers": [{"text": text, "answer_start": start}], **kw}


def _evaluate(tmp_path, data, task="squad"):
    (tmp_path / "p.json").write_text("{}")
    return subprocess.run([sys.executable, "-m", "wellread", "evaluate", "--task", task, "--data-dir", str(data),
                           "--predictions", str(tmp_path / "p.json")], cwd=REPO, capture_output=True, text=True)


@pytest.mark.parametrize("mutate, says", [
    (lambda d: d.pop("data"), "the top-level object has no 'data' key"),
    (lambda d: d["data"][0].pop("paragraphs"), "data[0] has no 'paragraphs' key"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].pop("id"), "data[0].paragraphs[0].qas[0] has no 'id' key"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].pop("answer_start"),
     "data[0].paragraphs[0].qas[0].answers[0] has no 'answer_start' key"),
    (lambda d: d["data"][0]["paragraphs"][0].update(context=" "), "the context is empty"),
    (lambda d: d["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible=False), "this is a SQuAD 2.0 file"),
])
def test_bad_files_are_refused_in_one_line_naming_the_place(tmp_path, mutate, says):
    data = json.loads(_squad_json(tmp_path / "dev.json", [_q()]).read_text())
    mutate(data)
    (tmp_path / "dev.json").write_text(json.dumps(data))
    p = _evaluate(tmp_path, tmp_path / "dev.json")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and says in p.stderr and "dev.json" in p.stderr, p.stderr


@needs_squad
def test_a_v2_file_given_as_v11_and_the_reverse_are_refused(tmp_path):
    p = _evaluate(tmp_path, DEV2, "squad")
    assert p.returncode == 1 and "SQuAD 2.0 file" in p.stderr and "--task squad_v2" in p.stderr
    p = _evaluate(tmp_path, DEV1, "squad_v2")
    assert p.returncode == 1 and "SQuAD 1.1 file" in p.stderr and "--task squad" in p.stderr


def test_an_answer_not_at_answer_start_is_counted_reported_kept_for_scoring_and_skipped_in_training(tmp_path, tok,
                                                                                                    capsys):
    path = _squad_json(tmp_path / "dev.json", [_q(), _q("q2", "Super Bowl", 0)])
    sf = squad.read_squad(path, "squad")
    assert sf.mismatched == [("q2", "Super Bowl", 0)]
    assert "1 answer(s) whose text is not the context at answer_start" in capsys.readouterr().err
    assert sf.gold()["q2"] == ["Super Bowl"]
    qf = squad.preprocess(tok, sf.examples, training=True)
    assert qf.unmapped == ["q2"] and qf.start_positions[1] == 0 and qf.start_positions[0] > 0


def test_split_by_article_puts_no_article_on_both_sides():
    train, test = squad.split_by_article(48, 38)
    assert (list(train), list(test)) == (list(range(38)), list(range(38, 48)))
    with pytest.raises(WellreadError, match="between 1 and 47"):
        squad.split_by_article(48, 48)
