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
