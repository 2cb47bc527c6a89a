"""Read TensorFlow checkpoints (the tensor-bundle format) with numpy alone, no TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus ``PREFIX.data-0000k-of-0000n``. The index is a
LevelDB-style SSTable: a 48-byte footer (metaindex and index ``BlockHandle``s as varints, padding,
magic ``0xdb4775248b80fb57``) and blocks of prefix-compressed key/value entries with restart points,
each block followed by a 5-byte trailer (compression type, masked CRC32C). The empty key holds a
``BundleHeaderProto`` (shard count, endianness); every other key is a tensor name whose value is a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC32C of the bytes). The data files
hold the raw little-endian tensors at those offsets.

Every check TF makes is made here too (block checksums, tensor sizes and checksums), so a corrupted
index or a truncated data file is refused with the file and tensor named, never read as a wrong
model. TF writes bundles uncompressed; a snappy-compressed block is refused rather than adding a
dependency for a case TF does not produce. Protobufs are decoded from the wire format by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from wellread.errors import WellreadError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles padded to 2 x 20 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked CRC32C
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto DataType -> numpy dtype (little-endian).
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    5: np.dtype("<i2"),  # DT_INT16
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    14: np.dtype("<u2"),  # DT_BFLOAT16: the top half of a float32; widened on read
    17: np.dtype("<u2"),  # DT_UINT16
    19: np.dtype("<f2"),  # DT_HALF
    22: np.dtype("<u4"),  # DT_UINT32
    23: np.dtype("<u8"),  # DT_UINT64
}
DT_STRING = 7
DT_BFLOAT16 = 14
DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
               9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 22: "uint32", 23: "uint64"}


def mask_crc(crc: int) -> int:
    """TF's (and LevelDB's) masked CRC: rotate right by 15 and add a constant, so a CRC of data that
    itself holds CRCs is not degenerate."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview) -> int:
    return mask_crc(google_crc32c.value(bytes(data)))


# --- protobuf wire format ---------------------------------------------------------------------

class _Corrupt(Exception):
    """Internal: a structural error in the index, turned into a WellreadError naming the file."""


def _varint(buf: bytes | memoryview, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode one base-128 varint at ``pos``; returns (value, next position)."""
    end = len(buf) if limit is None else limit
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt("malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_proto(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field of a serialized message, in order.

    Varints and fixed-width fields come back as ints, length-delimited fields as bytes; groups
    (wire types 3 and 4, deprecated) do not occur in the messages read here and are refused.
    """
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wt = tag >> 3, tag & 7
        if num == 0:
            raise _Corrupt("field number 0")
        if wt == 0:
            v, pos = _varint(buf, pos)
        elif wt == 1:
            if pos + 8 > len(buf):
                raise _Corrupt("truncated fixed64")
            v = int.from_bytes(buf[pos:pos + 8], "little")
            pos += 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise _Corrupt("truncated length-delimited field")
            v = bytes(buf[pos:pos + n])
            pos += n
        elif wt == 5:
            if pos + 4 > len(buf):
                raise _Corrupt("truncated fixed32")
            v = int.from_bytes(buf[pos:pos + 4], "little")
            pos += 4
        else:
            raise _Corrupt(f"unsupported wire type {wt}")
        out.append((num, wt, v))
    return out


@dataclass(frozen=True)
class BundleHeader:
    """BundleHeaderProto: number of data shards, byte order (0 little, 1 big), format version."""

    num_shards: int = 1
    endianness: int = 0
    version_producer: int = 0


@dataclass(frozen=True)
class TensorEntry:
    """BundleEntryProto: where one tensor lives and how to check it."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked; None when the writer recorded none
    sliced: bool = False

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, f"dtype#{self.dtype}")


def _parse_header(buf: bytes) -> BundleHeader:
    num_shards, endianness, producer = 1, 0, 0
    for num, _, v in parse_proto(buf):
        if num == 1:
            num_shards = int(v)
        elif num == 2:
            endianness = int(v)
        elif num == 3 and isinstance(v, bytes):
            producer = next((int(x) for n, _, x in parse_proto(v) if n == 1), 0)
    return BundleHeader(num_shards, endianness, producer)


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims: list[int] = []
    for num, _, v in parse_proto(buf):
        if num == 2 and isinstance(v, bytes):  # Dim { int64 size = 1; string name = 2; }
            dims.append(next((_int64(int(x)) for n, _, x in parse_proto(v) if n == 1), 0))
        elif num == 3 and v:
            raise _Corrupt("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    crc: int | None = None
    sliced = False
    for num, _, v in parse_proto(buf):
        if num == 1:
            dtype = int(v)
        elif num == 2 and isinstance(v, bytes):
            shape = _parse_shape(v)
        elif num == 3:
            shard = int(v)
        elif num == 4:
            offset = _int64(int(v))
        elif num == 5:
            size = _int64(int(v))
        elif num == 6:
            crc = int(v)
        elif num == 7:
            sliced = True
    return TensorEntry(name, dtype, shape, shard, offset, size, crc, sliced)


# --- the SSTable ------------------------------------------------------------------------------

def _block_handle(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, limit)
    size, pos = _varint(buf, pos, limit)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    """A block's contents, after checking its trailer's checksum and that it is uncompressed."""
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise _Corrupt(f"block at {offset} (+{size}) runs past the end of the file")
    contents = data[offset:end]
    kind = data[end]
    stored = int.from_bytes(data[end + 1:end + 5], "little")
    actual = mask_crc(google_crc32c.extend(google_crc32c.value(contents), bytes([kind])))
    if stored != actual:
        raise _Corrupt(f"checksum mismatch in the block at byte {offset}")
    if kind == 1:
        raise _Corrupt("snappy-compressed block (TF writes bundles uncompressed; not supported)")
    if kind != 0:
        raise _Corrupt(f"unknown block compression type {kind}")
    return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block: shared-prefix length, unshared length, value length, bytes."""
    if len(block) < 4:
        raise _Corrupt("block too short")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (num_restarts + 1)
    if limit < 0:
        raise _Corrupt("block restart array larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit)
        unshared, pos = _varint(block, pos, limit)
        vlen, pos = _varint(block, pos, limit)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise _Corrupt("malformed block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable held in ``data``, in key order."""
    if len(data) < FOOTER_SIZE:
        raise _Corrupt(f"file is {len(data)} bytes, shorter than a table footer")
    footer = data[-FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != TABLE_MAGIC:
        raise _Corrupt("bad table magic number (not a TF checkpoint index, or truncated)")
    meta_offset, meta_size, pos = _block_handle(footer, 0, FOOTER_SIZE - 8)
    index_offset, index_size, _ = _block_handle(footer, pos, FOOTER_SIZE - 8)
    for _ in _block_entries(_read_block(data, meta_offset, meta_size)):  # TF writes it empty; checked all the same
        pass
    index = _read_block(data, index_offset, index_size)
    previous = None
    for _, handle in _block_entries(index):
        off, size, _ = _block_handle(handle, 0)
        for key, value in _block_entries(_read_block(data, off, size)):
            if previous is not None and key <= previous:
                raise _Corrupt("keys out of order")
            previous = key
            yield key, value


# --- the bundle -------------------------------------------------------------------------------

def _data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def find_prefix(path: str | Path) -> Path:
    """The checkpoint prefix for a directory, a ``.index`` file, a data file, or a prefix itself.

    A directory must hold one ``*.index`` or a ``checkpoint`` file naming the one to use.
    """
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        state = path / "checkpoint"
        if indexes and state.is_file():
            for line in state.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    return (path / Path(name).name) if not Path(name).is_absolute() else Path(name)
        if not indexes:
            raise WellreadError("no TensorFlow checkpoint here (no *.index file)", file=path)
        raise WellreadError(f"several checkpoints here ({', '.join(p.name for p in indexes)}); name one",
                            file=path)
    if path.suffix == ".index":
        return path.with_suffix("")
    if ".data-" in path.name:
        return path.with_name(path.name.split(".data-")[0])
    if path.with_name(path.name + ".index").is_file():
        return path
    raise WellreadError("no such TensorFlow checkpoint (expected PREFIX.index and PREFIX.data-*)", file=path)


class CheckpointReader:
    """The tensors of one TF checkpoint, read and verified with numpy.

    Opening reads and checks the whole index and that every tensor lies inside its data file (so a
    truncated data file is refused before anything is converted); ``read`` checks each tensor's
    CRC32C.
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = find_prefix(prefix)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        if not self.index_path.is_file():
            raise WellreadError("no checkpoint index file", file=self.index_path)
        self.header = BundleHeader()
        self.entries: dict[str, TensorEntry] = {}
        try:
            data = self.index_path.read_bytes()
            for key, value in read_table(data):
                if key == b"":
                    self.header = _parse_header(value)
                    continue
                name = key.decode("utf-8")
                self.entries[name] = _parse_entry(name, value)
        except (_Corrupt, UnicodeDecodeError) as e:
            raise WellreadError(f"corrupt checkpoint index: {e}", file=self.index_path) from None
        if self.header.endianness != 0:
            raise WellreadError("big-endian checkpoint; only little-endian bundles are supported",
                                file=self.index_path)
        if not self.entries:
            raise WellreadError("checkpoint index lists no tensors", file=self.index_path)
        self._check_layout()

    def _check_layout(self) -> None:
        n = self.header.num_shards
        sizes: dict[int, int] = {}
        for e in self.entries.values():
            if not 0 <= e.shard_id < n:
                raise WellreadError(f"tensor {e.name} names shard {e.shard_id} of {n}", file=self.index_path,
                                    field=e.name)
            if e.sliced:
                raise WellreadError(f"tensor {e.name} is partitioned into slices; not supported",
                                    file=self.index_path, field=e.name)
            dt = DTYPES.get(e.dtype)
            if dt is None and e.dtype != DT_STRING:
                raise WellreadError(f"tensor {e.name} has unsupported dtype {e.dtype_name}",
                                    file=self.index_path, field=e.name)
            if any(d < 0 for d in e.shape) or e.offset < 0 or e.size < 0:
                raise WellreadError(f"tensor {e.name} has a negative shape, offset or size",
                                    file=self.index_path, field=e.name)
            if dt is not None and e.size != int(np.prod(e.shape, dtype=np.int64)) * dt.itemsize:
                raise WellreadError(
                    f"tensor {e.name}: {e.size} bytes recorded for shape {list(e.shape)} of {e.dtype_name}",
                    file=self.index_path, field=e.name)
            if e.shard_id not in sizes:
                f = self.data_path(e.shard_id)
                if not f.is_file():
                    raise WellreadError("checkpoint data file missing", file=f)
                sizes[e.shard_id] = f.stat().st_size
            if e.offset + e.size > sizes[e.shard_id]:
                raise WellreadError(
                    f"data file is truncated: tensor {e.name} needs bytes {e.offset}..{e.offset + e.size} "
                    f"but the file has {sizes[e.shard_id]}",
                    file=self.data_path(e.shard_id), field=e.name)

    def data_path(self, shard: int) -> Path:
        return _data_path(self.prefix, shard, self.header.num_shards)

    def names(self) -> list[str]:
        return list(self.entries)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: e.shape for n, e in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        """One tensor as a numpy array (bfloat16 widened to float32; strings as an object array of bytes)."""
        if name not in self.entries:
            raise WellreadError(f"no tensor {name!r} in the checkpoint", file=self.index_path, field=name)
        e = self.entries[name]
        path = self.data_path(e.shard_id)
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise WellreadError(f"data file is truncated inside tensor {name}", file=path, field=name)
        if e.dtype == DT_STRING:
            return _decode_strings(raw, e, path)
        if e.crc32c is not None and masked_crc32c(raw) != e.crc32c:
            raise WellreadError(f"checksum mismatch for tensor {name} (corrupt data file or index)",
                                file=path, field=name)
        arr = np.frombuffer(raw, dtype=DTYPES[e.dtype]).reshape(e.shape)
        if e.dtype == DT_BFLOAT16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr.copy()

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.entries:
            yield name, self.read(name)


def _decode_strings(raw: bytes, e: TensorEntry, path: Path) -> np.ndarray:
    """A string tensor: n varint64 lengths, a masked CRC32C of those lengths (4 bytes), the bytes.

    TF's checksum of a string tensor covers each length as a little-endian uint32 (uint64 past
    4 GiB), then the 4 checksum bytes, then the strings: not the bytes as stored.
    """
    n = int(np.prod(e.shape, dtype=np.int64))
    try:
        lengths, pos = [], 0
        for _ in range(n):
            v, pos = _varint(raw, pos)
            lengths.append(v)
        crc = 0
        for length in lengths:
            crc = google_crc32c.extend(crc, length.to_bytes(4 if length <= 0xFFFFFFFF else 8, "little"))
        stored = raw[pos:pos + 4]
        if len(stored) != 4 or int.from_bytes(stored, "little") != mask_crc(crc):
            raise _Corrupt("checksum mismatch in the string lengths")
        crc = google_crc32c.extend(crc, stored)
        pos += 4
        out = []
        for length in lengths:
            if pos + length > len(raw):
                raise _Corrupt("string runs past the tensor")
            out.append(raw[pos:pos + length])
            crc = google_crc32c.extend(crc, out[-1])
            pos += length
        if e.crc32c is not None and mask_crc(crc) != e.crc32c:
            raise _Corrupt("checksum mismatch")
    except _Corrupt as err:
        raise WellreadError(f"string tensor {e.name}: {err}", file=path, field=e.name) from None
    arr = np.empty(n, dtype=object)
    arr[:] = out
    return arr.reshape(e.shape)


def list_variables(path: str | Path) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor, as ``tf.train.list_variables`` returns them."""
    reader = CheckpointReader(path)
    return [(n, list(e.shape)) for n, e in sorted(reader.entries.items())]


__all__ = ["CheckpointReader", "TensorEntry", "BundleHeader", "find_prefix", "list_variables", "masked_crc32c",
           "parse_proto", "read_table"]

