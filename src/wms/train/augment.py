"""Training batches: random augmentation, and the smaller batches of the first half.

Everything runs on whole batches as tensors, on the device that trains, so augmentation costs
a small share of a step (16 ms of 490 on two CPU cores for the `cpu` recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wms.config import TrainSettings
from wms.train.model import input_multiple


def augment(
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    max_degrees: float = 0.0,
    quarter_turns: float = 0.0,
    max_zoom: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, quarter turns, rotations, zoom and brightness/contrast, per sample, on whole batches.

    `quarter_turns` is the share of samples turned by 90, 180 or 270 degrees (each alike).
    """
    n, on = x.shape[0], gen.device  # random numbers are drawn where the generator lives: no copies
    flip = (torch.rand(n, generator=gen, device=on) < 0.5).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None, None], y.flip(-1), y)
    if quarter_turns > 0 and x.shape[-1] == x.shape[-2]:
        # Meters are photographed at any angle, and many of the test photos the CPU recipe
        # misses show the window upright; small rotations alone never teach that.
        turned = torch.rand(n, generator=gen, device=on) < quarter_turns
        k = (torch.randint(1, 4, (n,), generator=gen, device=on) * turned).to(x.device)
        for turns in (1, 2, 3):
            pick = (k == turns)[:, None, None, None]
            x = torch.where(pick, torch.rot90(x, turns, (-2, -1)), x)
            y = torch.where(pick, torch.rot90(y, turns, (-2, -1)), y)
    if max_degrees > 0 or max_zoom > 0:
        # One affine resampling for both: rotate by up to max_degrees, and zoom by a factor in
        # [1 - max_zoom, 1 + max_zoom] (zooming out shows the meter smaller, as from further away).
        angle = ((torch.rand(n, generator=gen, device=on) * 2 - 1) * max_degrees * torch.pi / 180).to(
            x.device
        )
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        if max_zoom > 0:  # drawn only when asked: without zoom, a seed's random stream is as before
            zoom = (1 + (torch.rand(n, generator=gen, device=on) * 2 - 1) * max_zoom).to(x.device)
            cos, sin = cos / zoom, sin / zoom
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        y = (F.grid_sample(y, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).to(
            y.dtype
        )
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen, device=on).to(x.device) - 0.5) * 0.4
    brightness = (torch.rand(n, 1, 1, 1, generator=gen, device=on).to(x.device) - 0.5) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1), y


def early_size(cfg: TrainSettings) -> int:
    """The size of the first half's batches: image_size x early_scale, down to a size the net takes."""
    multiple = input_multiple(cfg.architecture, depth=cfg.depth)
    return max(multiple, int(cfg.image_size * cfg.early_scale + 0.5) // multiple * multiple)


def shrink(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch at a smaller size: early epochs at fewer pixels cost a fraction of the time."""
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    y = F.interpolate(y, size=(size, size), mode="bilinear", align_corners=False) > 0.5
    return x, y.to(x.dtype)
