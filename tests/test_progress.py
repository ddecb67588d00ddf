"""Progress on long work: heartbeats during a fit, progress with an estimate during batched predictions."""

from __future__ import annotations

import re
import threading

import pytest

from pipeline import io, progress
from pipeline.training import train
from tests.conftest import shipped_hyperparams, shipped_section


def test_heartbeat_reports_elapsed_time_while_the_block_runs_and_stops_after():
    said: list[str] = []
    three = threading.Event()

    def say(line: str) -> None:
        said.append(line)
        if len(said) >= 3:
            three.set()

    with progress.heartbeat("train [svc]: fitting", every_s=0.01, say=say):
        assert three.wait(timeout=120), "the heartbeat must keep beating while the block runs"
    count = len(said)               # the heartbeat's thread has been joined: nothing can be said any more
    assert count >= 3 and all(re.fullmatch(r"train \[svc\]: fitting: still running, \d+ s elapsed", s) for s in said)
    assert len(said) == count
    quick: list[str] = []
    with progress.heartbeat("fast", every_s=3600, say=quick.append):
        pass
    assert quick == []                              # work shorter than one interval prints nothing


def test_batch_progress_gives_counts_and_an_estimate():
    said: list[str] = []
    bar = progress.BatchProgress("evaluate [knn]: predicting", 10_000, every_s=0.0, say=said.append)
    for _ in range(4):
        bar.update(2_000)
    bar.update(2_000)                              # the last batch: done, nothing more to estimate
    assert len(said) == 4
    assert said[0].startswith("evaluate [knn]: predicting: 2,000/10,000 images, 0 s elapsed, about ")
    assert said[-1].startswith("evaluate [knn]: predicting: 8,000/10,000 images")
    assert all(s.endswith(" s left") for s in said)


@pytest.fixture
def tiny_split(small_split, tmp_path):
    for part in ("train", "val"):
        x, y = small_split[part]
        io.save_arrays(tmp_path / f"{part}.npz", x=x, y=y)
    return tmp_path


def test_a_scikit_learn_training_reports_progress(tiny_split, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "DEFAULT_EVERY_S", 0.001)
    monkeypatch.setattr(train, "SCORING_BATCH", 50)
    params = {"train": shipped_section("train", models=["svc"], seeds=[0]), "models": {"svc": shipped_hyperparams("svc")}}
    train.run("svc", tiny_split, tmp_path / "out", params)
    err = capsys.readouterr().err
    assert "train [svc]: scoring the validation split: 50/200 images" in err
    assert re.search(r"train \[svc\]: scoring the training subsample: \d+/600 images, .* about .* left", err)
