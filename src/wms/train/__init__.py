"""Model, training loop, metrics, evaluation and the saved-model format."""
