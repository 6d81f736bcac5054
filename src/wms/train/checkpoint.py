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

__all__ = [
    "check_resumable",
    "epochs_held",
    "load_checkpoint",
    "run_settings",
    "save_checkpoint",
    "second_stage_checkpoint",
    "second_stage_settings",
]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the training state aside and rename it into place, so a crash never leaves half a file."""
    make_folders(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    rename_durably(tmp, path)


# What a run may change when it goes on from a checkpoint: how long it trains, where and how
# fast, and the second stage (which keeps a checkpoint of its own, second_stage_checkpoint).
# Any other train.* setting would continue the saved run as another one that no setting describes.
RESUMABLE_CHANGES = frozenset(
    {"recipe", "epochs", "max_minutes", "patience", "device", "precision", "compile", "devices"}
    | {"cache_dir", "cache_max_gb", "export_onnx"}
    | {name for name in TrainSettings.model_fields if name.startswith("refine_")}
)


def run_settings(cfg: TrainSettings) -> dict[str, Any]:
    """The settings that make a run what it is, as its checkpoint records them."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}


# What a second stage may change when it goes on from its checkpoint: how long it trains.
SECOND_STAGE_RESUMABLE = frozenset({"refine_epochs", "refine_minutes"})


def second_stage_settings(cfg: TrainSettings) -> dict[str, Any]:
    """The settings that make a second stage what it is: the run's, and its own refine_* but how
    long it trains."""
    own = {
        k: v
        for k, v in cfg.model_dump(mode="json").items()
        if k.startswith("refine_") and k not in SECOND_STAGE_RESUMABLE
    }
    return run_settings(cfg) | own


def second_stage_checkpoint(checkpoint: Path | None) -> Path | None:
    """Where the second stage keeps its checkpoint beside the first network's `checkpoint`."""
    return (
        None if checkpoint is None else checkpoint.with_name(f"{checkpoint.stem}-second{checkpoint.suffix}")
    )


def check_resumable(
    path: Path, state: dict[str, Any], cfg: TrainSettings, now: dict[str, Any] | None = None
) -> None:
    """TrainError unless the checkpoint was written by a run with these settings (one written
    before checkpoints recorded them is taken as it is); `now`: the settings to compare, where
    not the run's (run_settings)."""
    recorded, now = state.get("settings") or {}, run_settings(cfg) if now is None else now
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
