"""Dataset handling: pairing, synthetic data, validation and preparation."""

from wms.data.pairs import IMAGE_SUFFIXES, Pair, PairScan, find_pairs
from wms.data.prepare import PrepareReport, Skipped, prepare_dataset
from wms.data.synth import synthesize
from wms.data.validate import Issue, ValidationReport, validate_dataset

__all__ = [
    "IMAGE_SUFFIXES",
    "Issue",
    "Pair",
    "PairScan",
    "PrepareReport",
    "Skipped",
    "ValidationReport",
    "find_pairs",
    "prepare_dataset",
    "synthesize",
    "validate_dataset",
]
