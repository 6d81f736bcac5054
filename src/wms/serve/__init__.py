"""The serving API (FastAPI on ONNX Runtime; no torch) and its web page.

A registered model's MLflow wrapper ships this file with `serve/model.py` and
`serve/imaging.py` only (wms.mlflow_model.CODE): import nothing else here. A command loads the
model it names with `wms.serve.fetch.load_model`.
"""

from wms.serve.model import ModelCard, ServedModel, load_folder

__all__ = ["ModelCard", "ServedModel", "load_folder"]
