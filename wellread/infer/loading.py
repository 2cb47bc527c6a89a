"""A ``Predictor`` for a model directory, its ONNX graph exported (and checked) on the fly when missing.

``predictor.py`` knows nothing of exporting and ``onnx.py`` checks an export with Predictors; this is
where the two meet, so neither imports the other's caller.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from wellread.infer.predictor import ONNX_FILES, Predictor, backend_files, check_backend
from wellread.io import model_directory


def open_predictor(model_dir: str | Path, *, backend: str = "torch", quiet: bool = False, **kwargs) -> Predictor:
    """``Predictor(model_dir, backend=backend, **kwargs)``; for an ONNX backend whose file the directory
    lacks, the model is exported first (as ``wellread export`` does, with its check against PyTorch)
    into a temporary directory and read from there."""
    path = model_directory(model_dir)
    backend = check_backend(backend)  # auto: the backend this CPU runs fastest
    name = ONNX_FILES.get(backend)
    if name is not None and not (path / name).is_file():
        from wellread.infer.onnx import export_onnx  # PyTorch and the exporter: only when an export is needed

        if not quiet:
            print(f"no {name} in {path}: exporting it now (run `wellread export` to do it once)", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="wellread-onnx-") as tmp:
            out = Path(tmp) / "export"
            export_onnx(path, out, int8=backend.endswith("-int8"), quiet=True)
            files = [(out / f).read_bytes() for f in backend_files(backend)]  # OpenVINO IR: graph and weights
            kwargs["onnx_model"] = files[0] if len(files) == 1 else tuple(files)
    return Predictor(path, backend=backend, **kwargs)
