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


def host_batch(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos (float, 0 to 1) and masks (float, N x 1 x S x S) at `idx` of a set in host memory,
    on `device`: uint8 and bool cross to it, and are scaled there."""
    images = torch.from_numpy(np.asarray(x[idx])).to(device)
    masks = torch.from_numpy(np.asarray(y[idx])).to(device)
    return images.float() / 255, masks[:, None].float()
