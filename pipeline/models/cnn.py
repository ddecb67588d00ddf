"""Keras CNNs: the four of paper A, the two of paper B, and ours. `keras.*` only (no `tf.*`), so the
same code runs with KERAS_BACKEND=tensorflow, jax or torch.

Every builder takes the model's hyperparameters (params.yaml `models.<name>`; the registry lists which keys it
reads) and `steps_per_epoch`, and returns a COMPILED model: float32 (N, 28, 28, 1) input in [0, 1], categorical
cross-entropy on one-hot labels, float32 softmax. How each architecture was read from its paper, and why cnn-ours
is built as it is: docs/models.md.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from pipeline.errors import PipelineError
from pipeline.schema import IMAGE_SIDE, N_CLASSES

INPUT_SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)   # channels-last grey images


def _output():
    return layers.Dense(N_CLASSES, activation="softmax", dtype="float32", name="probs")


def _compile(model: keras.Model, optimizer, label_smoothing: float = 0.0) -> keras.Model:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )
    return model


def _adadelta(hp: dict[str, Any]):
    # Paper A / Keras mnist_cnn: Adadelta(learning_rate=1.0). NOT Keras' default 0.001.
    return keras.optimizers.Adadelta(learning_rate=float(hp["learning_rate"]), rho=float(hp["rho"]))


# ---------------------------------------------------------------------------------------- paper A
def _paper_a_two_blocks(hp: dict[str, Any], name: str, convs_per_block: int) -> keras.Model:
    """2 x (convs_per_block x conv3x3 -> maxpool2 -> dropout), dense, dense, softmax; Adadelta."""
    d1, d2 = hp["dense_units"]
    stack: list[Any] = [keras.Input(INPUT_SHAPE)]
    for filters in hp["filters"]:
        stack += [layers.Conv2D(filters, 3, padding="same", activation="relu") for _ in range(convs_per_block)]
        stack += [layers.MaxPooling2D(2), layers.Dropout(hp["dropout"])]
    stack += [layers.Flatten(), layers.Dense(d1, activation="relu"), layers.Dense(d2, activation="relu"), _output()]
    return _compile(keras.Sequential(stack, name=name.replace("-", "_")), _adadelta(hp))


def paper_a_dropout(hp: dict[str, Any], steps_per_epoch: int | None = None, *, name: str) -> keras.Model:
    """cnn-dropout-1 / cnn-dropout-3: 2 x (conv3x3 -> maxpool2 -> dropout), dense, dense, softmax."""
    return _paper_a_two_blocks(hp, name, convs_per_block=1)


def paper_a_dropout_2(hp: dict[str, Any], steps_per_epoch: int | None = None, *, name: str) -> keras.Model:
    """cnn-dropout-2: as cnn-dropout-1 but two convolutions before each max-pool."""
    return _paper_a_two_blocks(hp, name, convs_per_block=2)


def paper_a_simple(hp: dict[str, Any], steps_per_epoch: int | None = None, *, name: str) -> keras.Model:
    """cnn-simple: conv -> conv -> ONE maxpool (14x14 reaches the dense layer) -> dropout -> dense -> dropout."""
    f1, f2 = hp["filters"]
    model = keras.Sequential([
        keras.Input(INPUT_SHAPE),
        layers.Conv2D(f1, 3, padding="same", activation="relu"),
        layers.Conv2D(f2, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(hp["dropout_conv"]),
        layers.Flatten(),
        layers.Dense(hp["dense_units"], activation="relu"),
        layers.Dropout(hp["dropout_dense"]),
        _output(),
    ], name=name.replace("-", "_"))
    return _compile(model, _adadelta(hp))


# ---------------------------------------------------------------------------------------- paper B
def paper_b(hp: dict[str, Any], steps_per_epoch: int | None = None, *, name: str) -> keras.Model:
    """conv32-pool-conv64-pool-conv128-pool, flatten, dense128, softmax; optional dropout (0 = none)."""
    conv_drop = float(hp["dropout_conv"])
    dense_drop = float(hp["dropout_dense"])
    stack: list = [keras.Input(INPUT_SHAPE)]
    for filters in hp["filters"]:
        stack += [layers.Conv2D(filters, 3, padding=hp["padding"], activation="relu"),
                  layers.MaxPooling2D(2)]
        if conv_drop:
            stack.append(layers.Dropout(conv_drop))
    stack += [layers.Flatten(), layers.Dense(hp["dense_units"], activation="relu")]
    if dense_drop:
        stack.append(layers.Dropout(dense_drop))
    stack.append(_output())
    model = keras.Sequential(stack, name=name.replace("-", "_"))
    return _compile(model, keras.optimizers.Adam(learning_rate=float(hp["learning_rate"])))


# -------------------------------------------------------------------------------------------- ours
CUTOUT_SHARE = 0.5   # cutout erases one square in this share of the training images (as in the ablation)


@keras.saving.register_keras_serializable(package="fmnist")
class Cutout(layers.Layer):
    """Cutout (random erasing): zero one `size` x `size` square (odd size, centred anywhere on the image, clipped
    at the border) in half of the training images; inactive at inference. The ablation's `erase: 8` layer
    (benchmarks/cnn_ablation.py) with its size named by the square's side (9 px)."""

    def __init__(self, size: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.size, self.seed = int(size), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training:
            return x
        ops, n = keras.ops, keras.ops.shape(x)[0]
        cy = keras.random.randint((n, 1, 1, 1), 0, IMAGE_SIDE, seed=self.generator)
        cx = keras.random.randint((n, 1, 1, 1), 0, IMAGE_SIDE, seed=self.generator)
        on = keras.random.uniform((n, 1, 1, 1), seed=self.generator) < CUTOUT_SHARE
        rows = ops.reshape(ops.arange(IMAGE_SIDE), (1, IMAGE_SIDE, 1, 1))
        cols = ops.reshape(ops.arange(IMAGE_SIDE), (1, 1, IMAGE_SIDE, 1))
        half = self.size // 2
        erase = (ops.abs(rows - cy) <= half) & (ops.abs(cols - cx) <= half) & on
        return x * (1.0 - ops.cast(erase, x.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "seed": self.seed}


def _check_ours(hp: dict[str, Any], name: str) -> None:
    blocks = len(hp["filters"])
    for key in ("convs_per_block", "batch_norm_conv", "dropout_conv"):
        if len(hp[key]) != blocks:
            raise PipelineError(f"params.yaml: `models.{name}.{key}` has {len(hp[key])} entries, `filters` "
                                f"{blocks}: one per block", hint=f"give `{key}` one entry per entry of `filters`")
    if any(n < 1 for n in hp["convs_per_block"]):
        raise PipelineError(f"params.yaml: `models.{name}.convs_per_block` must be >= 1 per block, "
                            f"got {hp['convs_per_block']}")
    cutout = int(hp["cutout"])
    if cutout < 0 or (cutout and cutout % 2 == 0) or cutout > IMAGE_SIDE:
        raise PipelineError(f"params.yaml: `models.{name}.cutout` must be 0 (off) or an odd side in pixels up to "
                            f"{IMAGE_SIDE}, got {cutout}", hint="e.g. 9 (a 9x9 square, as in the ablation)")


def ours(hp: dict[str, Any], steps_per_epoch: int | None = None, *, name: str) -> keras.Model:
    """3 x (n x conv3x3[-BN]-ReLU -> maxpool -> dropout), dense + BN + dropout, softmax; cosine-decayed AdamW.

    Sized for the CPU budget: one conv per block (a second one per block costs about twice the time per
    epoch; docs/results/cnn-ours-ablation), BN optional per block (`batch_norm_conv`), and a third cheap
    7x7 block so the dense layer sees only 3x3x128. `convs_per_block` and `cutout` are what the GPU variant
    (params.yaml `models.cnn-ours.gpu`) spends its extra compute on.
    """
    _check_ours(hp, name)

    def conv(filters, batch_norm):
        if not batch_norm:
            return [layers.Conv2D(filters, 3, padding="same", activation="relu")]
        return [layers.Conv2D(filters, 3, padding="same", use_bias=False),
                layers.BatchNormalization(), layers.Activation("relu")]

    stack: list = [keras.Input(INPUT_SHAPE)]
    if hp["augment"]:
        # Clothing is left/right symmetric but never upside down: horizontal flips and small shifts only.
        stack.append(layers.RandomFlip("horizontal"))
        shift = float(hp["shift"])
        if shift > 0:
            stack.append(layers.RandomTranslation(shift, shift, fill_mode="constant", fill_value=0.0))
    if hp["cutout"]:
        stack.append(Cutout(hp["cutout"], name="cutout"))
    for filters, n_convs, batch_norm, drop in zip(hp["filters"], hp["convs_per_block"], hp["batch_norm_conv"],
                                                  hp["dropout_conv"], strict=True):
        for _ in range(n_convs):
            stack += conv(filters, batch_norm)
        stack += [layers.MaxPooling2D(2), layers.Dropout(drop)]
    stack += [layers.Flatten(),
              layers.Dense(hp["dense_units"], use_bias=False),
              layers.BatchNormalization(), layers.Activation("relu"),
              layers.Dropout(hp["dropout_dense"]),
              _output()]
    model = keras.Sequential(stack, name=name.replace("-", "_"))
    steps = max(1, int(steps_per_epoch or 1) * int(hp["epochs"]))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=float(hp["learning_rate"]), decay_steps=steps, alpha=0.0)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=float(hp["weight_decay"]))
    return _compile(model, optimizer, label_smoothing=float(hp["label_smoothing"]))
