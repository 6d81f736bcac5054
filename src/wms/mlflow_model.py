"""A registered model version as an MLflow model: the `python_function` flavor over the ONNX export.

    import mlflow, pandas as pd
    model = mlflow.pyfunc.load_model("models:/wms-segmenter@production")
    answer = model.predict(pd.DataFrame({"image": [open("photo.jpg", "rb").read()]}))
    open("mask.png", "wb").write(answer["mask_png"][0])

    mlflow models serve --env-manager local -m models:/wms-segmenter@production -p 5001
    base64 -w0 photo.jpg | jq -R '{dataframe_split: {columns: ["image"], data: [[.]]}}' \
      | curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d @- \
      | jq -r '.predictions[0].mask_png' | base64 -d > mask.png

Input: a DataFrame with one column, `image`, one photo file per row (JPEG, PNG, WEBP, BMP or
TIFF bytes). As JSON the bytes are base64, MLflow's encoding for a binary column, under
`dataframe_split` or `dataframe_records` ([{"image": "<base64>"}]); MLflow does not decode
base64 sent under `inputs` or `instances`, so those are refused as not images.
Output: a DataFrame, one row per photo: `mask_png` (a PNG, 0/255, at the photo's size after
EXIF orientation; base64 in JSON), `width`, `height` and `foreground_fraction`.

The photo is decoded as `wms serve` decodes an upload (wms.serve.imaging, with its pixel limit)
and segmented by the same code on the same sha256-checked bytes (wms.serve.model.load_folder,
OnnxSegmenter): the masks are bit for bit those of `wms serve`. No torch is imported.
(`wms predict` runs the torch weights: a pixel whose probability sits on the threshold may
differ within float rounding, as the gate's parity check allows.)

In the registry the MLflow files (MLmodel, requirements, input example, code/) sit beside
model.pt, model.json and model.onnx, the files WMS itself reads. MLflow loads the folder
through `_load_pyfunc` below (the flavor's loader module) with the few modules in
`code/wms/`, so the model loads where WMS is not installed. The loader module, rather than
`python_model=`, keeps one copy of the export (`artifacts=` copies files under artifacts/)
and nothing pickled. MLmodel's `config`
holds the sha256 recorded at training and `wms serve`'s limits; `load_model(...,
model_config={"intra_op_threads": 0})` overrides a limit.
"""

from __future__ import annotations

import importlib.metadata
import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

from wms.serve.imaging import InputError, decode_upload, summarize_mask
from wms.serve.model import ModelCard, load_folder
from wms.train.export import OnnxSegmenter

IMAGE, MASK = "image", "mask_png"
OUTPUTS = (MASK, "width", "height", "foreground_fraction")
MODEL_FOLDER = "model_folder"  # the context artifact: the folder that holds model.json and model.onnx
MLMODEL = "MLmodel"
BATCH = 8
DEFAULTS: dict[str, Any] = {"max_pixels": 40_000_000, "intra_op_threads": 1}  # wms serve's defaults
# The modules this flavor runs (below src/wms), copied into every model's code/wms/.
CODE = (
    "__init__.py",
    "crops.py",
    "errors.py",
    "mlflow_model.py",
    "refine.py",
    "sandbox/__init__.py",  # wms.train.preprocess reads files through it
    "sandbox/child.py",
    "sandbox/images.py",
    "sandbox/process.py",
    "serve/__init__.py",
    "serve/imaging.py",
    "serve/model.py",
    "train/__init__.py",
    "train/export.py",
    "train/preprocess.py",
    "train/spec.py",
)
# Pinned to the versions logging. SciPy: a second stage's crops (wms.crops).
REQUIREMENTS = ("mlflow", "numpy", "onnxruntime", "pandas", "pillow", "scipy")


class SegmenterModel(PythonModel):
    """The exported model on ONNX Runtime: photo files in, masks out (the module docstring says how)."""

    segmenter: OnnxSegmenter
    max_pixels: int

    def load_context(self, context: PythonModelContext) -> None:
        """Load and verify `model.onnx` from the `model_folder` artifact."""
        config = DEFAULTS | dict(context.model_config or {})
        sha = str(config.get("onnx_sha256") or "")
        card = ModelCard(f"of run {config.get('run_id', '?')}", sha) if sha else None
        folder = Path(context.artifacts[MODEL_FOLDER])
        self.segmenter = load_folder(folder, card, threads=int(config["intra_op_threads"])).segmenter
        self.max_pixels = int(config["max_pixels"])

    # MLflow (since 2.20) calls a predict without `context` with the input alone.
    def predict(  # type: ignore[override]
        self, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """One row per photo: its mask as PNG bytes, the mask's size and its foreground share."""
        from mlflow.exceptions import MlflowException

        images = []
        for row, data in enumerate(model_input[IMAGE]):
            try:
                if not isinstance(data, bytes | bytearray):
                    raise InputError(400, f"got {type(data).__name__}, not the bytes of a photo file")
                images.append(decode_upload(bytes(data), self.max_pixels))
            except InputError as exc:
                message = f"{IMAGE} in row {row}: {exc.message}"
                raise MlflowException.invalid_parameter_value(message) from None
        rows = []
        for start in range(0, len(images), BATCH):
            for mask in self.segmenter.predict_masks(images[start : start + BATCH]):
                summary = summarize_mask(mask)
                rows.append((summary.png, summary.width, summary.height, summary.foreground_fraction))
        return pd.DataFrame(rows, columns=list(OUTPUTS))


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> SegmenterModel:
    """MLflow's entry point (the flavor's loader module): the model in the folder that holds MLmodel."""
    model = SegmenterModel()
    model.load_context(PythonModelContext({MODEL_FOLDER: path}, model_config))
    return model


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    outputs = [DataType.binary, DataType.long, DataType.long, DataType.double]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, IMAGE)]),
        outputs=Schema([ColSpec(kind, name) for kind, name in zip(outputs, OUTPUTS, strict=True)]),
    )


def _example() -> pd.DataFrame:
    from wms.data.synth import synth_pair

    buffer = io.BytesIO()
    synth_pair(seed=0, index=0, size=64)[0].save(buffer, format="PNG")
    return pd.DataFrame({IMAGE: [buffer.getvalue()]})


def _stage_code(dst: Path) -> Path:
    package = Path(__file__).parent
    for name in CODE:
        (dst / "wms" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / name, dst / "wms" / name)
    return dst / "wms"


def write_pyfunc(out: Path, config: dict[str, Any], run_id: str = "", model_bytes: int = 0) -> list[str]:
    """Write into `out` (absent or empty) the files that make a model folder an MLflow model.

    They go beside the folder's model.json and model.onnx (log both to the same place).
    `config` becomes MLmodel's model config: `onnx_sha256` (checked at load), `max_pixels`
    and `intra_op_threads`. `model_bytes`, the size of the model's own files, is added to the
    size MLflow records. Returns the names written.
    """
    import mlflow.pyfunc
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="wms-pyfunc-") as tmp:
        mlflow.pyfunc.save_model(
            path=str(out),
            loader_module=__name__,
            code_paths=[str(_stage_code(Path(tmp)))],
            mlflow_model=Model(artifact_path="model", run_id=run_id or None),
            signature=_signature(),
            input_example=_example(),
            pip_requirements=[f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS],
            model_config=DEFAULTS | {"run_id": run_id} | config,
        )
    meta = Model.load(str(out))
    meta.model_size_bytes = (meta.model_size_bytes or 0) + model_bytes
    meta.save(str(out / MLMODEL))
    return sorted(p.name for p in out.iterdir())
