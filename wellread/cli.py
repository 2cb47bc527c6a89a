"""The ``wellread`` command: parse flags into a typed config, call the library, print the result.

No logic lives here. Each command is a config dataclass plus a function registered with
``@command``; ``wellread vocab train`` is the command named "vocab train".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from wellread import __version__
from wellread.config import add_arguments, configclass, field, from_args, group, same
from wellread.data.batching import Inputs
from wellread.data.text import DocMode
from wellread.errors import WellreadError


@dataclasses.dataclass
class Command:
    name: str
    config: type | Callable[[], type]  # a config class, or a function importing it (keeps startup light)
    run: Callable[[object], int | None]
    help: str

    @property
    def config_class(self) -> type:
        return self.config if isinstance(self.config, type) else self.config()


COMMANDS: dict[str, Command] = {}
# --overwrite of the commands writing one directory of their own files (init, vocab train, convert, predict-glue,
# export): such a directory is replaced anyway, one holding anything else never is (wellread.io.check_output_dir)
OVERWRITE_NO_EFFECT = ("no effect, kept for old scripts: an output directory holding only this command's files is "
                       "replaced anyway; one holding anything else is never replaced")


def command(name: str, config: type, help: str):
    def register(fn):
        COMMANDS[name] = Command(name, config, fn, help)
        return fn

    return register


# --- wellread models ---------------------------------------------------------------------------

@configclass
class ModelsConfig:
    json: bool = field(False, help="print JSON instead of a table")


@command("models", ModelsConfig, "list the 24 BERT miniatures (sizes, parameters, hub ids)")
def _models(cfg: ModelsConfig) -> None:
    from wellread.modeling import zoo

    rows = zoo.table()
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return
    cols = [("name", "name"), ("alias", "alias"), ("layers", "L"), ("hidden", "H"), ("heads", "heads"),
            ("intermediate", "ffn"), ("parameters", "params"), ("hub_id", "hub id")]
    cells = [[("" if r[k] is None else f"{r[k]:,}" if k == "parameters" else str(r[k])) for k, _ in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h) in enumerate(cols)]
    numeric = {"layers", "hidden", "heads", "intermediate", "parameters"}

    def fmt(values):
        return "  ".join(v.rjust(w) if cols[i][0] in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    print(fmt([h for _, h in cols]))
    print(fmt(["-" * w for w in widths]))
    for c in cells:
        print(fmt(c))


# --- wellread env ------------------------------------------------------------------------------

@configclass
class EnvConfig:
    json: bool = field(False, help="print JSON instead of text")


@command("env", EnvConfig, "this machine: CPU model and instruction sets, versions, threads, and what wellread "
                           "uses here by default (training precision, inference backend)")
def _env(cfg: EnvConfig) -> None:
    from wellread import env

    print(json.dumps(env.report(), indent=2) if cfg.json else env.describe())


# --- wellread init -------------------------------------------------------------------------------

@configclass
class InitConfig:
    model: str = field(help="one of the 24 miniatures: an alias (tiny, mini, small, medium, base) or L-<n>_H-<n>",
                       positional=True)
    vocab: Path | None = field(None, help="vocab.txt, or a directory holding vocab.txt / tokenizer.json "
                                          "(default: the standard uncased BERT vocabulary, shipped with wellread)")
    out: Path = field(help="the model directory to write (HF layout)")
    seed: int = field(0, ge=0, help="random seed; the same seed gives the same weights bit for bit")
    overwrite: bool = field(False, help=OVERWRITE_NO_EFFECT)


@command("init", InitConfig, "write a randomly initialised miniature in the Hugging Face layout")
def _init(cfg: InitConfig) -> None:
    from wellread.modeling import zoo

    mini = zoo.get(cfg.model)  # a misspelt name is refused before torch is imported
    from wellread import tokenization
    from wellread.modeling.models import init_model, save_model

    tok = tokenization.load_tokenizer(cfg.vocab or tokenization.STANDARD_VOCAB)
    model = init_model(mini, tok, seed=cfg.seed)
    out = save_model(model, tok, cfg.out)
    n = sum(p.numel() for p in model.bert.parameters())
    print(f"wrote {mini.name}{f' ({mini.alias})' if mini.alias else ''}: {n:,} encoder parameters, "
          f"vocab {tok.get_vocab_size():,} -> {out}")


# --- wellread vocab ------------------------------------------------------------------------------

@configclass
class VocabTrainConfig:
    files: list[Path] = field(help="plain-text or .gz files, one paragraph or sentence per line", positional=True)
    out: Path = field(help="directory to write (vocab.txt, tokenizer.json, tokenizer_config.json, ...)")
    size: int = field(30522, help="vocabulary size, special tokens included")
    min_frequency: int = field(2, help="a merge must be seen at least this often")
    limit_alphabet: int = field(1000, help="keep at most this many distinct initial characters")
    overwrite: bool = field(False, help=OVERWRITE_NO_EFFECT)
    quiet: bool = field(False, help="no progress bar")


@command("vocab train", VocabTrainConfig, "learn an uncased WordPiece vocabulary from text")
def _vocab_train(cfg: VocabTrainConfig) -> None:
    from wellread import tokenization

    tok = tokenization.train_vocab(cfg.files, cfg.size, min_frequency=cfg.min_frequency,
                                   limit_alphabet=cfg.limit_alphabet, show_progress=not cfg.quiet)
    out = tokenization.save_vocab(tok, cfg.out)
    print(f"wrote a vocabulary of {tok.get_vocab_size():,} tokens (hash {tokenization.vocab_hash(tok)}) -> {out}")


@configclass
class VocabEncodeConfig:
    text: str = field(help="the text to encode", positional=True)
    pair: str | None = field(None, help="a second segment (encoded as a BERT sentence pair)")
    vocab: Path = field(help="vocab.txt, tokenizer.json, or a model/vocab directory")
    json: bool = field(False, help="print JSON (tokens, ids, type ids)")


@command("vocab encode", VocabEncodeConfig, "show the word pieces and ids of a text")
def _vocab_encode(cfg: VocabEncodeConfig) -> None:
    from wellread import tokenization

    tok = tokenization.load_tokenizer(cfg.vocab)
    enc = tokenization.encode(tok, cfg.text, cfg.pair)
    if cfg.json:
        print(json.dumps({"tokens": enc.tokens, "ids": enc.ids, "type_ids": enc.type_ids}, ensure_ascii=False))
        return
    print(" ".join(enc.tokens))
    print(" ".join(map(str, enc.ids)))


# --- wellread data stats ---------------------------------------------------------------------------

@configclass
class DataStatsConfig:
    task: str = field(help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, ax, hans, or a task file "
                           "(tickets.yaml: your own data, see docs/own-task.md)")
    data_dir: Path | None = field(None, help="the GLUE root (holding <Task>/), a task folder, or a Hugging Face "
                                             "datasets copy (not needed for a task file)")
    vocab: Path | None = field(None, help="vocab.txt or a model directory: lengths in WordPiece tokens "
                                          "(default: whitespace words)")
    max_length: int = same(Inputs, "max_length", help="with --vocab, count the examples longer than this")
    json: bool = field(False, help="print JSON (one object per split)")


@command("data stats", DataStatsConfig, "per split: examples read, rows skipped and why, labels, lengths, repeated "
                                       "texts and overlap between splits")
def _data_stats(cfg: DataStatsConfig) -> None:
    from wellread.data import stats

    result = stats.split_stats(cfg.task, cfg.data_dir, vocab=cfg.vocab, max_length=cfg.max_length)
    print(json.dumps(result, indent=2, ensure_ascii=False) if cfg.json else stats.format_stats(cfg.task, result))


# --- wellread finetune ---------------------------------------------------------------------------

def _finetune_config():
    from wellread.train.finetune import FinetuneConfig

    return FinetuneConfig


@command("finetune", _finetune_config, "fine-tune a model on a GLUE task (4 epochs, dev after each)")
def _finetune(cfg) -> None:
    from wellread.train.finetune import finetune

    r = finetune(cfg)
    print(f"{r['task']}: dev " + ", ".join(f"{k} {v:.4f}" for k, v in r["dev"].items() if "/" in k)
          + f" ({r['steps']} steps, {r['train_examples_per_s']:.0f} examples/s) -> {cfg.out / 'model'}")


# --- wellread download / convert -----------------------------------------------------------------

@configclass
class DownloadConfig:
    names: list[str] = field(help="what to fetch: tiny, mini, small, medium, base, L-<n>_H-<n>, all, "
                                  "a hub id (owner/name), or a zip URL", positional=True)
    cache: Path | None = field(None, help="cache directory (default: $WELLREAD_CACHE or ~/.cache/wellread)")
    source: Literal["zip", "hub"] = field("zip", help="zip: Google's TF checkpoints, converted here; hub: the Hugging "
                                                     "Face hub's files")
    offline: bool = field(False, help="use the cache only, never the network (also HF_HUB_OFFLINE=1 / WELLREAD_OFFLINE=1)")
    sha256: str | None = field(None, help="the expected SHA-256 of the downloaded zip (one name only)")
    timeout: float = field(30.0, gt=0, help="seconds to wait for the server before giving up")
    quiet: bool = field(False, help="no progress bar")

    def __post_init__(self) -> None:
        if self.sha256 is not None and len(self.names) != 1:
            raise WellreadError("--sha256 applies to one download; give one name", field="sha256")


@command("download", DownloadConfig, "fetch miniatures (Google zips or hub files) into the cache, ready to load")
def _download(cfg: DownloadConfig) -> None:
    from wellread import hub

    for name in cfg.names:
        for path in hub.fetch(name, source=cfg.source, cache=cfg.cache, offline=cfg.offline, progress=not cfg.quiet,
                              timeout=cfg.timeout, sha256=cfg.sha256):
            print(f"{name}: {path}")


@configclass
class ConvertConfig:
    checkpoint: Path = field(help="a Google BERT TF checkpoint: its directory, PREFIX/.index, or a .zip",
                             positional=True)
    out: Path = field(help="the model directory to write (HF layout)")
    vocab: Path | None = field(None, help="vocab.txt to use when the checkpoint has none beside it")
    check: bool = field(False, help="run a forward pass and print the hidden-state norm of each layer")
    text: str = field("the quick brown fox jumps over the lazy dog", help="the sentence --check runs")
    overwrite: bool = field(False, help=OVERWRITE_NO_EFFECT)


@command("convert", ConvertConfig, "convert a Google BERT TensorFlow checkpoint to the HF layout (no TensorFlow)")
def _convert(cfg: ConvertConfig) -> None:
    from wellread.modeling import convert

    r = convert.convert(cfg.checkpoint, cfg.out, vocab=cfg.vocab, check=cfg.check, check_text=cfg.text)
    skipped = ", ".join(f"{n} {k}" for k, n in r.skipped.items()) or "nothing"
    print(f"converted a {r.naming.upper()} checkpoint: {r.tensors} tensors as {r.model_class} "
          f"(kept: encoder{''.join(', ' + h for h in r.heads)}; skipped: {skipped}"
          f"{''.join('; dropped: ' + h for h in r.dropped)}) -> {r.out}")
    if r.norms is not None:
        for i, n in enumerate(r.norms):
            print(f"  {'embeddings' if i == 0 else f'layer {i}':>10}  mean hidden-state norm {n:.4f}")


# --- wellread corpus -----------------------------------------------------------------------------

@configclass
class CorpusConfig:
    files: list[Path] = field(default_factory=list, help="text files: .txt/.gz (a paragraph a line, or documents "
                                                         "split by blank lines) or .jsonl(.gz)", positional=True)
    task: str | None = field(None, help="also the texts of this task's training split (a task file, or a GLUE name "
                                        "with --data-dir), each once, a line each: pre-train a student on your "
                                        "task's own text before distilling into it (docs/own-task.md)")
    data_dir: Path | None = field(None, help="with --task and a GLUE name: the GLUE root")
    vocab: Path = field(help="vocab.txt, tokenizer.json, or a model/vocab directory")
    out: Path = field(help="directory for the shards and manifest.json (a killed run resumes there)")
    workers: int | None = field(None, ge=1, help="encoding processes (default: CPU count, at most 8; 1 = in this process)")
    shard_tokens: int = field(1 << 22, help="tokens per shard (a shard closes at the first unit boundary past this)")
    doc_mode: DocMode = field("auto", help="auto, line (a document a line) or blank (documents separated by blank "
                                       "lines); auto looks at each file's first 10,000 lines")
    text_field: str = field("text", help="the field holding the text in .jsonl records")
    group_lines: int = field(1, help="line mode: this many consecutive lines (paragraphs) make one document, so "
                                     "sequences fill up and next-sentence pairs come from one text (e.g. 16)")
    overwrite: bool = field(False, help="replace shards made from other inputs instead of refusing")
    quiet: bool = field(False, help="no progress bar")


@command("corpus", CorpusConfig, "tokenise raw text into token-id shards for pre-training (parallel, resumable)")
def _corpus(cfg: CorpusConfig) -> None:
    from wellread.data.corpus import build_corpus, task_texts

    if not cfg.files and not cfg.task:
        raise WellreadError("no input: give text FILES, or --task to pre-train on a task's own text", field="files")
    files = [*cfg.files, *([task_texts(cfg.task, cfg.data_dir)] if cfg.task else [])]
    m = build_corpus(files, cfg.vocab, cfg.out, workers=cfg.workers, shard_tokens=cfg.shard_tokens,
                     doc_mode=cfg.doc_mode, text_field=cfg.text_field, group_lines=cfg.group_lines,
                     overwrite=cfg.overwrite,
                     show_progress=not cfg.quiet)
    t = m.totals
    print(f"wrote {len(m.shards)} shard(s): {t['tokens']:,} tokens, {t['sentences']:,} sentences, "
          f"{t['documents']:,} documents (vocab {m.vocab_hash}) -> {m.path.parent}")
    notes = [f"{t[k]:,} {k.replace('_', ' ')}" for k in ("replaced_chars", "empty_documents", "long_lines_split",
                                                         "long_documents_split", "bad_json_lines") if t[k]]
    if notes:
        print("note: " + ", ".join(notes) + " (see manifest.json)", file=sys.stderr)


# --- wellread pretrain ---------------------------------------------------------------------------

def _pretrain_config():
    from wellread.train.pretrain import PretrainConfig

    return PretrainConfig


@command("pretrain", _pretrain_config, "pre-train a model with masked LM (and next-sentence prediction) on shards")
def _pretrain(cfg) -> None:
    from wellread.report.plots import draw_curves
    from wellread.train.pretrain import pretrain

    r = pretrain(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, the main process writes
        draw_curves(cfg.out, r)
    print("pretrain: eval " + ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in r["eval"].items())
          + f" ({r['steps']} steps, {r['tokens']:,} tokens, {r['tokens_per_s']:.0f} tokens/s) -> {cfg.out / 'model'}")


# --- wellread evaluate / predict-glue ------------------------------------------------------------

@configclass
class EvaluateConfig:
    model: Path | None = field(None, help="a fine-tuned model directory (HF layout), or a fine-tuning run directory "
                                          "holding model/ (squad, squad_v2: or none, with --predictions)")
    task: str = field(help="cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, ax (its diagnostic-full.tsv) or "
                           "hans (ax and hans are scored with a model trained for mnli), a task file (tickets.yaml); squad (v1.1) or squad_v2 (v2.0): the official EM/F1")
    data_dir: Path | None = same(DataStatsConfig, "data_dir")
    split: str | None = field(None, help="one labelled split (default: dev; MNLI: both dev sets; HANS: its "
                                         "evaluation set; AX: diagnostic-full)")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    json: bool = field(False, help="print JSON instead of a report")
    out: Path | None = field(None, help="also write the result as JSON to this file")
    plots: Path | None = field(None, help="write each split's confusion matrix (or, for regression, its error plot) "
                                          "as PNG into this directory")
    predictions: Path | None = field(None, help="squad, squad_v2: a predictions.json (id -> answer text) to score "
                                                "as the official script does; with --model, where to write it "
                                                "(nbest_predictions.json and null_odds.json beside it)")
    null_odds: Path | None = field(None, help="squad_v2 with --predictions: the null odds per id (the official "
                                              "--na-prob-file), for HasAns/NoAns at the best threshold")

    def __post_init__(self) -> None:
        if self.model is None and (self.predictions is None or self.task not in ("squad", "squad_v2")):
            raise WellreadError("give --model (or, for squad/squad_v2, --predictions to score a file)", field="model")
        if self.out is not None and self.out.is_dir():
            raise WellreadError("is a directory, expected a file to write the result to", file=self.out)


@command("evaluate", EvaluateConfig, "score a fine-tuned model on a task (GLUE metrics; HANS per heuristic)")
def _evaluate(cfg: EvaluateConfig) -> None:
    from wellread.io import atomic_write_json

    if cfg.task in ("squad", "squad_v2"):  # score --predictions (no torch needed), or a model's predictions
        from wellread.eval.squad import format_scores, score_file

        if cfg.model is None:
            r = score_file(cfg.task, cfg.data_dir, cfg.predictions, null_odds=cfg.null_odds)
        else:
            from wellread.infer.qa import evaluate_qa_model

            r = evaluate_qa_model(cfg.model, cfg.task, cfg.data_dir, split=cfg.split, predictions_out=cfg.predictions)
        text = format_scores(r, task=cfg.task)
    else:
        from wellread.eval import glue

        r = glue.evaluate_model(cfg.model, cfg.task, cfg.data_dir, cfg.split, max_length=cfg.inputs.max_length,
                                plots=cfg.plots)
        text = glue.format_evaluation(r)
    if cfg.out is not None:
        atomic_write_json(cfg.out, r)
    print(json.dumps(r, indent=2) if cfg.json else text)


@configclass
class PredictGlueConfig:
    models: list[str] = field(help="TASK=MODEL_DIR entries (or comma-separated: rte=A/model,stsb=B/model) and/or "
                                   "directories: a fine-tuning run, or one whose best.json / results.json maps "
                                   "task -> model directory; AX is predicted with the MNLI model")
    data_dir: Path = field(help="the GLUE root (holding <Task>/test.tsv ...), or a Hugging Face datasets copy")
    out: Path = field(help="directory to write: the leaderboard .tsv files, submission.zip, predictions.json")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    overwrite: bool = field(False, help=OVERWRITE_NO_EFFECT)


@command("predict-glue", PredictGlueConfig, "write GLUE leaderboard files (index, prediction) and a zip of them")
def _predict_glue(cfg: PredictGlueConfig) -> None:
    from wellread.eval import glue

    r = glue.predict_glue(glue.parse_models(cfg.models), cfg.data_dir, cfg.out, max_length=cfg.inputs.max_length)
    print(glue.format_submission(r))


# --- wellread grid -------------------------------------------------------------------------------

def _grid_config():
    from wellread.train.grid import GridConfig

    return GridConfig


@command("grid", _grid_config, "the paper's grid (batch 8..128 x lr 3e-4..3e-5, 4 epochs) per task, best on dev")
def _grid(cfg) -> None:
    from wellread.data.tasks import get_task
    from wellread.report.grid_tables import write_grid_report
    from wellread.train.grid import check_complete, run_grid

    r = run_grid(cfg)
    write_grid_report(r, cfg.out)
    check_complete(r, cfg.out)
    for task, t in r["tasks"].items():
        b = t["best"]
        print(f"{get_task(task).name}: best bs{b['batch_size']} lr{b['lr']:g} dev {100 * b['score']:.1f} "
              f"({t['finished']}/{t['total']} cells)")
    if r.get("glue_score") is not None:
        print(f"GLUE score (dev): {r['glue_score']:.1f}")
    print(f"-> {cfg.out / 'table.md'}, {cfg.out / 'results.json'}, {cfg.out / 'best.json'}")
    if r["failures"]:
        print(f"note: {len(r['failures'])} cell(s) failed; see {cfg.out / 'logs'}", file=sys.stderr)


# --- wellread predict / export / serve (infer/) --------------------------------------------------

Backend = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "auto"]  # = infer.predictor.BACKENDS, without importing it


@configclass
class PredictConfig:
    model: Path = field(help="a fine-tuned model directory (or its run directory), or a `wellread export` directory")
    input: str = field(help="inputs: .txt (a sentence a line), .tsv (header naming sentence, or sentence1/sentence2), "
                            ".jsonl (text or text_a/text_b), - for lines on stdin, or a task file (.yaml: its "
                            "--split, default test)")
    split: str | None = field(None, help="with a task file as --input: the split to predict (train, dev or test)")
    output: str = field(help="predictions: .jsonl, .tsv, or - for JSON lines on stdout (written atomically)")
    backend: Backend = field("torch", help="torch, onnx (fp32), onnx-int8, openvino (bf16 where the CPU has it), "
                                       "openvino-int8 (static int8, from `wellread export --int8`), or auto "
                                       "(the fastest here, see `wellread env`); an ONNX file missing from --model is "
                                       "exported on the fly")
    batch_size: int = field(64, ge=1, help="inputs per model call (inputs are sorted by length into batches)")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    text_a: str | None = field(None, help="the column / field holding the (first) text")
    text_b: str | None = field(None, help="the column / field holding the second text of a pair")
    chunk_size: int = field(4096, ge=1, help="inputs read, predicted and written at a time (memory stays constant)")
    threads: int | None = field(None, ge=1, help="CPU threads for the model (default: $OMP_NUM_THREADS, else all cores)")
    quiet: bool = field(False, help="no progress bar")


@command("predict", PredictConfig, "predict labels and probabilities (or scores) for a file of sentences or pairs")
def _predict(cfg: PredictConfig) -> None:
    from wellread.infer.loading import open_predictor
    from wellread.infer.qa import QAPredictor, is_qa_model, predict_qa_file
    from wellread.infer.stream import predict_file

    if is_qa_model(cfg.model):  # (question, context) -> answer, score, character offsets
        qa = QAPredictor(cfg.model, backend=cfg.backend, threads=cfg.threads)
        r = predict_qa_file(qa, cfg.input, cfg.output, text_a=cfg.text_a, text_b=cfg.text_b, chunk_size=cfg.chunk_size)
        if not cfg.quiet:
            print(f"answered {r['inputs']:,} questions in {r['seconds']:.1f} s ({cfg.backend}) -> {cfg.output}",
                  file=sys.stderr)
        return
    predictor = open_predictor(cfg.model, backend=cfg.backend, max_length=cfg.inputs.max_length, batch_size=cfg.batch_size,
                               threads=cfg.threads, quiet=cfg.quiet)
    r = predict_file(predictor, cfg.input, cfg.output, text_a=cfg.text_a, text_b=cfg.text_b, split=cfg.split,
                     chunk_size=cfg.chunk_size, progress=not cfg.quiet)
    if not cfg.quiet:
        print(f"predicted {r['inputs']:,} inputs in {r['seconds']:.1f} s ({r['inputs_per_s']:,.0f}/s, "
              f"{predictor.backend}) -> {cfg.output}", file=sys.stderr)


@configclass
class ExportConfig:
    model: Path = field(help="a fine-tuned model directory (or its run directory)")
    format: Literal["onnx"] = field("onnx", help="the export format (onnx)")
    int8: bool = field(False, help="also write model.int8.onnx (dynamic int8 quantisation, ONNX Runtime) and, where "
                                   "openvino and nncf are installed, model.int8.xml/.bin (static int8 for OpenVINO, "
                                   "calibrated on --task's training examples, else on built-in inputs)")
    out: Path = field(help="the directory to write: model.onnx, model.int8.onnx, config.json, tokenizer, export.json")
    opset: int = field(17, help="the ONNX opset")
    max_length: int = same(Inputs, "max_length", help="the input length the check truncates to")
    overwrite: bool = field(False, help=OVERWRITE_NO_EFFECT)
    task: str | None = field(None, help="with --int8: the accuracy gate: score each int8 model and its fp32 self on "
                                        "this task's dev split (a task file, or a GLUE name with --data-dir; squad / "
                                        "squad_v2 for a QA model: the held-out articles) and write nothing if int8 "
                                        "loses more than --int8-max-drop points; its training split calibrates "
                                        "the OpenVINO int8 model")
    data_dir: Path | None = field(None, help="with --task NAME: the GLUE root")
    int8_max_drop: float = field(1.0, ge=0, help="with --task: the most points (x100 of the task's score) int8 may "
                                                 "lose against fp32")

    def __post_init__(self) -> None:
        if self.task is not None and not self.int8:
            raise WellreadError("the accuracy gate checks the int8 model: add --int8", field="task")


@command("export", ExportConfig, "export a fine-tuned model to ONNX (and int8), checked against PyTorch")
def _export(cfg: ExportConfig) -> None:
    from wellread.infer.onnx import describe_check, export_onnx
    from wellread.infer.qa import is_qa_model

    if is_qa_model(cfg.model):
        _export_qa(cfg)
        return
    gate = calibration = None
    if cfg.task is not None:
        from wellread.data.tasks import get_task
        from wellread.infer.gate import calibration_inputs, int8_gate, refusal
        from wellread.infer.openvino import can_quantize

        spec = get_task(cfg.task)  # a bad task file: one line before anything is exported
        if can_quantize():  # read (and checked) before anything is written
            calibration = calibration_inputs(spec, cfg.data_dir)

        def gate(tmp: Path) -> dict:
            g = int8_gate(tmp, cfg.task, cfg.int8_max_drop, max_length=cfg.max_length, data_dir=cfg.data_dir)
            if not g["passed"]:
                raise WellreadError(f"{refusal(g)}; nothing written (export without --task for the fp32 model)",
                                    file=cfg.out)
            return g
    r = export_onnx(cfg.model, cfg.out, int8=cfg.int8, opset=cfg.opset, max_length=cfg.max_length, gate=gate,
                    calibration=calibration)
    print(f"exported {r['model']} ({r['exporter']}, opset {r['opset']}, {r['graph']}) -> {cfg.out}; "
          "checked against PyTorch:")
    print(describe_check(r))
    if "int8_gate" in r:
        g = r["int8_gate"]
        print(f"  int8 gate on {g['split']} ({g['n']:,} examples): fp32 {100 * g['fp32']:.2f}; "
              + "; ".join(f"{b} {100 * x['int8']:.2f} ({x['drop_points']:+.2f} points lost)"
                          for b, x in g["backends"].items())
              + f"; at most {g['max_drop_points']:g}: passed")


def _export_qa(cfg: ExportConfig) -> None:
    """``wellread export`` of a QA model; with --task squad|squad_v2 --data-dir D, the int8 models are calibrated
    on training questions and gated on the held-out ones (the split the fine-tuning run recorded)."""
    from wellread.infer.onnx import describe_check
    from wellread.infer.qa import calibration_questions, export_qa_onnx, qa_gate_data, qa_int8_gate

    calibration = gate = None
    if cfg.task is not None:
        if cfg.task not in ("squad", "squad_v2"):
            raise WellreadError(f"{cfg.model} is a question-answering model: its gate is --task squad or squad_v2 "
                                f"(with --data-dir), not {cfg.task!r}", field="task")
        if cfg.data_dir is None:
            raise WellreadError(f"--task {cfg.task} needs --data-dir (the folder of the SQuAD files)", field="data_dir")
        train, test, where = qa_gate_data(cfg.model, cfg.task, cfg.data_dir)
        calibration = calibration_questions(train)

        def gate(tmp: Path) -> dict:
            from wellread.infer.gate import refusal

            print(f"int8 gate: {len(test):,} held-out questions, answered by the fp32 model and each int8 model in "
                  "turn (minutes for a large model)", file=sys.stderr)
            g = qa_int8_gate(tmp, test, cfg.int8_max_drop, v2=cfg.task == "squad_v2") | {"data": where}
            if not g["passed"]:
                raise WellreadError(f"{refusal(g)}; nothing written (export without --task for the fp32 model)",
                                    file=cfg.out)
            return g
    r = export_qa_onnx(cfg.model, cfg.out, int8=cfg.int8, opset=cfg.opset, calibration=calibration, gate=gate)
    print(f"exported {r['model']} (question answering, opset {r['opset']}) -> {cfg.out}; checked against PyTorch:")
    print(describe_check(r))
    if "int8_gate" in r:
        g = r["int8_gate"]
        m = g["fp32_metrics"]
        print(f"  int8 gate on {g['n']:,} held-out questions: fp32 EM/F1 {m['exact_match']:.2f}/{m['f1']:.2f}; "
              + "; ".join(f"{b} {x['int8_metrics']['exact_match']:.2f}/{x['int8_metrics']['f1']:.2f} "
                          f"({x['drop_points']:+.2f} points lost)" for b, x in g["backends"].items())
              + f"; at most {g['max_drop_points']:g}: passed")



@configclass
class ServeConfig:
    model: Path = field(help="a fine-tuned model directory (or its run directory), or a `wellread export` directory")
    backend: Backend = same(PredictConfig, "backend", help="torch, onnx (fp32), onnx-int8, openvino, openvino-int8, "
                                                           "or auto (the "
                                                           "fastest here, see `wellread env`)")
    host: str = field("127.0.0.1", help="the address to listen on")
    port: int = field(8080, ge=0, le=65535, help="the port to listen on")
    batch_size: int = same(PredictConfig, "batch_size", help="micro-batching: at most this many inputs gathered "
                                                             "into one model call")
    max_wait_ms: float = field(5.0, ge=0, help="micro-batching: how long the first waiting request waits for company")
    max_body_bytes: int = field(1 << 20, ge=1, help="largest request body (413 above)")
    max_inputs: int = field(256, ge=1, help="most inputs in one request (413 above)")
    max_text_chars: int = field(10_000, ge=1, help="longest input text, in characters (413 above)")
    inputs: Inputs = group(Inputs, help="how inputs are cut (--max-length)")
    threads: int | None = same(PredictConfig, "threads")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = field("info", help="uvicorn's log level")
    access_log: bool = field(False, help="log every request")


@command("serve", ServeConfig, "serve predictions over HTTP (JSON; micro-batching; /predict, /health, /info)")
def _serve(cfg: ServeConfig) -> None:
    from wellread.infer.loading import open_predictor
    from wellread.infer.qa import QAPredictor, QAService, is_qa_model
    from wellread.infer.serve import Limits, serve

    if is_qa_model(cfg.model):  # POST /predict {"inputs": [{"question": .., "context": ..}]}
        predictor = QAService(QAPredictor(cfg.model, backend=cfg.backend, threads=cfg.threads))
    else:
        predictor = open_predictor(cfg.model, backend=cfg.backend, max_length=cfg.inputs.max_length,
                                   batch_size=cfg.batch_size, threads=cfg.threads)
    limits = Limits(max_body_bytes=cfg.max_body_bytes, max_inputs=cfg.max_inputs, max_text_chars=cfg.max_text_chars,
                    max_batch=cfg.batch_size, max_wait_ms=cfg.max_wait_ms)
    qa = isinstance(predictor, QAService)
    what = "question answering" if qa else ", ".join(predictor.labels or ["score"])
    print(f"serving {predictor.path} ({predictor.qa.backend if qa else predictor.backend}, {what}) on "
          f"http://{cfg.host}:{cfg.port}", file=sys.stderr)
    serve(predictor, host=cfg.host, port=cfg.port, limits=limits, log_level=cfg.log_level, access_log=cfg.access_log)


# --- wellread distill ----------------------------------------------------------------------------

def _distill_config():
    from wellread.train.distill import DistillConfig

    return DistillConfig


@command("distill", _distill_config, "Pre-trained Distillation: train a student on a teacher's soft labels "
                                     "(cached once) over a transfer set; --then-finetune")
def _distill(cfg) -> None:
    from wellread.train.distill import distill

    r = distill(cfg)
    dev = ", ".join(f"{k} {v:.4f}" for k, v in r["dev"].items() if "/" in k)
    line = f"distill {r['task']}: dev {dev} ({r['transfer_examples']:,} transfer examples"
    if "distill_dev" in r:
        line += "; after fine-tuning; distilled only: " + ", ".join(f"{k} {v:.4f}" for k, v in r["distill_dev"].items())
    final = r.get("final_model") or str(cfg.out / "model")
    print(line + f") -> {final}")
    for path, c in (r.get("transfer_files") or {}).items():
        print(f"  {path}: {c['read']:,} lines read, {c['skipped']:,} skipped (blank), {c['inputs']:,} inputs "
              f"labelled by the teacher", file=sys.stderr)


# --- wellread recipe / report --------------------------------------------------------------------

def _recipe_config():
    from wellread.recipe.own_task import TaskRecipeConfig  # RecipeConfig plus --task and its settings

    return TaskRecipeConfig


@command("recipe", _recipe_config, "the paper's recipe end to end: corpus, vocab, pre-training, teacher, "
                                   "distillation, the grid, evaluation, a report; --time-budget 20m; "
                                   "--task tickets.yaml for your own task")
def _recipe(cfg) -> None:
    from wellread.recipe.config import config_yaml

    if cfg.print_config:
        print(config_yaml(cfg), end="")
        return
    if cfg.task is not None:
        from wellread.recipe.own_task import format_task_summary, run_task_recipe

        print(format_task_summary(run_task_recipe(cfg)))
        return
    from wellread.recipe.stages import format_summary, run_recipe

    print(format_summary(run_recipe(cfg)))


@configclass
class ReportConfig:
    runs: list[Path] = field(help="run directories of any kind (a recipe, pretrain, finetune, distill or grid run), "
                                  "or folders holding them", positional=True)
    out: Path = field(Path("report"), help="the folder to write report.md, report.html and their PNGs to")
    title: str | None = field(None, help="the report's title")
    open: bool = field(False, help="print only the path of report.html, to open it")


@command("report", ReportConfig, "a report from run directories: GLUE table beside the paper's, PD comparison, "
                                 "curves, heatmaps, timings (report.md, report.html)")
def _report(cfg: ReportConfig) -> None:
    from wellread.report import write_report

    files = write_report(cfg.runs, cfg.out, title=cfg.title)
    if cfg.open:
        print(files[1].resolve())
        return
    print(f"wrote {files[0]} and {files[1]} ({len(files) - 3} figure(s))")


# --- the parser ----------------------------------------------------------------------------------

def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``only``, the flags of that one command (others are listed with their help
    but not built: some configs import torch and transformers, seconds that `--help` or a bad flag need not pay)."""
    parser = argparse.ArgumentParser(prog="wellread", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"wellread {__version__}")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, cmd in COMMANDS.items():
        parts = name.split()
        sub = top
        for i, part in enumerate(parts[:-1]):
            key = " ".join(parts[: i + 1])
            if key not in groups:
                gp = sub.add_parser(part, help=f"{part} commands")
                groups[key] = gp.add_subparsers(dest=f"sub_{i}", metavar="SUBCOMMAND", required=True)
            sub = groups[key]
        p = sub.add_parser(parts[-1], help=cmd.help, description=cmd.help)
        if only is None or name == only:
            add_arguments(p, cmd.config_class)
            p.set_defaults(_command=name)
    return parser


def _requested(argv: list[str]) -> str:
    """The command ``argv`` names ("data stats", "finetune"), or "" when it names none."""
    for n in (2, 1):
        if " ".join(argv[:n]) in COMMANDS:
            return " ".join(argv[:n])
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_requested(argv))
    ns = parser.parse_args(argv)
    if not getattr(ns, "_command", None):
        parser.print_help()
        return 2
    cmd = COMMANDS[ns._command]
    try:
        cfg = from_args(cmd.config_class, ns)
        rc = cmd.run(cfg)
    except WellreadError as e:
        print(f"wellread {cmd.name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"wellread {cmd.name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
