"""params.yaml is the only home of every setting: a key deleted from it is an error naming the key.

No dataclass field, builder `.get(key, default)` or function signature may stand in for a value that
params.yaml lacks; such a stand-in would silently keep working with a value nobody sees in the file.
Every test reads the REAL params.yaml, so a key added there is covered without editing this file.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.errors import PipelineError
from pipeline.serving.export import ExportParams
from pipeline.models import registry
from pipeline.params import (
    ConvertParams, EvaluateParams, FetchParams, OrchestrationParams, PublishParams, SplitParams, TrainParams,
    ValidateParams, section,
)
from pipeline.serving.predict import PredictParams
from pipeline.serving.monitor import MonitorParams
from pipeline.serving.promote import PromoteParams
from pipeline.serving.serve import ServeParams

from flows.notify import NotifyParams
from tests.conftest import REPO, run_cli, shipped_params

# params.yaml section -> the dataclass its stage builds it into (`models` is the registry's: see below).
SECTIONS = {
    "fetch": FetchParams, "validate": ValidateParams, "convert": ConvertParams, "split": SplitParams,
    "train": TrainParams, "evaluate": EvaluateParams, "publish": PublishParams, "predict": PredictParams,
    "export": ExportParams, "serve": ServeParams, "promote": PromoteParams, "orchestration": OrchestrationParams,
    "monitor": MonitorParams, "notify": NotifyParams,
}


def _keys(name: str) -> list[str]:
    return list(shipped_params()[name])


def _without(name: str, key: str) -> dict:
    params = copy.deepcopy(shipped_params())
    del params[name][key]
    return params


def test_every_section_of_params_yaml_has_a_loader():
    assert set(shipped_params()) == set(SECTIONS) | {"models"}


@pytest.mark.parametrize("cls", SECTIONS.values(), ids=SECTIONS)
def test_no_setting_has_a_default_in_code(cls):
    defaulted = [f.name for f in dataclasses.fields(cls)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert defaulted == [], f"{cls.__name__}: defaults repeat params.yaml values"


@pytest.mark.parametrize("name", SECTIONS)
def test_the_shipped_section_loads(name):
    section(SECTIONS[name], name, shipped_params())


@pytest.mark.parametrize(("name", "key"), [(n, k) for n in SECTIONS for k in _keys(n)],
                         ids=lambda v: str(v))
def test_a_deleted_key_is_an_error_naming_it(name, key):
    with pytest.raises(PipelineError) as err:
        section(SECTIONS[name], name, _without(name, key))
    message = str(err.value)
    assert f"missing key(s) in `{name}`: {key}" in message
    assert f"add `{name}.{key}` to params.yaml" in message


@pytest.mark.parametrize("name", SECTIONS)
def test_a_deleted_section_is_an_error_naming_it(name):
    params = copy.deepcopy(shipped_params())
    del params[name]
    with pytest.raises(PipelineError, match=f"section `{name}` is missing"):
        section(SECTIONS[name], name, params)


# validate's nested limits are checked by the validate stage itself (pipeline.data.validate.check_params).
@pytest.mark.parametrize(("group", "key"), [(g, k) for g, v in shipped_params()["validate"].items()
                                            if isinstance(v, dict) for k in v], ids=lambda v: str(v))
def test_a_deleted_nested_validate_key_is_an_error_naming_it(group, key):
    from pipeline.data.validate.expectations import check_params

    params = _without("validate", group)
    params["validate"][group] = {k: v for k, v in shipped_params()["validate"][group].items() if k != key}
    loaded = section(ValidateParams, "validate", params)
    with pytest.raises(PipelineError, match=f"validate.{group}"):
        check_params(loaded)


@pytest.mark.parametrize("group", ["stage_timeout_s", "stage_cpus"])
def test_orchestration_needs_its_default(group):
    params = copy.deepcopy(shipped_params())
    del params["orchestration"][group]["default"]
    with pytest.raises(PipelineError, match=f"orchestration.{group} needs a `default`"):
        section(OrchestrationParams, "orchestration", params)


# ------------------------------------------------------------------------------- models:
@pytest.mark.parametrize(("model", "key"), [(m, k) for m in shipped_params()["models"]
                                            for k in shipped_params()["models"][m]], ids=lambda v: str(v))
def test_a_model_missing_a_hyperparameter_is_rejected(model, key):
    hp = {k: v for k, v in shipped_params()["models"][model].items() if k != key}
    with pytest.raises(PipelineError) as err:
        registry.get(model).hyperparams(hp)
    assert f"`models.{model}` lacks hyperparameter(s): {key}" in str(err.value)
    assert f"add `models.{model}.{key}` to params.yaml" in str(err.value)


def test_every_shipped_model_lists_exactly_its_builders_keys():
    for model, hp in shipped_params()["models"].items():
        assert registry.get(model).hyperparams(hp) == hp


def test_a_model_entry_that_is_not_a_mapping_is_rejected():
    with pytest.raises(PipelineError, match="`models.svc` must be a mapping"):
        registry.get("svc").hyperparams([1, 2])


# ------------------------------------------------------------------------------- through a stage's CLI
def test_a_stage_refuses_to_run_without_a_key(tmp_path):
    params = _without("split", "seed")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_cli("split", "--processed", "processed", "--out", "split", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "missing key(s) in `split`: seed" in proc.stderr and "add `split.seed` to params.yaml" in proc.stderr
    assert not (tmp_path / "split").exists()


# ------------------------------------------------------------------------------- paths: dvc.yaml's
def _dvc_cmd_options(stage: str) -> dict[str, str]:
    cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    words = shlex.split(cmd)
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


@pytest.mark.parametrize("stage", ["fetch", "convert", "images", "split"])
def test_data_stage_paths_come_only_from_dvc_yaml(stage):
    """The data stages take no path defaults (fetch reads its --out from dvc.yaml): dvc.yaml passes them."""
    import importlib

    from pipeline.cli import STAGES, build_parser
    from pipeline.dvc_yaml import command_option

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "stage").choices[stage]
    importlib.import_module(STAGES[stage][0]).add_cli(sub)
    for option in _dvc_cmd_options(stage):
        action = next(a for a in sub._actions if option in a.option_strings)
        assert action.default is None, f"{stage} {option}: a path default repeats dvc.yaml"
    if stage == "fetch":
        assert command_option("fetch", "--out", REPO / "dvc.yaml") == Path(_dvc_cmd_options("fetch")["--out"])


def test_user_command_path_defaults_agree_with_dvc_yaml():
    """predict/serve/export are run by hand (README) where no dvc.yaml need be: their defaults must be
    the paths dvc.yaml gives the stages that write what they read."""
    from pipeline.serving import export, predict, promote, serve
    from pipeline.cli import build_parser

    evaluate, publish = _dvc_cmd_options("evaluate"), _dvc_cmd_options("publish")
    expected = {"--models-dir": evaluate["--models-dir"], "--test": evaluate["--test"],
                "--metrics": evaluate["--out"], "--reports": publish["--out"]}
    assert _dvc_cmd_options("export")["--models-dir"] == expected["--models-dir"]
    assert _dvc_cmd_options("export")["--test"] == expected["--test"]
    for name, module in (("export", export), ("predict", predict), ("serve", serve), ("promote", promote)):
        parser = build_parser()
        sub = next(a for a in parser._actions if a.dest == "stage").choices[name]
        module.add_cli(sub)
        for action in sub._actions:
            option = next((o for o in action.option_strings if o in expected), None)
            if option:
                assert str(action.default) == expected[option], f"{name} {option}"
