"""Registry completeness and each model's architecture (trainable parameter counts pinned)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.models import registry
from tests.conftest import shipped_hyperparams, shipped_params

SEED = shipped_params()["train"]["seeds"][0]  # every build gets its seed from params.yaml train.seeds

PAPER_A = ["cnn-dropout-1", "cnn-dropout-2", "cnn-dropout-3", "cnn-simple"]
PAPER_B = ["paper-b-cnn", "paper-b-cnn-dropout"]
BASELINES = {  # name -> published benchmark accuracy (%)
    "svc": 89.7, "gradient-boosting": 88.0, "random-forest": 87.3, "mlp": 87.0, "knn": 85.4,
    "logistic-regression": 84.2, "linear-svc": 83.6, "sgd": 81.9, "decision-tree": 79.8,
    "perceptron": 78.2, "passive-aggressive": 77.6, "extra-tree": 77.5, "gaussian-nb": 51.1,
}

# Our conventional reconstructions (see pipeline/models/cnn.py docstring) vs the published counts.
EXPECTED_PARAMS = {  # name -> (ours, published or None)
    "cnn-dropout-1": (429_258, 44_426),
    "cnn-dropout-2": (475_434, 32_340),
    "cnn-dropout-3": (429_258, 44_426),
    "cnn-simple": (1_625_866, 110_968),
    "paper-b-cnn": (110_474, None),
    "paper-b-cnn-dropout": (110_474, None),
    "cnn-ours": (688_842, None),
}


def test_registry_is_complete_and_ordered():
    assert registry.names() == PAPER_A + PAPER_B + ["cnn-ours"] + list(BASELINES)
    assert len(set(registry.names())) == 20


def test_unknown_model_lists_valid_names():
    with pytest.raises(PipelineError) as exc:
        registry.get("resnet-9000")
    assert "cnn-simple" in str(exc.value) and "gaussian-nb" in str(exc.value)


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_specs(name):
    spec = registry.get(name)
    assert spec.family == "sklearn" and spec.source == registry.BENCHMARK
    assert spec.published["accuracy"] == BASELINES[name]
    assert spec.published["accuracy_kind"]
    assert (spec.stand_in_for is not None) == (name == "gradient-boosting")


def test_paper_specs_carry_published_numbers():
    for name, acc in zip(PAPER_A, (98.69, 99.08, 99.10, 99.05)):
        spec = registry.get(name)
        assert spec.source == registry.PAPER_A and spec.published["accuracy"] == acc
        assert spec.published["tf2_test_accuracy"] == acc  # Table 1 == Table 2 TF2 test column
        hp = shipped_hyperparams(name)  # what `dvc repro` trains with
        assert hp["learning_rate"] == 1.0  # Adadelta lr 1.0, not Keras' 0.001
        assert hp["batch_size"] == 128 and hp["epochs"] == 12
    assert registry.get("cnn-dropout-3").published["tf1_test_accuracy"] == 90.86
    assert registry.get("cnn-simple").published["tf1_train_loss"] == 0.04
    b = registry.get("paper-b-cnn-dropout")
    assert b.published["accuracy"] == 92.56 and b.published["class_report"]["Shirt"]["f1"] == 0.78
    assert registry.get("paper-b-cnn").published["accuracy"] == 91.5
    assert shipped_hyperparams("cnn-dropout-3")["dropout"] < shipped_hyperparams("cnn-dropout-1")["dropout"]
    for name in ("paper-b-cnn", "paper-b-cnn-dropout"):
        assert shipped_hyperparams(name)["epochs"] == 50 and shipped_hyperparams(name)["filters"] == [32, 64, 128]


def test_unknown_hyperparameter_is_an_error():
    with pytest.raises(PipelineError, match="epochz"):
        registry.get("cnn-simple").hyperparams({**shipped_hyperparams("cnn-simple"), "epochz": 3})


def test_missing_hyperparameter_is_an_error_not_a_silent_default():
    hp = shipped_hyperparams("svc")
    del hp["C"]
    with pytest.raises(PipelineError, match=r"models\.svc.* lacks .*\bC\b"):
        registry.get("svc").hyperparams(hp)


@pytest.mark.parametrize("name", registry.names())
def test_shipped_params_give_every_model_exactly_its_keys(name):
    assert registry.get(name).hyperparams(shipped_hyperparams(name)) == shipped_hyperparams(name)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS),
                         ids=[f"{n}[ours={o:,}|published={p if p else 'n/a'}]"
                              for n, (o, p) in EXPECTED_PARAMS.items()])
def test_cnn_trainable_parameter_count(name):
    spec = registry.get(name)
    model = spec.build(spec.hyperparams(shipped_hyperparams(name)), seed=SEED, steps_per_epoch=10)
    ours, published = EXPECTED_PARAMS[name]
    trainable = int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))
    assert trainable == ours, f"{name}: {trainable:,} trainable params (pinned {ours:,}; published {published})"
    assert spec.published.get("params") == published
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert model.layers[-1].activation.__name__ == "softmax"


def test_paper_a_uses_adadelta_lr_1():
    spec = registry.get("cnn-dropout-1")
    model = spec.build(spec.hyperparams(shipped_hyperparams(spec.name)), seed=SEED)
    assert type(model.optimizer).__name__ == "Adadelta"
    assert float(model.optimizer.learning_rate) == pytest.approx(1.0)


def test_cnn_simple_dense_sees_14x14():
    spec = registry.get("cnn-simple")
    model = spec.build(spec.hyperparams(shipped_hyperparams(spec.name)), seed=SEED)
    flatten = next(layer for layer in model.layers if type(layer).__name__ == "Flatten")
    assert flatten.output.shape[-1] == 14 * 14 * 64


def test_model_code_uses_keras_only():
    import re
    from pathlib import Path

    import pipeline.models as pkg
    for path in Path(pkg.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import tensorflow" not in text and not re.search(r"\btf\.[A-Za-z_]", text), path


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_builds_scaler_pipeline(name):
    model = registry.get(name).build(registry.get(name).hyperparams(shipped_hyperparams(name)), seed=0)
    assert type(model[0]).__name__ == "StandardScaler"
    if name == "gradient-boosting":
        assert type(model[-1]).__name__ == "HistGradientBoostingClassifier"
        exact = registry.get(name).build(registry.get(name).hyperparams(shipped_hyperparams(name)), seed=0,
                                         exact_gradient_boosting=True)
        assert type(exact[-1]).__name__ == "GradientBoostingClassifier"
    if name == "passive-aggressive":
        clf = model[-1]
        assert type(clf).__name__ == "SGDClassifier" and clf.learning_rate == "pa1" and clf.penalty is None


def test_preprocess_shapes():
    x = np.full((3, 28, 28), 255, dtype=np.uint8)
    assert registry.preprocess("keras", x).shape == (3, 28, 28, 1)
    flat = registry.preprocess("sklearn", x)
    assert flat.shape == (3, 784) and flat.max() == 1.0
    with pytest.raises(PipelineError):
        registry.preprocess("keras", np.zeros((3, 27, 27), np.uint8))
