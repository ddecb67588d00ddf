"""Models: the registry (names, specs, published numbers, safe loading), Keras CNNs and sklearn baselines.

Importing this package does not import Keras or scikit-learn estimators; builders do, lazily.
"""

from pipeline.models.registry import ModelSpec, get, load_predictor, names, preprocess

__all__ = ["ModelSpec", "get", "load_predictor", "names", "preprocess"]
