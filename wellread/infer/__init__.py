"""Fast CPU inference with a fine-tuned model: one ``Predictor`` over three backends.

``predictor.py``  tokenise in batch (Rust), sort by length, pad each batch to its longest, run
                  PyTorch, ONNX Runtime fp32 or ONNX Runtime int8; labels and probabilities out
``stream.py``     ``wellread predict``: .txt / .tsv / .jsonl / stdin in chunks, results in input order,
                  written atomically
``onnx.py``       ``wellread export``: model.onnx (+ model.int8.onnx), checked against PyTorch
``loading.py``    ``open_predictor``: a Predictor, the ONNX graph exported on the fly when the directory lacks it
``serve.py``      ``wellread serve``: an HTTP JSON service (Starlette + uvicorn) with micro-batching
"""
