"""The training loss: per example, the mean cross-entropy over its answer tokens; and an
answer's whole log-likelihood, to rank a closed question's options."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared_model.inputs import IGNORE_INDEX


def answer_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row loss ``(batch,)``: mean next-token cross-entropy over the row's labelled tokens.

    Each row weighs the same whatever its answer length, so one long report cannot dominate a
    batch, and a row's gradient is the gradient of its own loss (what per-sample DP needs).
    """
    token_loss, mask = _labelled_token_losses(logits, labels)
    return (token_loss * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def answer_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-row log-likelihood ``(batch,)`` of the labelled tokens: the whole answer's, summed."""
    token_loss, mask = _labelled_token_losses(logits, labels)
    return -(token_loss * mask).sum(1)


def _labelled_token_losses(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy at every position and the mask of labelled ones."""
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    token_loss = F.cross_entropy(
        shifted_logits.transpose(1, 2), shifted_labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    return token_loss, (shifted_labels != IGNORE_INDEX).to(token_loss.dtype)


def answer_window(labels: torch.Tensor) -> int:
    """Positions from the one before the batch's first answer token to the end: the only
    logits :func:`answer_token_loss` reads (``logits_to_keep`` of the forward). At a vocabulary
    of 151,936, logits over a 768-token prompt would be 0.47 GB a row in float32."""
    answered = (labels != IGNORE_INDEX).any(0).nonzero()
    if len(answered) == 0:
        return 1
    return labels.shape[1] - int(answered[0]) + 1
