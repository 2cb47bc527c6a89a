"""Batched no-grad inference over pre-tokenised features: logits in the original example order."""

from __future__ import annotations

import numpy as np
import torch

from wellread.data.batching import Features, collate, eval_batches


@torch.no_grad()
def predict_logits(model: torch.nn.Module, feats: Features, *, pad_id: int = 0, max_tokens: int = 16384,
                   device: torch.device | str = "cpu", bf16: bool = False) -> np.ndarray:
    """Logits (n, num_labels) of a sequence-classification model, batched by length for speed."""
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    for index in eval_batches(feats.lengths, max_tokens=max_tokens):
        batch = {k: v.to(device) for k, v in collate(feats, index, pad_id).items()}
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(feats), logits.shape[1]), dtype=np.float32)
        out[index] = logits
    model.train(was_training)
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def logits_to_predictions(logits: np.ndarray, labels: tuple[str, ...] | None) -> list:
    """Label names (argmax) for classification; the raw score for regression (``labels`` None)."""
    if labels is None:
        return logits[:, 0].astype(float).tolist()
    return [labels[i] for i in logits.argmax(axis=1)]
