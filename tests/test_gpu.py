"""GPU set-up and mixed precision, tested without a GPU (none was available to this project's tests).

- `make setup` picks TensorFlow's CUDA build (requirements-gpu.lock) when `nvidia-smi -L` lists a GPU: checked
  with fake `nvidia-smi` programs on PATH and `make -n` (prints the recipe, runs nothing). Without a GPU the
  recipe is exactly the CPU one it always was.
- requirements-gpu.lock is requirements.lock with tensorflow (+ its nvidia-* wheels) instead of tensorflow-cpu.
- `train.mixed_precision: auto | true | false` resolves per device; a Keras model trains under mixed_float16 when
  the device probe (faked) reports a GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.params import TrainParams, build

REPO = Path(__file__).resolve().parents[1]
CPU_RECIPE = [
    "PYTHON={python} scripts/install-system-deps.sh",
    "{python} -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \"Python 3.11 is required "
    "(found %d.%d)\" % sys.version_info[:2])'",
    "{python} -m venv {venv}",
    "{bin}/python -m pip install --quiet --upgrade pip",
    "{bin}/python -m pip install --quiet -c requirements.lock -e \".[dev]\"",
    "touch {venv}/.installed",
]
NVIDIA_SMI = {
    "one GPU": (0, "GPU 0: NVIDIA H200 (UUID: GPU-5a8c3f4e-0000-0000-0000-000000000000)"),
    "two GPUs": (0, "GPU 0: Tesla V100-SXM2-16GB (UUID: GPU-1)\nGPU 1: Tesla V100-SXM2-16GB (UUID: GPU-2)"),
    "no driver": (9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."),
    "no devices": (6, "No devices were found"),
}


def make_setup_dry_run(tmp_path: Path, nvidia_smi: str | None, *args: str) -> list[str]:
    """The commands `make -n setup` would run, with a fake nvidia-smi (None: none on PATH) and a fresh VENV."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "nvidia-smi"
    if nvidia_smi is not None:
        code, text = NVIDIA_SMI[nvidia_smi]
        fake.write_text(f"#!/bin/sh\ncat <<'OUT'\n{text}\nOUT\nexit {code}\n")
        fake.chmod(0o755)
    elif fake.exists():
        fake.unlink()
    path = os.pathsep.join([str(bindir)] + [p for p in os.environ["PATH"].split(os.pathsep)
                                            if not (Path(p) / "nvidia-smi").exists()])
    # as a user at a shell runs it: not as a sub-make of `make test` (MAKELEVEL/MAKEFLAGS add "Entering directory")
    env = {k: v for k, v in os.environ.items() if k not in ("GPU", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")} | {"PATH": path}
    proc = subprocess.run(["make", "-n", "setup", f"VENV=venv-{tmp_path.name}", "PYTHON=python3.11", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def cpu_recipe(venv: str) -> list[str]:
    return [line.format(python="python3.11", venv=venv, bin=f"{REPO}/{venv}/bin") for line in CPU_RECIPE]


@pytest.mark.parametrize("nvidia_smi", ["one GPU", "two GPUs"])
def test_make_setup_installs_the_cuda_build_on_a_gpu_machine(tmp_path, nvidia_smi):
    lines = make_setup_dry_run(tmp_path, nvidia_smi)
    venv = f"venv-{tmp_path.name}"
    pip = [line for line in lines if " -m pip " in line]
    assert pip == [f"{REPO}/{venv}/bin/python -m pip install --quiet --upgrade pip",
                   f"{REPO}/{venv}/bin/python -m pip uninstall --quiet --yes tensorflow-cpu",
                   f"{REPO}/{venv}/bin/python -m pip install --quiet -r requirements-gpu.lock",
                   f"{REPO}/{venv}/bin/python -m pip install --quiet --no-deps -e ."]
    assert lines[-1] == f"touch {venv}/.installed-gpu"


@pytest.mark.parametrize("nvidia_smi", [None, "no driver", "no devices"])
def test_make_setup_without_a_gpu_is_the_cpu_recipe_unchanged(tmp_path, nvidia_smi):
    assert make_setup_dry_run(tmp_path, nvidia_smi) == cpu_recipe(f"venv-{tmp_path.name}")


def test_gpu_variable_overrides_detection(tmp_path):
    assert make_setup_dry_run(tmp_path, "one GPU", "GPU=0") == cpu_recipe(f"venv-{tmp_path.name}")
    assert make_setup_dry_run(tmp_path, None, "GPU=1")[-1] == f"touch venv-{tmp_path.name}/.installed-gpu"
    # any other value (an unrelated GPU variable in the environment, say) leaves the choice to the detection
    assert make_setup_dry_run(tmp_path, "one GPU", "GPU=nvidia")[-1] == f"touch venv-{tmp_path.name}/.installed-gpu"
    assert make_setup_dry_run(tmp_path, None, "GPU=0000:3b:00.0") == cpu_recipe(f"venv-{tmp_path.name}")


def _lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-").replace(".", "-")] = version
    return pins


def test_gpu_lock_is_the_cpu_lock_with_the_cuda_build_of_tensorflow():
    cpu, gpu = _lock(REPO / "requirements.lock"), _lock(REPO / "requirements-gpu.lock")
    assert "tensorflow-cpu" not in gpu and gpu["tensorflow"] == cpu["tensorflow-cpu"]
    cuda = {name for name in gpu if name.startswith("nvidia-") and name.endswith("-cu12")}
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12"} <= cuda
    shared = set(cpu) & set(gpu)
    assert {name: gpu[name] for name in shared} == {name: cpu[name] for name in shared}
    # everything the package pins is in the lock at that version (tensorflow-cpu -> tensorflow)
    pyproject = (REPO / "pyproject.toml").read_text()
    for name, version in re.findall(r'^\s+"([A-Za-z0-9_.\-]+)==([^"]+)"', pyproject, re.M):
        name = name.lower().replace("_", "-")
        assert gpu["tensorflow" if name == "tensorflow-cpu" else name] == version, name


# ------------------------------------------------------------------------------------ mixed precision
@pytest.mark.parametrize("setting, device, capability, on", [
    ("auto", "CPU", None, False),
    (True, "CPU", None, False),             # never on CPU: float16 is emulated there
    (False, "NVIDIA H200", (9, 0), False),
    ("auto", "NVIDIA H200", (9, 0), True),
    ("auto", "Tesla V100-SXM2-16GB", (7, 0), True),
    ("auto", "NVIDIA GPU (capability unknown)", None, True),
    ("auto", "Tesla P100-PCIE-16GB", (6, 0), False),   # no Tensor Cores: auto keeps float32
    (True, "Tesla P100-PCIE-16GB", (6, 0), True),      # ... unless forced
])
def test_mixed_precision_resolution(setting, device, capability, on):
    from pipeline.training.train import resolve_mixed_precision

    use, why = resolve_mixed_precision(setting, device, capability)
    assert use is on and why.startswith("on" if on else "off")


def test_mixed_precision_param_accepts_true_false_auto_only():
    shipped_train = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert shipped_train["mixed_precision"] == "auto"
    assert build(TrainParams, shipped_train, "train").mixed_precision == "auto"
    for value in (True, False, "auto"):
        assert build(TrainParams, {**shipped_train, "mixed_precision": value}, "train").mixed_precision == value
    for bad in ("yes", "Auto", 1, 0, None):
        with pytest.raises(PipelineError, match=r"train.mixed_precision` must be true, false or auto, got"):
            build(TrainParams, {**shipped_train, "mixed_precision": bad}, "train")


@pytest.mark.parametrize("capability, policy", [((9, 0), "mixed_float16"), ((6, 1), "float32")])
def test_keras_trains_in_mixed_float16_when_a_gpu_is_reported(small_split, monkeypatch, capsys, capability,
                                                              policy):
    import keras

    from conftest import shipped_hyperparams
    from pipeline.training import train
    from pipeline.models import registry

    monkeypatch.setattr(train, "detect_device", lambda: "NVIDIA H200 (faked)")
    monkeypatch.setattr(train, "gpu_compute_capability", lambda: capability)
    (x, y), (xv, yv) = small_split["train"], small_split["val"]
    hp = {**shipped_hyperparams("paper-b-cnn"), "epochs": 1}
    try:
        model, rows, meta = train.train_model(registry.get("paper-b-cnn"), hp, x[:256], y[:256], xv[:64], yv[:64],
                                              seed=0, mixed_precision="auto", verbose=0)
        assert keras.mixed_precision.global_policy().name == policy
        conv = next(layer for layer in model.layers if "conv" in layer.name)
        assert conv.dtype_policy.name == policy
        assert model.layers[-1].compute_dtype == "float32"   # the softmax stays float32
        assert np.isfinite(rows[-1]["loss"]) and meta["device"] == "NVIDIA H200 (faked)"
        assert f"mixed precision {'on' if policy == 'mixed_float16' else 'off'}" in capsys.readouterr().err
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_readme_gpu_command_lists_every_registered_cnn():
    """The README's command that trains every registered CNN on a GPU names every Keras model of the registry."""
    from pipeline.models import registry

    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- gpu-all-cnns -->\s*```(?:bash)?\n(.*?)```", readme, re.S)
    assert block, "README must have the gpu-all-cnns command block"
    listed = [m.strip() for m in re.search(r"train\.models=\[([^\]]*)\]", block.group(1)).group(1).split(",")]
    assert all(m in registry.names() for m in listed)
    keras_models = [n for n in registry.names() if registry.get(n).family == "keras"]
    assert sorted(m for m in listed if registry.get(m).family == "keras") == sorted(keras_models)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())["train"]["models"]
    assert set(shipped) <= set(listed), "the command keeps the default model set and adds the opt-in CNNs"


# ------------------------------------------------------------------------------------ GPU variant (models.<name>.gpu)
@pytest.mark.parametrize("setting, device, used", [
    ("auto", "CPU", False), ("auto", "NVIDIA H200", True), (True, "CPU", True), (False, "NVIDIA H200", False),
])
def test_gpu_variant_resolution(setting, device, used):
    from pipeline.training.train import resolve_gpu_variant

    use, why = resolve_gpu_variant(setting, device)
    assert use is used and why.startswith("on" if used else "off")


def test_gpu_variant_param_accepts_true_false_auto_only():
    shipped_train = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    assert shipped_train["gpu_variant"] == "auto"
    for bad in ("yes", "gpu", 1, None):
        with pytest.raises(PipelineError, match=r"train.gpu_variant` must be true, false or auto, got"):
            build(TrainParams, {**shipped_train, "gpu_variant": bad}, "train")


def test_gpu_variant_overrides_are_the_models_own_keys_checked():
    from conftest import shipped_hyperparams
    from pipeline.models import registry

    spec, hp = registry.get("cnn-ours"), shipped_hyperparams("cnn-ours")
    checked = spec.hyperparams(hp)
    base, used = spec.for_device(checked, use_gpu_variant=False)
    assert not used and base == {k: v for k, v in hp.items() if k != "gpu"}
    variant, used = spec.for_device(checked, use_gpu_variant=True)
    assert used and variant == {**base, **hp["gpu"]} and "gpu" not in variant
    assert spec.for_device({**checked, "gpu": None}, use_gpu_variant=True) == (base, False)
    with pytest.raises(PipelineError, match=r"unknown hyperparameter\(s\) in `models.cnn-ours.gpu`: epoch"):
        spec.hyperparams({**hp, "gpu": {"epoch": 40}})
    with pytest.raises(PipelineError, match=r"`models.cnn-ours.gpu.cutout` must be an integer, got 'big'"):
        spec.hyperparams({**hp, "gpu": {"cutout": "big"}})
    with pytest.raises(PipelineError, match=r"unknown hyperparameter\(s\) in `models.cnn-ours.gpu`: gpu"):
        spec.hyperparams({**hp, "gpu": {"gpu": {}}})


@pytest.mark.parametrize("change, message", [
    ({"convs_per_block": [1, 2]}, r"`models.cnn-ours.convs_per_block` has 2 entries, `filters` 3"),
    ({"convs_per_block": [1, 0, 1]}, r"convs_per_block` must be >= 1 per block"),
    ({"cutout": 8}, r"`models.cnn-ours.cutout` must be 0 \(off\) or an odd side"),
])
def test_cnn_ours_builder_names_a_bad_block_setting(change, message):
    from conftest import shipped_hyperparams
    from pipeline.models import registry

    spec = registry.get("cnn-ours")
    with pytest.raises(PipelineError, match=message):
        spec.build(spec.hyperparams({**shipped_hyperparams("cnn-ours"), **change}), seed=0, steps_per_epoch=1)


def test_cutout_zeroes_one_square_in_about_half_the_training_images_only():
    import keras

    from pipeline.models.cnn import Cutout

    keras.utils.set_random_seed(0)
    x = np.ones((400, 28, 28, 1), dtype="float32")
    layer = Cutout(9)
    erased = 1.0 - keras.ops.convert_to_numpy(layer(x, training=True))
    per_image = erased.reshape(400, -1).sum(axis=1)
    hit = per_image > 0
    assert 0.4 < hit.mean() < 0.6
    # a 9x9 square, clipped at the border: between 5x5 (centred on a corner) and 9x9 pixels
    assert per_image[hit].min() >= 25 and per_image[hit].max() == 81
    rows, cols = np.nonzero(erased[np.argmax(per_image == 81), :, :, 0])
    assert rows.max() - rows.min() == 8 and cols.max() - cols.min() == 8
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_cnn_ours_trains_its_gpu_variant_when_a_gpu_is_reported(small_split, monkeypatch, capsys):
    """train.gpu_variant: auto and a (faked) GPU: the GPU variant's values are trained and recorded."""
    from conftest import shipped_hyperparams
    from pipeline.models import registry
    from pipeline.training import train

    monkeypatch.setattr(train, "detect_device", lambda: "NVIDIA H200 (faked)")
    (x, y), (xv, yv) = small_split["train"], small_split["val"]
    hp = {**shipped_hyperparams("cnn-ours"), "epochs": 1, "batch_size": 64}
    hp["gpu"] = {**hp["gpu"], "epochs": 1}
    model, rows, meta = train.train_model(registry.get("cnn-ours"), hp, x[:128], y[:128], xv[:64], yv[:64],
                                          seed=0, mixed_precision=False, gpu_variant="auto", verbose=0)
    assert meta["gpu_variant"] is True and meta["device"] == "NVIDIA H200 (faked)"
    assert meta["hyperparams"]["convs_per_block"] == hp["gpu"]["convs_per_block"] != hp["convs_per_block"]
    assert meta["hyperparams"]["cutout"] == hp["gpu"]["cutout"] and "gpu" not in meta["hyperparams"]
    assert any(layer.name == "cutout" for layer in model.layers)
    assert "GPU variant (models.cnn-ours.gpu) on: NVIDIA H200 (faked) (train.gpu_variant: auto)" in \
        capsys.readouterr().err
