"""Dataset handling: pairing, synthetic data and validation."""

from wms.data.pairs import IMAGE_SUFFIXES, Pair, PairScan, find_pairs
from wms.data.synth import synthesize
from wms.data.validate import Issue, ValidationReport, validate_dataset

__all__ = [
    "IMAGE_SUFFIXES",
    "Issue",
    "Pair",
    "PairScan",
    "ValidationReport",
    "find_pairs",
    "synthesize",
    "validate_dataset",
]
