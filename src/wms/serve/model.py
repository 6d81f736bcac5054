"""The model a server runs: an exported ONNX model whose bytes are checked against the registry.

A training run records `wms.onnx_sha256`, the sha256 of its `model.onnx`. Loading hashes the
very bytes it hands to ONNX Runtime and refuses to serve on a mismatch, so a corrupted or
swapped file never answers requests. A model folder outside the registry (baked into an
image, prepared by a deploy) carries the record as `serving.json` beside the model.

Nothing here imports torch or mlflow at module level: the serving image has neither.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.errors import RegistryError
from wms.train.export import OnnxSegmenter, read_refine
from wms.train.spec import ONNX_FILE, SPEC_FILE, ModelSpec

if TYPE_CHECKING:
    from wms.registry import ModelRecord

CARD_FILE = "serving.json"
SHA_TAG = "wms.onnx_sha256"


@dataclass(frozen=True)
class ModelCard:
    """What the registry says about a served model: shown by /model and checked at load."""

    version: str
    onnx_sha256: str
    run_id: str = ""
    dataset_version: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: ModelRecord) -> ModelCard:
        """The card of a registered version; its run must have recorded the ONNX file's hash."""
        sha = record.run_tags.get(SHA_TAG, "")
        if not sha:
            raise RegistryError(
                f"model version {record.version} has no {SHA_TAG} record (trained with "
                "train.export_onnx = false?); train it again with export on to serve it"
            )
        dataset = record.tags.get("dataset_version") or record.run_tags.get("wms.dataset_version", "")
        return cls(
            version=record.version,
            onnx_sha256=sha,
            run_id=record.run_id,
            dataset_version=dataset,
            metrics=dict(record.metrics),
            aliases=list(record.aliases),
        )

    def write(self, folder: Path) -> None:
        """Store the card beside the model, for serving the folder without the registry."""
        (folder / CARD_FILE).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> ModelCard | None:
        path = folder / CARD_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"{path} is not a model card ({exc}); deploy the model again") from None


@dataclass
class ServedModel:
    """A loaded, verified model and its card."""

    segmenter: OnnxSegmenter
    card: ModelCard
    verified: bool  # False only for a bare folder with no record to check against

    @property
    def version(self) -> str:
        return self.card.version


def load_folder(folder: Path, card: ModelCard | None = None, threads: int = 0) -> ServedModel:
    """Load `model.onnx` from a model folder, checking its sha256 against `card` (or serving.json)."""
    spec_path, onnx_path = folder / SPEC_FILE, folder / ONNX_FILE
    if not spec_path.is_file() or not onnx_path.is_file():
        raise RegistryError(
            f"{folder} holds no exported model ({SPEC_FILE} and {ONNX_FILE} expected); "
            "train with train.export_onnx = true, or pass a registry version"
        )
    card = card or ModelCard.read(folder)
    data = onnx_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if card is not None and card.onnx_sha256 != sha:
        raise RegistryError(
            f"refusing to serve model {card.version}: {onnx_path.name} has sha256 {sha[:12]}… but the "
            f"registry recorded {card.onnx_sha256[:12]}…; the file was changed or corrupted, fetch it again"
        )
    verified = card is not None
    if card is None:
        card = ModelCard(version=f"local:{folder.name}", onnx_sha256=sha)
    spec = ModelSpec.read(spec_path)
    # A second stage's refine.onnx is checked against the sha256 in the model.onnx just verified.
    segmenter = OnnxSegmenter(data, spec, threads, read_refine(folder, spec), release_memory=True)
    return ServedModel(segmenter, card, verified)
