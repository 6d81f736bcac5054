"""Export a trained model to ONNX, and run the export on ONNX Runtime without torch.

`OnnxSegmenter` mirrors `Segmenter.predict_masks`: the same preprocessing functions, the
same threshold, and the same upsampling of probabilities (bilinear, align_corners=False),
re-implemented in numpy so that the inference path needs no torch kernels.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from wms.errors import RegistryError, TrainError
from wms.refine import refined_maps
from wms.train.preprocess import image_to_array, scale
from wms.train.spec import ONNX_FILE, REFINE_ONNX_FILE, SPEC_FILE, ModelSpec, damaged

if TYPE_CHECKING:
    import onnxruntime as ort
    import torch

    from wms.train.segmenter import Segmenter

INPUT_NAME, OUTPUT_NAME = "image", "logits"
REFINE_SHA_KEY = "wms.refine_onnx_sha256"  # in model.onnx's metadata: refine.onnx's sha256


def export_onnx(segmenter: Segmenter, path: Path) -> None:
    """Write the network as ONNX: `image` float32 (N, 3, S, S) in [0, 1] -> `logits` (N, 1, S, S).

    With a second stage (spec.refine), its flip-averaged network goes beside, as `refine.onnx`
    (same input and output names, at its own side), and `path`'s metadata records that file's
    sha256 (`REFINE_SHA_KEY`): a server that verified `path` against the registry verifies the
    second file against it.

    With torch's TorchScript exporter: it writes these convolutional nets in about 0.1 s, where
    the torch.export-based one (`dynamo=True`, the default since torch 2.9) takes 5 s or more,
    paid by every training run. It is deprecated but present in the pinned torch; the parity
    check before registration (wms.parity) verifies every export either way. When a torch
    upgrade removes it, pass `dynamo=True` with `dynamic_shapes=({0: torch.export.Dim("batch")},)`.
    """
    metadata = {}
    if segmenter.refine_model is not None and segmenter.spec.refine is not None:
        second = path.with_name(REFINE_ONNX_FILE)
        _export(segmenter.refine_model, segmenter.spec.refine.size, segmenter.device, second)
        metadata[REFINE_SHA_KEY] = hashlib.sha256(second.read_bytes()).hexdigest()
    _export(segmenter.model, segmenter.spec.image_size, segmenter.device, path, metadata)


def _export(
    module: torch.nn.Module, size: int, device: str, path: Path, metadata: dict[str, str] | None = None
) -> None:
    import torch

    example = torch.zeros(2, 3, size, size, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")  # never leave a half-written model.onnx
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            warnings.filterwarnings(
                "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            torch.onnx.export(
                module.eval(),
                (example,),
                partial,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                dynamo=False,
                external_data=False,
                verbose=False,
            )
        if metadata:
            import onnx

            graph = onnx.load(partial)
            for key, value in metadata.items():
                graph.metadata_props.add(key=key, value=value)
            onnx.save(graph, partial)
        partial.replace(path)
    except ModuleNotFoundError as exc:
        raise TrainError(
            f"exporting to ONNX needs the {exc.name} package; install it with `pip install {exc.name}`"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


BAND_PIXELS = 1 << 20  # resize_bilinear's working set: a few MB whatever the photo's size


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function without overflow warnings for large negative logits."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def _source_index(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # torch's align_corners=False rule: sample at (i + 0.5) * in/out - 0.5, clamped at 0.
    src = np.maximum((np.arange(n_out, dtype=np.float32) + 0.5) * np.float32(n_in / n_out) - 0.5, 0)
    lo = np.minimum(src.astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def resize_bilinear(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """A 2-D map resized like torch's bilinear `interpolate(align_corners=False)`, without torch.

    Pillow's BILINEAR agrees when enlarging but antialiases when shrinking, so photos
    smaller than the model input would get different masks; this follows torch exactly.
    """
    y0, y1, wy = _source_index(prob.shape[0], height)
    x0, x1, wx = _source_index(prob.shape[1], width)
    rows = prob[y0] * (1 - wy)[:, None] + prob[y1] * wy[:, None]  # (height, model size): small
    # Filled a band of rows at a time: the whole-map expression made four more full-size float32
    # maps at once (16 bytes a photo pixel, most of a 40-megapixel photo's memory in serving).
    out = np.empty((height, width), np.float32)
    band = max(1, BAND_PIXELS // max(width, 1))
    for top in range(0, height, band):
        part = rows[top : top + band]
        out[top : top + band] = part[:, x0] * (1 - wx) + part[:, x1] * wx
    return out


def _session(model_file: Path | bytes, threads: int, name: str = ONNX_FILE) -> ort.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0 lets ONNX Runtime use one per physical core
    options.log_severity_level = 3  # errors only: its optimizer warnings mean nothing to users
    source = model_file if isinstance(model_file, bytes) else str(model_file)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime's errors (InvalidProtobuf, InvalidArgument, ...) share no base
        raise damaged(Path(name) if isinstance(model_file, bytes) else model_file, exc) from None


def ort_run_options(release_memory: bool) -> ort.RunOptions:
    """Run options that, with `release_memory`, shrink the CPU arena back at the end of each run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    if release_memory:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def read_refine(folder: Path, spec: ModelSpec) -> bytes | None:
    """The bytes of the folder's `refine.onnx` where the spec has a second stage, else None."""
    path = folder / REFINE_ONNX_FILE
    return path.read_bytes() if spec.refine is not None and path.is_file() else None


class OnnxSegmenter:
    """An exported model on ONNX Runtime (CPU) that turns PIL images into foreground masks."""

    def __init__(
        self,
        model_file: Path | bytes,
        spec: ModelSpec,
        threads: int = 0,
        refine_file: bytes | None = None,
        release_memory: bool = False,
    ) -> None:
        """`model_file` is a path, or the file's bytes (serving loads the very bytes it hashed);
        `refine_file` the bytes of `refine.onnx`, for a model with a second stage.

        `release_memory` gives ONNX Runtime's working memory back after every run (a server):
        its arena otherwise keeps the largest it has held, for each run at once (about 340 MiB
        for the `gpu` recipe's U-Net), for the life of the process. It costs a run about 15 %.
        """
        self.spec = spec
        self.run_options = ort_run_options(release_memory)
        self.session = _session(model_file, threads)
        self._check_input(self.session, model_file, spec.image_size, "image_size")
        self.refine_session = None
        if spec.refine is not None:
            recorded = self.session.get_modelmeta().custom_metadata_map.get(REFINE_SHA_KEY, "")
            if refine_file is None or hashlib.sha256(refine_file).hexdigest() != recorded:
                raise RegistryError(
                    f"the model has a second stage but {REFINE_ONNX_FILE} is "
                    + ("missing" if refine_file is None else f"not the one {ONNX_FILE} records")
                    + "; export both again from the same model.pt and refine.pt"
                )
            self.refine_session = _session(refine_file, threads, REFINE_ONNX_FILE)
            self._check_input(self.refine_session, Path(REFINE_ONNX_FILE), spec.refine.size, "refine.size")

    @staticmethod
    def _check_input(session: ort.InferenceSession, model_file: Path | bytes, size: int, name: str) -> None:
        shape = session.get_inputs()[0].shape
        if list(shape[1:]) != [3, size, size]:
            source = Path(ONNX_FILE) if isinstance(model_file, bytes) else model_file
            raise RegistryError(
                f"{source} takes input {shape} but its {SPEC_FILE} says {name} "
                f"{size}; export it again from the same model.pt"
            )

    @classmethod
    def load(cls, folder: Path, threads: int = 0) -> OnnxSegmenter:
        """Load `model.onnx` + `model.json` (+ `refine.onnx`, for a second stage) from a model folder."""
        spec_path, model_path = folder / SPEC_FILE, folder / ONNX_FILE
        if not spec_path.is_file() or not model_path.is_file():
            raise RegistryError(
                f"{folder} holds no exported WMS model ({SPEC_FILE} and {ONNX_FILE} expected); "
                "write one with wms.train.export.export_onnx"
            )
        spec = ModelSpec.read(spec_path)
        return cls(model_path, spec, threads, read_refine(folder, spec))

    def probabilities(self, batch_uint8: np.ndarray) -> np.ndarray:
        """Foreground probabilities (N, 1, S, S) for a preprocessed uint8 batch (N, 3, S, S)."""
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: scale(batch_uint8)}, self.run_options)
        return sigmoid(np.asarray(logits))

    def probability_maps(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Foreground probabilities (float32), each upsampled to its own image's size."""
        if not images:
            return []
        size = self.spec.image_size
        probs = self.probabilities(np.stack([image_to_array(img, size) for img in images]))
        # Upsample probabilities, not the thresholded mask, exactly as Segmenter does.
        maps = [
            resize_bilinear(prob[0], img.height, img.width) for prob, img in zip(probs, images, strict=True)
        ]
        return refined_maps(images, maps, self.spec.threshold, self.spec.refine, self._stage2)

    def _stage2(self, crops: np.ndarray) -> np.ndarray:
        assert self.refine_session is not None
        (logits,) = self.refine_session.run([OUTPUT_NAME], {INPUT_NAME: crops}, self.run_options)
        return sigmoid(np.asarray(logits))[:, 0]

    def predict_masks(self, images: list[Image.Image]) -> list[np.ndarray]:
        """Boolean masks, each at its own image's size: `probability_maps` over the threshold."""
        return [prob > self.spec.threshold for prob in self.probability_maps(images)]
