"""A trained model plus what is needed to use it: saved as `model.pt` + `model.json`.

`Segmenter` is the single inference path: training's test evaluation, `wms evaluate`,
`wms predict` and the gate all call it, so they cannot disagree on preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wms.errors import RegistryError
from wms.refine import refined_maps
from wms.train.model import FlipAveraged, build_model
from wms.train.preprocess import image_to_array, scale
from wms.train.spec import ONNX_FILE, REFINE_WEIGHTS_FILE, SPEC_FILE, WEIGHTS_FILE, ModelSpec, damaged

__all__ = ["ONNX_FILE", "SPEC_FILE", "WEIGHTS_FILE", "ModelSpec", "Segmenter"]


def _load_weights(network: torch.nn.Module, path: Path, device: str) -> None:
    """Load `path` into `network`; a file cut short, or another model's, is a RegistryError."""
    try:
        network.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    except torch.cuda.OutOfMemoryError:
        raise  # a RuntimeError too, but the file is fine
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise damaged(path, exc) from None


class Segmenter:
    """A model in eval mode that turns PIL images into foreground masks."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        device: str = "cpu",
        refiner: torch.nn.Module | None = None,
    ) -> None:
        # The trained weights, saved as model.pt. In the default layout whether just trained
        # (channels-last) or loaded, so both predict with the same kernels, to the last bit.
        self.network = model.to(device, memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
        # What predicts (and is exported to ONNX): the network, or with spec.tta its flip average.
        self.model = FlipAveraged(self.network).eval() if spec.tta else self.network
        self.spec = spec
        self.device = device
        # The second stage (spec.refine, wms.refine): saved as refine.pt, always flip-averaged.
        if (refiner is None) != (spec.refine is None):
            raise ValueError("a refiner network goes with spec.refine, and only with it")
        self.refiner, self.refine_model = None, None
        if refiner is not None:
            self.refiner = refiner.to(device, memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
            self.refine_model = FlipAveraged(self.refiner).eval()

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> Segmenter:
        """Load a model saved by `save`."""
        spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
        if not spec_path.is_file() or not weights_path.is_file():
            raise RegistryError(
                f"{folder} holds no saved WMS model ({SPEC_FILE} and {WEIGHTS_FILE} expected)"
            )
        spec = ModelSpec.read(spec_path)
        model = build_model(spec.architecture, **spec.kwargs)
        _load_weights(model, weights_path, device)
        refiner = None
        if spec.refine is not None:
            refine_path = folder / REFINE_WEIGHTS_FILE
            if not refine_path.is_file():
                raise RegistryError(
                    f"{folder} has a second stage in {SPEC_FILE} but no {REFINE_WEIGHTS_FILE}"
                )
            refiner = build_model(spec.architecture, **spec.refine.kwargs)
            _load_weights(refiner, refine_path, device)
        return cls(model, spec, device, refiner)

    def save(self, folder: Path) -> str:
        """Write weights and spec into `folder`; returns the weights' sha256."""
        folder.mkdir(parents=True, exist_ok=True)
        weights = folder / WEIGHTS_FILE
        torch.save(self.network.state_dict(), weights)
        if self.refiner is not None:
            torch.save(self.refiner.state_dict(), folder / REFINE_WEIGHTS_FILE)
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self.spec), indent=2) + "\n")
        return hashlib.sha256(weights.read_bytes()).hexdigest()

    @torch.no_grad()
    def probabilities(self, batch_uint8: np.ndarray) -> torch.Tensor:
        """Foreground probabilities (N, 1, S, S) for a preprocessed uint8 batch (N, 3, S, S)."""
        x = torch.from_numpy(scale(batch_uint8)).to(self.device)
        return torch.sigmoid(self.model(x)).float()

    def _upsampled(self, images: list[Image.Image]) -> Iterator[torch.Tensor]:
        if not images:
            return
        size = self.spec.image_size
        probs = self.probabilities(np.stack([image_to_array(img, size) for img in images]))
        for prob, img in zip(probs, images, strict=True):
            # Upsample probabilities, not the thresholded mask, so edges stay smooth.
            full = F.interpolate(
                prob[None], size=(img.height, img.width), mode="bilinear", align_corners=False
            )
            yield full[0, 0]

    @torch.no_grad()
    def _stage2(self, crops: np.ndarray) -> np.ndarray:
        assert self.refine_model is not None
        logits = self.refine_model(torch.from_numpy(crops).to(self.device))
        return torch.sigmoid(logits)[:, 0].float().cpu().numpy()

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Foreground probabilities (float32), each upsampled to its own image's size; with a
        second stage, its probabilities in the crop around the window (wms.refine)."""
        maps = [full.cpu().numpy() for full in self._upsampled(images)]
        return refined_maps(images, maps, self.spec.threshold, self.spec.refine, self._stage2)

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Boolean masks, each at its own image's size."""
        if self.spec.refine is not None:
            return [prob > self.spec.threshold for prob in self.probability_maps(images)]
        return [(full > self.spec.threshold).cpu().numpy() for full in self._upsampled(images)]
