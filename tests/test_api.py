"""The Python API: vidlat.load(ae, predictor) encodes, predicts and decodes as the commands do."""

from __future__ import annotations

import numpy as np
import pytest

import vidlat
from vidlat.errors import CheckpointError, ConfigError
from vidlat.pipeline.generate import GenerateConfig, generate
from vidlat.progress import set_quiet
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

PRED = {"hidden": 8, "layers": 1, "past": 4, "future": 3, "steps": 2, "batch_size": 4,
        "device": "cpu", "val_every": 0, "log_every": 1, "checkpoint_every": 2}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tiny_videos, tiny_ae, tmp_path_factory):
    set_quiet(True)
    root = tmp_path_factory.mktemp("api")
    store = encode(tiny_videos, tiny_ae, root / "lat.zarr", EncodeConfig(device="cpu"))
    pred = train_predictor(LatentStore.open(store), TrainPredictorConfig(**PRED), root / "pred")
    return tiny_ae, pred, store


def test_encode_matches_the_store_and_decode_gives_frames(runs, tiny_videos):
    ae, pred, store = runs
    model = vidlat.load(ae, pred, device="cpu")
    assert (model.past, model.future, model.image_size, model.channels) == (4, 3, 32, 3)
    videos = open_videos(tiny_videos).read([0, 1])  # (2, 12, 32, 32, 3)
    latents = model.encode(videos)
    s = LatentStore.open(store)
    for name in ("content", "pose"):
        np.testing.assert_allclose(latents[name], s.read(name, np.array([0, 1])), atol=1e-5)
    frames = model.decode(latents, context=videos[:, 0])  # DRNET's skips read a content frame
    assert frames.shape == videos.shape and frames.dtype == np.uint8
    with pytest.raises(ConfigError, match="context"):
        model.decode(latents)  # a model with skips cannot decode latents alone
    one = model.encode(videos[0])  # one video (T, H, W, C) is a batch of one
    assert one["pose"].shape == (1, 12, *latents["pose"].shape[2:])


def test_predict_equals_generate_and_resizes_other_frame_sizes(runs, tiny_videos, tmp_path):
    ae, pred, _ = runs
    model = vidlat.load(ae, pred, device="cpu")
    videos = open_videos(tiny_videos).read([2, 3])[:, :4]
    got = model.predict(videos, future=5)
    assert got.shape == (2, 5, 32, 32, 3)
    np.save(tmp_path / "v.npy", videos)
    generate(ae, pred, tmp_path / "v.npy", GenerateConfig(device="cpu", future=5), tmp_path / "g")
    np.testing.assert_array_equal(got, open_videos(tmp_path / "g" / "predicted.zarr").read([0, 1]))
    np.testing.assert_array_equal(model.predict(tmp_path / "v.npy", future=5), got)  # a path
    big = videos.repeat(2, axis=2).repeat(2, axis=3)  # 64x64 frames: resized to 32
    assert model.predict(big).shape == (2, 3, 32, 32, 3)  # future as trained


def test_misuse_is_named(runs, other_ae, tiny_videos):
    ae, pred, _ = runs
    with pytest.raises(ConfigError, match="needs a predictor"):
        vidlat.load(ae, device="cpu").predict(open_videos(tiny_videos).read([0]))
    with pytest.raises(ConfigError, match="observes 4"):
        vidlat.load(ae, pred, device="cpu").predict(open_videos(tiny_videos).read([0])[:, :2])
    with pytest.raises(CheckpointError):
        vidlat.load(other_ae, pred, device="cpu")
