"""Everything that needs a GPU, in one run of under 8 minutes: prepared so it runs unchanged the
first time a GPU machine is lent.

    .venv/bin/python benchmarks/gpu_check.py             # on the GPU machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run   # anywhere: the plan, and its CPU-safe parts

Steps, each timed and recorded even when it fails (a failed step does not stop the others):
  1. the device: name, memory, driver, bf16 support;
  2. the `gpu` tests (pytest -m gpu): every precision trains, a CUDA checkpoint resumes, no
     per-step host synchronisation, a set too large for the GPU trains from host memory;
  3. short trainings at 512 px in bf16 and fp16 (synthetic photos): images/s, peak memory, and
     GPU utilisation sampled by nvidia-smi while they run;
  4. this loop vs the naive Pillow loop at 512 px (benchmarks/train_speed.py);
  5. the `gpu` recipe on the real photos, test Dice (benchmarks/quality.py, 3-minute budget);
  6. DDP over every visible GPU (`wms train` with train.devices = auto) when there are several.

Writes benchmarks/results/gpu-check.json (the dry run: gpu-check-dry-run.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PLAN = [
    ("device", "GPU name, memory, driver, bf16 support"),
    ("gpu_tests", "pytest -m gpu tests/gpu (precisions, both stages resumed, no per-step sync, host memory)"),
    ("short_trainings", "512 px bf16 and fp16 trainings on synthetic photos: images/s, memory, utilisation"),
    ("loop_vs_naive", "benchmarks/train_speed.py --device cuda: this loop vs a naive Pillow loop, images/s"),
    (
        "gpu_recipe_quality",
        "benchmarks/quality.py --recipe gpu --max-minutes 3: test Dice on the real photos",
    ),
    ("ddp", "wms train with train.devices=auto on synthetic photos, when more than one GPU is visible"),
]


def step(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one step; record its result or its error, and its seconds."""
    started = time.perf_counter()
    print(f"▶ {name}", flush=True)
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as exc:  # one broken step must not cost the others their device time
        results[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(),
        }
    results[name]["seconds"] = round(time.perf_counter() - started, 1)
    print(f"  {json.dumps({k: v for k, v in results[name].items() if k != 'trace'})[:400]}", flush=True)


def device_info() -> dict[str, Any]:
    import torch

    from wms.train.precision import choose_precision, cuda_supports_bf16

    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "count": torch.cuda.device_count(),
        "capability": f"{props.major}.{props.minor}",
        "bf16": cuda_supports_bf16(),
        "auto_precision": choose_precision("auto", "cuda"),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "driver": nvidia_smi("driver_version"),
    }


def no_cuda_reason() -> str:
    """Why torch sees no GPU, as far as torch's build and nvidia-smi tell: on a GPU machine a
    driver older than the CUDA of torch's wheel reads just like no GPU at all."""
    import torch

    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "the CPU build"
    driver = nvidia_smi("driver_version")
    if shutil.which("nvidia-smi") is None:
        machine = "no nvidia-smi: no NVIDIA driver is installed here"
    elif driver is None:
        machine = "nvidia-smi finds no GPU: the NVIDIA driver is not loaded"
    else:
        machine = f"NVIDIA driver {driver}, which `nvidia-smi` shows the newest CUDA it supports beside"
    return (
        f"no CUDA device visible to torch {torch.__version__} ({build}; {machine}); "
        "on a GPU machine install torch's CUDA build or a driver that supports its CUDA, "
        "elsewhere run with --dry-run"
    )


def nvidia_smi(query: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


class Utilisation:
    """Samples GPU utilisation (%) with nvidia-smi every half second while the block runs."""

    def __init__(self) -> None:
        from wms.guards import Heartbeat  # the same periodic thread that renews the pipeline's leases

        self.samples: list[float] = []
        self._beat = Heartbeat(0.5, self._sample)

    def _sample(self) -> None:
        value = nvidia_smi("utilization.gpu")
        if value is not None:
            self.samples.append(float(value.split(",")[0]))

    def __enter__(self) -> Utilisation:
        self._beat.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._beat.__exit__(*exc)

    def summary(self) -> dict[str, float | None]:
        s = sorted(self.samples)
        return {
            "utilisation_mean": round(sum(s) / len(s), 1) if s else None,
            "utilisation_p50": s[len(s) // 2] if s else None,
        }


def short_training(precision: str, device: str, size: int, epochs: int) -> dict[str, Any]:
    import torch

    from wms.config import TrainSettings
    from wms.data.pairs import find_pairs
    from wms.data.synth import synthesize
    from wms.train.loop import train

    with tempfile.TemporaryDirectory(prefix="wms-gpu-check-") as tmp:
        synthesize(Path(tmp), count=96, size=size, seed=3)
        pairs = find_pairs(Path(tmp)).pairs
        cfg = TrainSettings(
            image_size=size,
            epochs=epochs,
            batch_size=16 if device == "cuda" else 4,
            base_channels=32 if device == "cuda" else 4,
            depth=4 if device == "cuda" else 2,
            device=device,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
        )
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with Utilisation() as use:
            result = train(cfg, pairs[:80], pairs[80:])
        rates = [h["images_per_second"] for h in result.history[1:]] or [0.0]  # epoch 1 warms cuDNN up
        return {
            "precision": result.precision,
            "images_per_second": round(max(rates), 1),
            "final_loss": round(result.history[-1]["train_loss"], 4) if result.history else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
            if device == "cuda"
            else None,
            **use.summary(),
        }


def run_script(args: list[str], result_file: Path, timeout: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    out = {"exit": done.returncode, "tail": (done.stdout + done.stderr)[-1500:]}
    if result_file.is_file():
        out["result"] = json.loads(result_file.read_text())
    return out


def gpu_tests() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    return {"exit": done.returncode, "summary": done.stdout.strip().splitlines()[-1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and run the CPU-safe parts")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    print("plan:" + "".join(f"\n  {name}: {what}" for name, what in PLAN), flush=True)
    started = time.perf_counter()
    if args.dry_run:
        results["dry_run"] = True
        step(results, "precision_choice", precision_choice)
        step(results, "short_training_cpu_fp16", lambda: short_training("fp16", "cpu", 32, 2))
        out = RESULTS / "gpu-check-dry-run.json"
    else:
        import torch

        if not torch.cuda.is_available():
            print(no_cuda_reason(), file=sys.stderr)
            return 2
        step(results, "device", device_info)
        step(results, "gpu_tests", gpu_tests)
        for precision in ("bf16", "fp16"):
            step(
                results, f"short_training_{precision}", lambda p=precision: short_training(p, "cuda", 512, 4)
            )
        speed = RESULTS / "train_speed-cuda.json"
        step(
            results,
            "loop_vs_naive",
            lambda: run_script(["benchmarks/train_speed.py", "--device", "cuda"], speed, 150),
        )
        quality = RESULTS / "quality-gpu.json"
        step(
            results,
            "gpu_recipe_quality",
            lambda: run_script(
                ["benchmarks/quality.py", "--recipe", "gpu", "--max-minutes", "3"], quality, 330
            ),
        )
        if torch.cuda.device_count() > 1:
            step(results, "ddp", ddp_run)
        else:
            results["ddp"] = {"ok": True, "skipped": "one GPU visible: DDP needs two or more"}
        out = RESULTS / "gpu-check.json"
    results["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO)} ({results['seconds']:.0f} s)")
    return 0


def ddp_run() -> dict[str, Any]:
    """`wms train` across every visible GPU (torchrun, NCCL) on synthetic photos: one MLflow run."""
    import torch

    from wms.data.synth import synthesize

    with tempfile.TemporaryDirectory(prefix="wms-ddp-") as tmp:
        root = Path(tmp)
        synthesize(root / "data", count=128, size=256, seed=4)
        (root / "wms.toml").write_text("[train]\nimage_size = 256\nepochs = 4\nbase_channels = 16\n")
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "wms", "--set", "train.devices='auto'", "train", str(root / "data")],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=240,
        )
        return {
            "exit": done.returncode,
            "processes": torch.cuda.device_count(),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "tail": (done.stdout + done.stderr)[-800:],
        }


def precision_choice() -> dict[str, Any]:
    from wms.train.precision import choose_precision

    return {
        "bf16_gpu": choose_precision("auto", "cuda", bf16_supported=lambda: True),
        "t4_like_gpu": choose_precision("auto", "cuda", bf16_supported=lambda: False),
        "cpu": choose_precision("auto", "cpu"),
    }


if __name__ == "__main__":
    sys.exit(main())
