"""Train a model's second stage: a network that segments the window again in a crop around it.

    [train]
    refine_minutes = 8   # after the first network, this long on crops (0: no second stage)

What it learns from (wms.refine says how it predicts): for every training photo, a crop
around its true window, `refine_margin` times the window's length, turned so that the
window's long axis lies level (`refine_align`), at `refine_size` px. The crops are jittered
as the first network's regions would place them: the side by up to 25% either way, the
centre by up to 12% of the side, the axis by up to 15 degrees and either way round (an axis
has no direction), mirrored at random, with brightness and contrast jitter. The photos are
read at `SOURCE_SIDE` px, the side of the prepared real photos, so a crop keeps their detail.

It trains for `refine_minutes` (the time budget; `refine_epochs` passes over the photos
at most), with AdamW at train.learning_rate, warm-up and cosine decay as the first network,
on BCE + soft Dice. It keeps its last weights: there is no validation of the second stage
alone (the test split scores the two stages together). On the real photos, 8 minutes on two
CPU cores after a 20-minute first network at 128 px gave test Dice 0.92-0.93
(benchmarks/crop_refine.py).

With a checkpoint (a training job's, wms.train.checkpoint.second_stage_checkpoint), its state is
saved after every pass, and a job resumed after a reclaim goes on from the last pass with what
is left of its time budget: on the CPU to the same network as one never stopped. It learns from
the true windows, not the first network's, so it goes on whatever the first network became.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import astuple, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from wms.config import TrainSettings
from wms.crops import Box, Crop, locate
from wms.data.pairs import Pair
from wms.errors import ConfigError, TrainError
from wms.guards import signals_held
from wms.train.cache import cache_bytes, load_arrays
from wms.train.checkpoint import check_resumable, load_checkpoint, save_checkpoint, second_stage_settings
from wms.train.losses import RunningLoss, bce_dice
from wms.train.model import build_model, input_multiple
from wms.train.placement import TrainingSet
from wms.train.schedule import learning_rate
from wms.train.segmenter import Segmenter
from wms.train.spec import RefineSpec

if TYPE_CHECKING:
    from wms.train.progress import TrainReporter

SOURCE_SIDE = 512  # photos are read at this side for cropping (the prepared real photos')
BATCH = 16  # crops per step (as measured; the first network's train.batch_size is 8 in the cpu recipe)
READS_PER_PASS = 4  # how often per pass the host reads the running loss (each read syncs a GPU)
JITTER_SIDE, JITTER_CENTRE, JITTER_DEGREES = 0.25, 0.12, 15.0


def refine_spec(cfg: TrainSettings) -> RefineSpec:
    """The second stage the settings ask for, checked before any training starts."""
    kwargs = {"base_channels": cfg.base_channels, "depth": cfg.refine_depth or cfg.depth}
    multiple = input_multiple(cfg.architecture, **kwargs)
    if cfg.refine_size % multiple:
        raise ConfigError(
            f"train.refine_size={cfg.refine_size} must be divisible by {multiple} "
            "(2**train.refine_depth, or 2**train.depth where refine_depth is 0)"
        )
    return RefineSpec(cfg.refine_size, kwargs, cfg.refine_margin, cfg.refine_align)


def crop_batch(
    images: torch.Tensor, masks: torch.Tensor, crops: Sequence[Crop]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The crops of a batch of photos (N, 3, S, S) uint8 and masks (N, 1, S, S), as floats."""
    height, width = images.shape[-2:]
    theta = torch.tensor(np.stack([c.theta(height, width) for c in crops]), dtype=torch.float32)
    size = crops[0].size
    grid = F.affine_grid(theta.to(images.device), [len(crops), 1, size, size], align_corners=False)
    x = F.grid_sample(images.float() / 255, grid, mode="bilinear", align_corners=False)
    y = (F.grid_sample(masks.float(), grid, mode="bilinear", align_corners=False) > 0.5).float()
    return x, y


def jittered(boxes: np.ndarray, spec: RefineSpec, rng: np.random.Generator) -> list[Crop]:
    """Crops around true windows' boxes (cx, cy, side, angle), moved as stage 1 might box them."""
    n = len(boxes)
    side = boxes[:, 2] * np.exp(rng.uniform(-JITTER_SIDE, JITTER_SIDE, n))
    centre = boxes[:, :2] + rng.uniform(-JITTER_CENTRE, JITTER_CENTRE, (n, 2)) * side[:, None] * spec.margin
    angle = boxes[:, 3] + np.radians(rng.uniform(-JITTER_DEGREES, JITTER_DEGREES, n))
    if spec.align:
        angle += np.pi * (rng.random(n) < 0.5)
    mirror = rng.random(n) < 0.5
    return [
        Crop(Box(float(cx), float(cy), float(s), float(a)), spec.margin, spec.size, bool(m))
        for (cx, cy), s, a, m in zip(centre, side, angle, mirror, strict=True)
    ]


def train_second_stage(
    cfg: TrainSettings,
    first: Segmenter,
    train_pairs: Sequence[Pair],
    reporter: TrainReporter,
    cache_dir: Path | None,
    device: str,
    checkpoint: Path | None = None,
) -> tuple[Segmenter, dict[str, float]]:
    """`first` with a second stage trained on `train_pairs`' windows, and how training went;
    with `checkpoint`, saved after every pass and gone on from where one is."""
    spec = refine_spec(cfg)
    images_np, masks_np = load_arrays(train_pairs, SOURCE_SIDE, cache_dir, cache_bytes(cfg))
    boxes_found = [locate(np.asarray(m), spec.align) for m in masks_np]
    keep = [i for i, b in enumerate(boxes_found) if b is not None]
    if not keep:
        raise TrainError("no training mask has a window to crop around; the second stage cannot train")
    boxes = np.array([astuple(b) for b in boxes_found if b is not None])
    # On the GPU while the photos kept fit there; else each batch is read from the cache's
    # mapping and sent over, and the set is never copied whole into memory (wms.train.placement).
    windows = TrainingSet(images_np, masks_np, device, rows=np.array(keep))

    torch.manual_seed(cfg.seed + 2)
    rng = np.random.default_rng(cfg.seed + 2)
    model = build_model(cfg.architecture, **spec.kwargs)
    model = model.to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = -(-len(keep) // BATCH)
    total = max(1, cfg.refine_epochs * steps)
    budget = cfg.refine_minutes * 60 or float("inf")
    history: list[dict[str, float]] = []
    step, spent = 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        check_resumable(checkpoint, state, cfg, second_stage_settings(cfg))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, step, spent = state["history"], state["step"], float(state["seconds"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if device.startswith("cuda") and "cuda_rng" in state:  # the jitter's gains are drawn there
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    # The time budget counts the seconds the checkpoint already trained, as the first network's does.
    started, passes = time.perf_counter() - spent, len(history)
    model.train()
    while step < total and time.perf_counter() - started < budget:
        passes += 1
        reporter.epoch_started(passes, cfg.refine_epochs, steps)
        losses = RunningLoss(steps, device, READS_PER_PASS)
        for idx in np.array_split(rng.permutation(len(keep)), steps):
            x, y = crop_batch(*windows.take(idx), jittered(boxes[idx], spec, rng))
            n = len(idx)
            gain = torch.empty(n, 1, 1, 1, device=device).uniform_(0.8, 1.2)
            x = x * gain + torch.empty(n, 1, 1, 1, device=device).uniform_(-0.1, 0.1)
            done = max(step / total, (time.perf_counter() - started) / budget)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg.learning_rate, done)
            loss = bce_dice(model(x.contiguous(memory_format=torch.channels_last)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            reporter.step_done(losses.add(loss))
            if time.perf_counter() - started >= budget:
                break
        seconds = time.perf_counter() - started
        metrics = {"refine_loss": float(losses.mean()), "refine_seconds": seconds}
        history.append(metrics)
        with signals_held():  # a stop lands before the checkpoint or after its pass is reported
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "history": history,
                        "step": step,
                        "seconds": seconds,
                        "numpy_rng": rng.bit_generator.state,
                        "torch_rng": torch.get_rng_state(),
                        **(
                            {"cuda_rng": torch.cuda.get_rng_state(device)}
                            if device.startswith("cuda")
                            else {}
                        ),
                        "settings": second_stage_settings(cfg),
                    },
                )
            reporter.refine_pass_done(passes, metrics)
    minutes = (time.perf_counter() - started) / 60
    two = Segmenter(first.network, replace(first.spec, refine=spec), device, refiner=model)
    return two, {"refine_passes": passes, "refine_steps": step, "refine_minutes": round(minutes, 2)}
