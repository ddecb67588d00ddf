"""Which device the active Keras backend computes on: the one probe behind train.json's `device` and the
evaluate stage's inference description, so both name a GPU the same way.

Probing imports the backend (TensorFlow, JAX or PyTorch), so it happens only when called, and it never raises:
a record of where a run happened must not be the reason the run fails.
"""

from __future__ import annotations

import os
import platform


def keras_backend() -> str:
    import keras

    return keras.backend.backend()


def accelerator_name() -> str | None:
    """The product name of the first accelerator the Keras backend sees, or None when it computes on the CPU."""
    backend = keras_backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return str(details.get("device_name", gpus[0].name))
        elif backend == "jax":
            import jax
            dev = jax.devices()[0]
            if dev.platform != "cpu":
                return str(getattr(dev, "device_kind", dev.platform))
        elif backend == "torch":
            import torch
            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
    except Exception:  # device probing must never break a stage
        pass
    return None


def detect_device() -> str:
    """'CPU' or the accelerator's name: what train.json records as `device`."""
    return accelerator_name() or "CPU"


def describe_device(family: str) -> str:
    """Where inference ran, for the evaluate stage's metrics: the CPU model and core count, or the GPU the Keras
    backend sees, plus that backend (scikit-learn models always run on the CPU)."""
    cpu = platform.processor() or platform.machine() or "unknown CPU"
    desc = f"CPU ({cpu}, {os.cpu_count()} cores)"
    if family == "keras":
        try:
            backend = keras_backend()
            gpu = accelerator_name()
            desc = (f"GPU ({gpu})" if gpu else desc) + f"; keras backend {backend}"
        except Exception as exc:  # a device description must never fail an evaluation
            desc += f"; backend unknown ({type(exc).__name__})"
    return desc
