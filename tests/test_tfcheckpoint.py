"""The tensor-bundle reader on real checkpoints written by TensorFlow (tests/fixtures/tf_bert, made by
tests/fixtures/make_tf_checkpoint.py), and on corrupted copies of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from wellread.errors import WellreadError
from wellread.modeling import tfcheckpoint
from wellread.modeling.tfcheckpoint import CheckpointReader, list_variables, mask_crc, masked_crc32c, parse_proto

FIXTURE = Path(__file__).parent / "fixtures" / "tf_bert"
INDEX = "bert_model.ckpt.index"
DATA = "bert_model.ckpt.data-00000-of-00001"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A private copy of the TF1 fixture, free to corrupt."""
    dst = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("tf2"))
    return dst


def test_crc32c_is_the_castagnoli_checksum_masked_as_tf_does():
    import google_crc32c

    assert google_crc32c.value(b"123456789") == 0xE3069283  # the standard check value of CRC-32C
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert mask_crc(0) == 0xA282EAD8


def test_lists_google_names_with_adam_slots_and_global_step():
    config = json.loads((FIXTURE / "bert_config.json").read_text())
    shapes = dict((n, tuple(s)) for n, s in list_variables(FIXTURE))
    assert shapes["bert/embeddings/word_embeddings"] == (config["vocab_size"], config["hidden_size"])
    assert shapes["bert/encoder/layer_1/intermediate/dense/kernel"] == (config["hidden_size"], config["intermediate_size"])
    assert shapes["cls/seq_relationship/output_weights"] == (2, config["hidden_size"])
    weights = [n for n in shapes if not n.endswith(("adam_m", "adam_v")) and n != "global_step"]
    assert len(weights) == 46
    for n in weights:
        assert shapes[f"{n}/adam_m"] == shapes[n] == shapes[f"{n}/adam_v"]
    assert shapes["global_step"] == ()
    assert list(shapes) == sorted(shapes)  # an SSTable is sorted by key


def test_reads_values_tf_wrote():
    reader = CheckpointReader(FIXTURE)
    assert reader.header.num_shards == 1 and reader.header.endianness == 0
    step = reader.read("global_step")
    assert step.dtype == np.int64 and int(step) == 1_000_000
    emb = reader.read("bert/embeddings/word_embeddings")
    assert emb.dtype == np.float32 and emb.shape == (100, 32) and np.isfinite(emb).all() and emb.std() > 0.01
    # the slots are |N(0, 1e-3)| draws: non-negative, small, not copies of the weights
    m = reader.read("bert/embeddings/word_embeddings/adam_m")
    assert (m >= 0).all() and m.max() < 0.01 and not np.array_equal(m, emb)
    # the embedding LayerNorm gamma was perturbed around 1 in the source model
    gamma = reader.read("bert/embeddings/LayerNorm/gamma")
    assert abs(gamma.mean() - 1) < 0.2 and gamma.std() > 0.05


def test_reads_a_tf2_object_based_checkpoint_and_its_string_tensor():
    reader = CheckpointReader(FIXTURE / "tf2")
    graph = reader.read("_CHECKPOINTABLE_OBJECT_GRAPH")  # a DT_STRING scalar with its own checksum layout
    assert graph.shape == () and isinstance(graph.item(), bytes)
    fields = parse_proto(graph.item())  # TrackableObjectGraph: repeated nodes (field 1)
    assert fields and all(num == 1 for num, _, _ in fields)
    assert b"layer_with_weights-0" in graph.item()
    kernel = reader.read("model/layer_with_weights-4/_attention_layer/_query_dense/kernel/.ATTRIBUTES/VARIABLE_VALUE")
    assert kernel.shape == (32, 2, 16)


def test_every_flipped_index_byte_is_refused_or_harmless(ckpt: Path):
    """Flip each byte of the index in turn: the reader raises WellreadError naming the index, or (for
    bytes it never uses: footer padding, the empty metaindex handle) reads exactly the same entries."""
    original = CheckpointReader(ckpt).entries
    data = (ckpt / INDEX).read_bytes()
    refused, harmless = 0, []
    for pos in range(len(data)):
        corrupt = bytearray(data)
        corrupt[pos] ^= 0x5A
        (ckpt / INDEX).write_bytes(bytes(corrupt))
        try:
            entries = CheckpointReader(ckpt).entries
        except WellreadError as e:
            assert INDEX in str(e) or DATA in str(e)
            refused += 1
            continue
        assert entries == original, f"flipping byte {pos} of the index gave a different model silently"
        harmless.append(pos)
    assert refused > len(data) * 0.99
    assert all(pos >= len(data) - tfcheckpoint.FOOTER_SIZE for pos in harmless)  # unused footer padding only


def test_truncated_index_is_refused(ckpt: Path):
    data = (ckpt / INDEX).read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        (ckpt / INDEX).write_bytes(data[:cut])
        with pytest.raises(WellreadError, match="corrupt checkpoint index"):
            CheckpointReader(ckpt)


def test_truncated_data_file_is_refused_naming_file_and_tensor(ckpt: Path):
    data = (ckpt / DATA).read_bytes()
    (ckpt / DATA).write_bytes(data[:-1])
    with pytest.raises(WellreadError, match="truncated") as err:
        CheckpointReader(ckpt)
    assert DATA in str(err.value) and "tensor " in str(err.value)
    (ckpt / DATA).write_bytes(data[: len(data) // 2])
    with pytest.raises(WellreadError, match="truncated"):
        CheckpointReader(ckpt)


def test_flipped_data_byte_fails_that_tensors_checksum(ckpt: Path):
    reader = CheckpointReader(ckpt)
    e = reader.entries["bert/encoder/layer_0/attention/self/query/kernel"]
    data = bytearray((ckpt / DATA).read_bytes())
    data[e.offset + 7] ^= 0x01
    (ckpt / DATA).write_bytes(bytes(data))
    reader = CheckpointReader(ckpt)  # the layout is intact ...
    with pytest.raises(WellreadError, match="checksum mismatch for tensor bert/encoder/layer_0/attention/self/query/kernel"):
        reader.read(e.name)  # ... but the bytes are not
    reader.read("bert/embeddings/word_embeddings")  # the others still read


def test_missing_data_file_is_refused(ckpt: Path):
    (ckpt / DATA).unlink()
    with pytest.raises(WellreadError, match="data file missing"):
        CheckpointReader(ckpt)


def test_compressed_blocks_are_refused_clearly(ckpt: Path):
    """TF writes bundles uncompressed; a snappy block (type 1, valid checksum) gets a clear refusal."""
    import google_crc32c

    data = bytearray((ckpt / INDEX).read_bytes())
    footer = bytes(data[-tfcheckpoint.FOOTER_SIZE:])
    _, _, pos = tfcheckpoint._block_handle(footer, 0)
    offset, size, _ = tfcheckpoint._block_handle(footer, pos)
    data[offset + size] = 1
    crc = mask_crc(google_crc32c.extend(google_crc32c.value(bytes(data[offset:offset + size])), b"\x01"))
    data[offset + size + 1: offset + size + 5] = crc.to_bytes(4, "little")
    (ckpt / INDEX).write_bytes(bytes(data))
    with pytest.raises(WellreadError, match="snappy"):
        CheckpointReader(ckpt)


def test_finds_the_prefix_from_a_directory_an_index_or_a_data_file(ckpt: Path):
    prefix = ckpt / "bert_model.ckpt"
    for given in (ckpt, ckpt / INDEX, ckpt / DATA, prefix):
        assert tfcheckpoint.find_prefix(given) == prefix
    (ckpt.parent / "empty").mkdir()
    with pytest.raises(WellreadError, match="no TensorFlow checkpoint"):
        tfcheckpoint.find_prefix(ckpt.parent / "empty")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def write_table(items: list[tuple[bytes, bytes]], block_size: int, restart_interval: int = 4) -> bytes:
    """An SSTable per LevelDB's format spec, with small blocks (TF's are 256 KiB, so real BERT
    indexes fit one block): prefix-compressed keys, restart points, checksummed trailers."""
    import google_crc32c

    out = bytearray()

    def block(entries: list[tuple[bytes, bytes]]) -> bytes:
        body, restarts, prev = bytearray(), [], b""
        for i, (k, v) in enumerate(entries):
            shared = 0
            if i % restart_interval:
                while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                    shared += 1
            else:
                restarts.append(len(body))
            body += _varint(shared) + _varint(len(k) - shared) + _varint(len(v)) + k[shared:] + v
            prev = k
        for r in restarts:
            body += r.to_bytes(4, "little")
        return bytes(body + len(restarts).to_bytes(4, "little"))

    def emit(contents: bytes) -> bytes:
        handle = _varint(len(out)) + _varint(len(contents))
        crc = mask_crc(google_crc32c.extend(google_crc32c.value(contents), b"\x00"))
        out.extend(contents + b"\x00" + crc.to_bytes(4, "little"))
        return handle

    index, current = [], []
    for k, v in items:
        current.append((k, v))
        if sum(len(a) + len(b) + 3 for a, b in current) >= block_size:
            index.append((k, emit(block(current))))
            current = []
    if current:
        index.append((current[-1][0], emit(block(current))))
    meta = emit(block([]))
    handles = meta + emit(block(index))
    return bytes(out + handles + bytes(40 - len(handles)) + tfcheckpoint.TABLE_MAGIC.to_bytes(8, "little"))


def test_a_multi_block_index_written_per_spec_reads_the_same(ckpt: Path):
    items = list(tfcheckpoint.read_table((ckpt / INDEX).read_bytes()))
    original = CheckpointReader(ckpt)
    table = write_table(items, block_size=300)
    assert len(table) > len((ckpt / INDEX).read_bytes())  # more blocks, more trailers and restarts
    (ckpt / INDEX).write_bytes(table)
    rebuilt = CheckpointReader(ckpt)
    assert rebuilt.entries == original.entries and rebuilt.header == original.header
    np.testing.assert_array_equal(rebuilt.read("bert/pooler/dense/kernel"), original.read("bert/pooler/dense/kernel"))
    (ckpt / INDEX).write_bytes(write_table(items[::-1], block_size=300))  # keys out of order: refused
    with pytest.raises(WellreadError, match="out of order"):
        CheckpointReader(ckpt)
