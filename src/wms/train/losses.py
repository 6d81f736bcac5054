"""Training losses on logits and 0/1 masks of shape (N, 1, H, W), chosen by `train.loss`.

    [train]
    loss = "bce_dice"        # the default: pixel-wise BCE plus per-image soft Dice
    loss = "bce_lovasz"      # BCE plus the Lovász hinge, a surrogate of per-image IoU
    loss = "focal_tversky"   # per-image focal Tversky: missed window pixels cost more

Every loss is a mean over the images of the batch, so a small window weighs as much as a
large one. The Lovász hinge follows Berman et al., "The Lovász-Softmax loss" (CVPR 2018),
as in the authors' reference code; focal Tversky follows Abraham and Khan (ISBI 2019).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's soft Dice, shape (N,); 1 / (1 + predicted pixels) where the target is empty."""
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(1, 2, 3))
    denom = prob.sum(dim=(1, 2, 3)) + target.sum(dim=(1, 2, 3))
    return (2 * inter + 1) / (denom + 1)


def bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus soft Dice, averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    return bce + (1 - soft_dice(logits, target)).mean()


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Lovász hinge of each image, averaged: a convex surrogate of 1 - IoU of the window."""
    logits, labels = logits.flatten(1), target.flatten(1)
    errors = 1 - logits * (2 * labels - 1)
    errors_sorted, order = torch.sort(errors, dim=1, descending=True)
    labels_sorted = labels.gather(1, order)
    # The gradient of the Lovász extension of the Jaccard loss at the sorted errors.
    positives = labels_sorted.sum(dim=1, keepdim=True)
    intersection = positives - labels_sorted.cumsum(dim=1)
    union = positives + (1 - labels_sorted).cumsum(dim=1)
    jaccard = 1 - intersection / union
    grad = torch.diff(jaccard, dim=1, prepend=torch.zeros_like(jaccard[:, :1]))
    return (F.relu(errors_sorted) * grad).sum(dim=1).mean()


def bce_lovasz(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE plus the per-image Lovász hinge."""
    return F.binary_cross_entropy_with_logits(logits, target) + lovasz_hinge(logits, target)


def focal_tversky(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.7, beta: float = 0.3, gamma: float = 0.75
) -> torch.Tensor:
    """Per-image (1 - Tversky index) ** gamma, averaged; alpha weighs missed pixels, beta false ones."""
    prob = torch.sigmoid(logits)
    tp = (prob * target).sum(dim=(1, 2, 3))
    fn = ((1 - prob) * target).sum(dim=(1, 2, 3))
    fp = (prob * (1 - target)).sum(dim=(1, 2, 3))
    tversky = (tp + 1) / (tp + alpha * fn + beta * fp + 1)
    return ((1 - tversky).clamp(min=1e-6) ** gamma).mean()


LOSSES: dict[str, Loss] = {"bce_dice": bce_dice, "bce_lovasz": bce_lovasz, "focal_tversky": focal_tversky}


class RunningLoss:
    """A pass's losses, summed on the device. The host reads the running mean only `reads`
    times a pass (for the progress bar) and once at the end, since each read waits for a GPU."""

    def __init__(self, steps: int, device: torch.device | str, reads: int) -> None:
        self.total = torch.zeros((), device=device)
        self.count = 0
        self.read_every = max(1, steps // reads)

    def add(self, loss: torch.Tensor) -> float | None:
        """Counts one step's loss; returns the running mean on every `read_every`-th step."""
        self.total += loss.detach()
        self.count += 1
        return float(self.total) / self.count if self.count % self.read_every == 0 else None

    def mean(self) -> torch.Tensor:
        """The pass's mean loss, still on the device."""
        return self.total / max(self.count, 1)
