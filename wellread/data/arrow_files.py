"""Parquet files and arrow files (``datasets``' ``save_to_disk``) read in record batches with pyarrow, with the
``ClassLabel`` names of a ``label`` column (from the schema's ``huggingface`` metadata or ``dataset_info.json``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from wellread.errors import WellreadError


def _names_from_metadata(metadata: dict | None) -> list[str] | None:
    """ClassLabel names from an arrow schema's ``huggingface`` metadata (what ``datasets`` writes)."""
    if not metadata or b"huggingface" not in metadata:
        return None
    try:
        info = json.loads(metadata[b"huggingface"])
    except ValueError:
        return None
    return _names_from_features((info.get("info") or {}).get("features"))


def _names_from_features(features: dict | None) -> list[str] | None:
    label = (features or {}).get("label")
    if isinstance(label, dict) and isinstance(label.get("names"), list):
        return [str(n) for n in label["names"]]
    return None


def record_batches(path: Path) -> Iterator[tuple[dict, list[str] | None]]:
    """(columns as lists, ClassLabel names) per record batch of a parquet or arrow file."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise WellreadError("reading a Hugging Face datasets copy needs pyarrow (pip install pyarrow)",
                            file=path) from None
    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            names = _names_from_metadata(pf.schema_arrow.metadata)
            for batch in pf.iter_batches(batch_size=8192):
                yield batch.to_pydict(), names
            return
        info = path.parent / "dataset_info.json"
        info_names = _names_from_features(json.loads(info.read_text("utf-8")).get("features")) if info.is_file() else None
        with pa.memory_map(str(path)) as source:
            try:
                reader = pa.ipc.open_stream(source)
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_file(source)
            names = info_names or _names_from_metadata(reader.schema.metadata)
            batches = reader if isinstance(reader, pa.ipc.RecordBatchStreamReader) else (
                reader.get_batch(i) for i in range(reader.num_record_batches))
            for batch in batches:
                yield batch.to_pydict(), names
    except (pa.ArrowException, OSError) as e:
        raise WellreadError(f"cannot read as {path.suffix[1:]}: {e}", file=path) from None
