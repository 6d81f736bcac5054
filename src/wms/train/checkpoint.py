"""A training run's checkpoint: the state written after each epoch, read back to go on.

A run goes on from its checkpoint only under the settings that wrote it (`check_resumable`);
the file is written aside and renamed once it is on disk, so a crash, even of the machine, never
leaves half of one, and an instance that fails goes on from its last epoch when it comes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wms.config import TrainSettings
from wms.errors import TrainError
from wms.files import make_folders, rename_durably

__all__ = ["check_resumable", "epochs_held", "load_checkpoint", "run_settings", "save_checkpoint"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the training state aside and rename it into place, so a crash never leaves half a file."""
    make_folders(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    rename_durably(tmp, path)


# What a run may change when it goes on from a checkpoint: how long it trains, where and how
# fast, and the second stage (never checkpointed). Any other train.* setting would continue
# the saved run as another one that no setting describes.
RESUMABLE_CHANGES = frozenset(
    {"recipe", "epochs", "max_minutes", "patience", "device", "precision", "compile", "devices"}
    | {"cache_dir", "cache_max_gb", "export_onnx"}
    | {name for name in TrainSettings.model_fields if name.startswith("refine_")}
)


def run_settings(cfg: TrainSettings) -> dict[str, Any]:
    """The settings that make a run what it is, as its checkpoint records them."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}


def check_resumable(path: Path, state: dict[str, Any], cfg: TrainSettings) -> None:
    """TrainError unless the checkpoint was written by a run with these settings (one written
    before checkpoints recorded them is taken as it is)."""
    recorded, now = state.get("settings") or {}, run_settings(cfg)
    changed = [k for k in now if k in recorded and recorded[k] != now[k]]
    if changed:
        was = ", ".join(f"train.{k} = {recorded[k]!r}" for k in changed)
        raise TrainError(
            f"checkpoint {path} was written with {was}, and now "
            + ", ".join(f"train.{k} = {now[k]!r}" for k in changed)
            + "; go on from it with the settings it was written with, or start afresh with another "
            "checkpoint file"
        )


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The training state saved at `path`; TrainError when it is none (empty, damaged, another file)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # EOFError when empty, UnpicklingError or RuntimeError when not torch's
        raise TrainError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: empty, damaged or another kind of "
            "file): delete it to train from the start, or name another file"
        ) from None
    if not isinstance(state, dict) or not {"model", "history"} <= state.keys():
        raise TrainError(
            f"{path} is not a WMS training checkpoint: delete it to train from the start, or name another"
        )
    return state


def epochs_held(path: Path) -> int:
    """How many epochs a checkpoint holds: a resumed run goes on from the next one."""
    return len(load_checkpoint(path)["history"])
