"""fmnist-pipeline: a DVC + Prefect pipeline that reproduces two Fashion-MNIST CNN papers honestly.

The package holds one module per DVC stage; `python -m pipeline <stage>` is what dvc.yaml calls.
"""

__version__ = "0.1.0"
