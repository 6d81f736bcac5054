"""The training loop: read it top to bottom.

    wms train DATASET_DIR                      # settings from wms.toml
    WMS_TRAIN__EPOCHS=2 wms train DATASET_DIR  # a quick run

Pairs are decoded once into uint8 arrays at the training size; batches are augmented as
tensors. Loss is BCE + soft Dice because the counter window covers only a few percent of
the pixels. The epoch with the best validation Dice is kept.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from wms.config import TrainSettings
from wms.data.pairs import Pair
from wms.errors import ConfigError, TrainError
from wms.guards import signals_held
from wms.train.augment import augment, early_size, shrink
from wms.train.cache import cache_bytes, load_arrays
from wms.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    run_settings,
    save_checkpoint,
    second_stage_checkpoint,
)
from wms.train.distributed import SINGLE, Dist, mean_of, process_group, shard, shared
from wms.train.losses import LOSSES, RunningLoss
from wms.train.model import (
    build_model,
    check_encoder_weights,
    count_parameters,
    input_multiple,
    load_encoder_weights,
)
from wms.train.placement import TrainingSet
from wms.train.precision import Precision, choose_precision
from wms.train.progress import SilentReporter, TrainReporter
from wms.train.recipes import RECIPES
from wms.train.schedule import learning_rate
from wms.train.second_stage import refine_spec, train_second_stage
from wms.train.segmenter import ModelSpec, Segmenter

READS_PER_EPOCH = 4  # how often per epoch the host reads the running loss (each read syncs a GPU)


@dataclass
class TrainResult:
    """The best model and how it got there."""

    segmenter: Segmenter
    best_epoch: int
    best_val_dice: float
    parameters: int
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    precision: str = "fp32"  # fp32 | bf16 | fp16, as train.precision resolved on the device
    dataset_memory: str = "host"  # gpu | host: where the decoded set was kept (wms.train.placement)
    refine: dict[str, float] = field(default_factory=dict)  # how the second stage trained, if any


def resolve_device(wanted: str, recipe: str = "") -> str:
    """`auto` picks CUDA when present; `cuda` (the gpu recipe's) where torch sees none is an error,
    never a run on the CPU: a driver missing, not loaded, or older than the CUDA that torch's
    wheel was built for all read as `torch.cuda.is_available()` False."""
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        by_recipe = RECIPES.get(recipe, {}).get("device") == "cuda"
        who = f"train.recipe {recipe!r} trains on a GPU" if by_recipe else "train.device is 'cuda'"
        build = torch.version.cuda
        why = (
            f"built for CUDA {build}: the NVIDIA driver must be loaded and support CUDA {build} or newer, "
            "which `nvidia-smi` shows at its top right"
            if build
            else "the CPU build of torch: install its CUDA build"
        )
        instead = "train.recipe=cpu" if by_recipe else "train.device=auto or cpu"
        raise TrainError(
            f"{who}, but torch {torch.__version__} sees no CUDA device ({why}); "
            f"mend that on this machine, or train on the CPU with {instead}"
        )
    return wanted


def batch_dice(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of boolean tensors (N, 1, H, W); empty vs empty counts as 1."""
    inter = (pred & true).sum(dim=(1, 2, 3)).float()
    total = (pred.sum(dim=(1, 2, 3)) + true.sum(dim=(1, 2, 3))).float()
    return torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp(min=1))


def check_settings(cfg: TrainSettings) -> None:
    """ConfigError when the [train] settings describe a model that cannot be built: said before a
    tracking run is started, not after the first network's minutes."""
    multiple = input_multiple(cfg.architecture, depth=cfg.depth)
    if cfg.image_size % multiple:
        why = "2**train.depth" if cfg.architecture == "unet" else f"train.architecture={cfg.architecture!r}"
        fit = cfg.image_size // multiple * multiple or multiple
        raise ConfigError(
            f"train.image_size={cfg.image_size} must be divisible by {multiple} ({why}); "
            f"use e.g. {fit} or {fit + multiple}"
        )
    check_encoder_weights(cfg.architecture, cfg.encoder_weights)
    if cfg.refine_epochs:
        refine_spec(cfg)


def train(
    cfg: TrainSettings,
    train_pairs: Sequence[Pair],
    val_pairs: Sequence[Pair],
    reporter: TrainReporter | None = None,
    cache_dir: Path | None = None,
    checkpoint: Path | None = None,
    dist: Dist = SINGLE,
) -> TrainResult:
    """Train a model on `train_pairs`, keeping the epoch with the best Dice on `val_pairs`.

    Under DDP (`dist`, see wms.train.distributed) every process runs this on its shard of
    each epoch; time-based decisions follow rank 0, and only rank 0 reports and checkpoints.

    With `checkpoint`, the state is saved there after every epoch, and a run that finds one
    continues from it with the same data order, augmentation and schedule, and with what is
    left of its time budget. On the CPU the resumed run gives the same model as one never
    stopped. On CUDA it does not, bit for bit: cuDNN's autotuned kernels and atomic adds are
    nondeterministic, so two CUDA runs (resumed or not) differ in the last bits and their val
    Dice by noise.
    """
    if not train_pairs or not val_pairs:
        raise TrainError(
            f"need pairs in both train and val splits (got {len(train_pairs)} and {len(val_pairs)}); "
            "add more labelled pairs"
        )
    check_settings(cfg)
    if cfg.refine_epochs and dist.active:
        raise TrainError("a second stage (train.refine_epochs) trains in one process: set train.devices = 1")
    with process_group(dist, resolve_device(cfg.device, cfg.recipe)) as device:
        try:
            result = _fit(cfg, train_pairs, val_pairs, reporter, cache_dir, checkpoint, dist, device)
            if cfg.refine_epochs:  # with a checkpoint of its own: a resumed job goes on from its last pass
                result.segmenter, result.refine = train_second_stage(
                    cfg, result.segmenter, train_pairs, reporter or SilentReporter(), cache_dir, device,
                    second_stage_checkpoint(checkpoint),
                )  # fmt: skip
        except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not out_of_memory(exc):
                raise
            where, half = (
                "the GPU" if device.startswith("cuda") else "this machine",
                max(1, cfg.batch_size // 2),
            )
            raise TrainError(
                f"{where} ran out of memory training at train.batch_size={cfg.batch_size}, "
                f"train.image_size={cfg.image_size}: lower train.batch_size (e.g. {half}) "
                "or train.image_size, or train on a machine with more memory"
            ) from None
        return result


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says an allocation failed: on a GPU (torch.OutOfMemoryError), in numpy
    (MemoryError), or in torch's CPU allocator (a RuntimeError only its message tells apart)."""
    allocation_failed = isinstance(exc, torch.OutOfMemoryError | MemoryError)
    return allocation_failed or "DefaultCPUAllocator: can't allocate" in str(exc)


def _fit(
    cfg: TrainSettings,
    train_pairs: Sequence[Pair],
    val_pairs: Sequence[Pair],
    reporter: TrainReporter | None,
    cache_dir: Path | None,
    checkpoint: Path | None,
    dist: Dist,
    device: str,
) -> TrainResult:
    reporter = reporter if reporter is not None and dist.is_main else SilentReporter()
    # Decoded first, before this function starts CUDA: a cache miss forks decoding workers
    # (wms.train.cache), and a child forked after CUDA started must not touch it. Where the
    # caller started it already (a second stage, a rank), the workers still only decode.
    # Every process of a distributed run decodes: each takes its share of the cores.
    cap, workers = cache_bytes(cfg), max(1, (os.cpu_count() or 1) // dist.world)
    x_train, y_train = load_arrays(train_pairs, cfg.image_size, cache_dir, cap, workers)
    x_val_np, y_val_np = load_arrays(val_pairs, cfg.image_size, cache_dir, cap, workers)
    cuda = device.startswith("cuda")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # the epochs' order: the same everywhere
    # Augmentation: one stream per process, so the halves of a global batch are not turned alike.
    aug = gen if not dist.active else torch.Generator(device=device).manual_seed(cfg.seed + 1 + dist.rank)
    if cuda:
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
    precision = Precision(choose_precision(cfg.precision, device), device)
    amp, scaler = precision.autocast(), precision.scaler()

    # On a GPU the uint8 set goes into its memory while it fits there, the validation set beside
    # it (wms.train.placement); batches are then sliced there, never copied per step.
    training = TrainingSet(x_train, y_train, device, beside=x_val_np.nbytes + y_val_np.nbytes)
    # The validation set is read once, as uint8 (a quarter of float32's memory).
    x_val = torch.from_numpy(np.array(x_val_np))
    y_val = torch.from_numpy(np.array(y_val_np))[:, None]
    if training.resident:
        x_val, y_val = x_val.to(device), y_val.to(device)
    kwargs = {"base_channels": cfg.base_channels, "depth": cfg.depth}
    model = build_model(cfg.architecture, **kwargs)
    # Pretrained weights only start training: the spec's kwargs never ask for them, so loading a
    # saved model reads model.pt alone. Every DDP process loads the same file (it is cached).
    load_encoder_weights(model, cfg.encoder_weights)
    model = model.to(device)
    if dist.active and cuda:
        # Batch-norm statistics over the global batch, as one process would compute them (small
        # per-GPU batches are common in segmentation). gloo cannot: on the CPU each process keeps
        # its own, so a CPU DDP run is close to, not the same as, a single-process one.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Channels-last on the GPU and the CPU alike: cuDNN's and oneDNN's fast convolutions want
    # it (on two CPU cores the recipe's U-Net trains about 2x faster than in NCHW).
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # With train.ema_decay, a moving average of the weights is what is validated and kept: it
    # smooths the last steps' noise, as a lower learning rate would without slowing training.
    ema = None
    if cfg.ema_decay:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    kept: torch.nn.Module = model if ema is None else ema.module
    net: Any = model
    if dist.active:  # gradients are averaged across the processes as backward runs
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dist.local_rank] if cuda else None)
    forward: Any = torch.compile(net) if cfg.compile else net  # compiled once, on first use
    spec = ModelSpec(cfg.architecture, cfg.image_size, cfg.threshold, kwargs, tta=cfg.tta)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    early = early_size(cfg)
    loss_fn = LOSSES[cfg.loss]
    # With train.finish_loss, the last finish_share of training switches to that loss.
    finish_fn, finish_from = LOSSES.get(cfg.finish_loss, loss_fn), 1 - cfg.finish_share
    steps = -(-len(shard(np.arange(len(train_pairs)), dist)) // cfg.batch_size)
    total_steps = max(1, cfg.epochs * steps)

    def val_dice() -> float:
        kept.eval()
        scores = []
        with torch.no_grad(), amp:
            for i in range(0, len(x_val), cfg.batch_size):
                xb = x_val[i : i + cfg.batch_size].to(device).float() / 255
                xb = xb.contiguous(memory_format=torch.channels_last)
                probs = torch.sigmoid(kept(xb).float())
                scores.append(batch_dice(probs > cfg.threshold, y_val[i : i + cfg.batch_size].to(device)))
        return float(torch.cat(scores).mean())  # one host read per validation

    # With epochs=0 the untrained model is the result: useful for testing the gate.
    best_state, best_epoch, best_dice = copy.deepcopy(kept.state_dict()), 0, val_dice()
    history: list[dict[str, float]] = []
    step, spent = 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        # On the CPU first: RNG states must be CPU tensors, whatever device saved them; the
        # model and optimizer copy their tensors to where their parameters live.
        state = load_checkpoint(checkpoint)
        check_resumable(checkpoint, state, cfg)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:  # a checkpoint from before they were recorded, of another model
            raise TrainError(
                f"checkpoint {checkpoint} holds another model than train.* now describes (architecture, "
                "base_channels, depth); go on from it with the settings it was written with, or start "
                "afresh with another checkpoint file"
            ) from None
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None and "ema" in state:
            ema.load_state_dict(state["ema"])
        best_state, best_epoch, best_dice = state["best_state"], state["best_epoch"], state["best_dice"]
        history, step = state["history"], state["step"]
        spent = float(state.get("seconds", 0.0))  # none in a checkpoint from before it was saved
        gen.set_state(state["generator"])
        if dist.active:  # only rank 0's streams are saved: the others start afresh from here
            aug.manual_seed(cfg.seed + 1 + dist.rank + 7919 * len(history))
        torch.set_rng_state(state["torch_rng"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
    # A resumed run counts its time budget, and the schedule's share of it, from the seconds
    # the checkpoint already trained: a reclaim must not give the job its budget again.
    started_all = time.perf_counter() - spent
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        # Under DDP the time budget is rank 0's clock, read once per epoch, so all agree on the LR.
        elapsed = shared(time.perf_counter() - started_all, dist, device)
        if cfg.max_minutes and history and elapsed + history[-1]["epoch_seconds"] > cfg.max_minutes * 60:
            break  # another epoch as long as the last would overrun the time budget
        used = elapsed / (cfg.max_minutes * 60 or 1)
        reporter.epoch_started(epoch, cfg.epochs, steps)
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(training), generator=gen, device=gen.device).cpu().numpy()
        order = shard(order, dist)  # the same permutation on every process, each its own part
        losses = RunningLoss(steps, device, READS_PER_EPOCH)
        for i in range(0, len(order), cfg.batch_size):
            xb, yb = training.take(order[i : i + cfg.batch_size])
            xb, yb = augment(
                xb.float() / 255,
                yb.float(),
                aug,
                cfg.augment_rotation,
                cfg.augment_quarter_turns,
                cfg.augment_zoom,
            )
            # Progress is steps done or time used, whichever is further, so a time budget
            # still ends with a fully decayed learning rate.
            done = step / total_steps
            if cfg.max_minutes:
                now = used if dist.active else (time.perf_counter() - started_all) / (cfg.max_minutes * 60)
                done = max(done, now)
            if early < cfg.image_size and done < 0.5:
                xb, yb = shrink(xb, yb, early)
            xb = xb.contiguous(memory_format=torch.channels_last)
            with amp:
                loss = (finish_fn if done >= finish_from else loss_fn)(forward(xb).float(), yb)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg.learning_rate, done)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # fp16: scaled so small gradients do not underflow
            scaler.step(optimizer)  # skips the step when a gradient overflowed
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            reporter.step_done(losses.add(loss))
        dice_now = shared(val_dice(), dist, device)
        seconds = shared(time.perf_counter() - started, dist, device)
        metrics = {
            "train_loss": float(mean_of(losses.mean(), dist)),
            "val_dice": dice_now,
            "epoch_seconds": seconds,
            "images_per_second": len(order) * dist.world / seconds,
        }
        history.append(metrics)
        if dice_now > best_dice:
            best_state, best_epoch, best_dice = copy.deepcopy(kept.state_dict()), epoch, dice_now
        with signals_held():  # a stop lands before the checkpoint or after its epoch is reported
            if checkpoint is not None and dist.is_main:
                save_checkpoint(
                    checkpoint,
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        **({} if ema is None else {"ema": ema.state_dict()}),
                        "best_state": best_state,
                        "best_epoch": best_epoch,
                        "best_dice": best_dice,
                        "history": history,
                        "step": step,
                        "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "scaler": scaler.state_dict(),
                        "seconds": time.perf_counter() - started_all,
                        "settings": run_settings(cfg),
                    },
                )
            reporter.epoch_done(epoch, metrics)
        if cfg.patience and epoch - best_epoch >= cfg.patience:
            break  # early stopping: val Dice has not improved for `patience` epochs

    if dist.active and cuda:  # the result is a plain model: saved, exported and served as always
        model = build_model(cfg.architecture, **kwargs).to(device)
    model.load_state_dict(best_state)
    return TrainResult(
        segmenter=Segmenter(model, spec, device),
        best_epoch=best_epoch,
        best_val_dice=best_dice,
        parameters=count_parameters(model),
        device=device,
        history=history,
        precision=precision.name,
        dataset_memory="gpu" if training.resident else "host",
    )
