"""Runs and stores of format 1, made by vidlat before the stage subpackages, still load and predict
exactly as they did: tests/fixtures/format_v1 holds a tiny dataset, a DRNET run, its store, a
predictor run and the frames `vidlat generate --videos 0:2 --future 3` wrote then."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from vidlat.pipeline.generate import GenerateConfig, generate
from vidlat.stages.load import load_run
from vidlat.stages.stage1.drnet import Drnet
from vidlat.stages.stage2.lstm import PoseLSTM
from vidlat.store.reader import LatentStore

FIXTURE = Path(__file__).parent / "fixtures" / "format_v1"


@pytest.fixture
def old(tmp_path) -> Path:
    folder = tmp_path / "format_v1"
    shutil.copytree(FIXTURE, folder)  # generate reads it; nothing may write into the fixture
    return folder


def test_old_checkpoints_and_store_load(old):
    model, meta = load_run(old / "ae", "stage1")
    assert isinstance(model, Drnet) and meta["model"] == "drnet"
    predictor, pmeta = load_run(old / "pred", "predictor")
    assert isinstance(predictor, PoseLSTM) and pmeta["predictor"] == "lstm"
    store = LatentStore.open(old / "latents.zarr")
    assert store.complete and set(store.fields) >= {"content", "pose"}
    assert store.encoder_hash == pmeta["encoder_hash"]


def test_old_runs_predict_the_frames_they_predicted_then(old, tmp_path):
    cfg = GenerateConfig(videos="0:2", future=3, device="cpu")
    generate(old / "ae", old / "pred", old / "videos.zarr", cfg, tmp_path / "gen")
    frames = zarr.open_group(str(tmp_path / "gen" / "predicted.zarr"), mode="r")["videos"][:]
    np.testing.assert_array_equal(frames, np.load(old / "expected_predicted.npy"))
