"""Compute backends, chosen by `compute.backend`."""

from __future__ import annotations

from wms.compute.base import Compute, ComputeStatus
from wms.compute.local import LocalCompute
from wms.config import ComputeSettings
from wms.errors import ConfigError

BACKENDS = {"local": LocalCompute}


def make_compute(cfg: ComputeSettings) -> Compute:
    """The backend named by `compute.backend`."""
    try:
        return BACKENDS[cfg.backend]()
    except KeyError:
        raise ConfigError(
            f"unknown compute.backend {cfg.backend!r}; use one of: {', '.join(BACKENDS)}"
        ) from None


__all__ = ["BACKENDS", "Compute", "ComputeStatus", "LocalCompute", "make_compute"]
