"""Where a decoded training set lives while a model trains on a GPU: in the GPU's memory or the host's.

In the GPU's memory, a batch is sliced where it is used and never copied per step. But the set
grows with every batch pushed (about 1 MB a pair at 512 px: 3 bytes a pixel for the photo and 1
for the mask), and a GPU's memory does not: a set that filled it would stop every training from
then on with an out-of-memory error. So the set goes to the GPU while it takes at most
`GPU_SHARE` of the memory free there. A larger one stays in host memory (memory-mapped from the
training cache where there is one), and each batch is copied to the GPU as uint8, a quarter of
float32's bytes: slower, and the same model. On the CPU the set is always in host memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

GPU_SHARE = 0.5  # the rest is the network's: weights, optimizer state, activations


def gpu_free_bytes(device: str) -> int:
    """The memory free on the GPU `device` (tests fake it here, at the boundary)."""
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def on_device(device: str, nbytes: int) -> bool:
    """Whether a training set of `nbytes` is moved into the memory of `device`, a GPU's."""
    return device.startswith("cuda") and nbytes <= GPU_SHARE * gpu_free_bytes(device)


class TrainingSet:
    """Decoded photos (uint8, N x 3 x S x S) and masks (bool, N x S x S), or their rows `rows`,
    kept in the memory of `device` where `on_device` says they fit (with `beside` more bytes that
    will sit there too), else in host memory. `take` gives a batch on the device either way."""

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        device: str,
        rows: np.ndarray | None = None,
        beside: int = 0,
    ) -> None:
        self.count = len(images) if rows is None else len(rows)
        nbytes = (images.nbytes + masks.nbytes) * self.count // max(1, len(images))
        self.device, self.rows = device, rows
        self.resident = on_device(device, nbytes + beside)
        self.images: Any = images
        self.masks: Any = masks
        if self.resident:
            held = slice(None) if rows is None else rows
            self.images = torch.from_numpy(np.asarray(images)[held]).to(device)
            self.masks = torch.from_numpy(np.asarray(masks)[held]).to(device)
            self.rows = None  # the tensors hold only those rows

    def __len__(self) -> int:
        return self.count

    def take(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos (uint8) and masks (bool, N x 1 x S x S) at `idx`, on the device: sliced there, or
        read from host memory and sent over as they are."""
        if self.resident:
            index = torch.from_numpy(idx).to(self.device)
            return self.images[index], self.masks[index][:, None]
        rows = idx if self.rows is None else self.rows[idx]
        images = torch.from_numpy(np.asarray(self.images[rows])).to(self.device)
        masks = torch.from_numpy(np.asarray(self.masks[rows])).to(self.device)
        return images, masks[:, None]
