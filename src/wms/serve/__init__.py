"""The serving API (FastAPI on ONNX Runtime; no torch) and its web page."""

from wms.serve.model import ModelCard, ServedModel, load_folder, load_model

__all__ = ["ModelCard", "ServedModel", "load_folder", "load_model"]
