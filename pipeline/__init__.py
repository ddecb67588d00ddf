"""fmnist-pipeline: a DVC + Prefect pipeline that reproduces two Fashion-MNIST CNN papers honestly.

The package holds one module per DVC stage; `python -m pipeline <stage>` is what dvc.yaml calls.
"""

from pipeline.runtime import configure_environment as _configure_environment

# Here, not in the entry points: TensorFlow is imported lazily in several modules (train, device, registry, export)
# and by scripts straight after `import pipeline`, so the package's import is the one step that precedes them all.
_configure_environment()

__version__ = "0.1.0"
