"""WMS: continuous training and delivery of a water-meter counter-window segmenter."""

__version__ = "0.1.0"
