"""vidlat generate: frames, pictures and metrics from a stage-1 run and a predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from vidlat.errors import CheckpointError, ConfigError, DataError
from vidlat.pipeline.generate import GenerateConfig, generate, parse_indices
from vidlat.pipeline.metrics import per_step_metrics
from vidlat.progress import set_quiet
from vidlat.stages.common.images import CAPTION_PX as CAPTION
from vidlat.stages.common.images import has_pyav
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

PANEL = 4 * 32 + 2 * 2  # a 32 px frame in a GIF: upscaled to 128, then a 2 px border outside
PRED = {"hidden": 8, "layers": 1, "past": 4, "future": 4, "steps": 3, "batch_size": 4,
        "device": "cpu", "val_every": 0, "log_every": 1, "checkpoint_every": 3}  # fmt: skip


@pytest.fixture(scope="module")
def predictor(tiny_videos, tiny_ae, tmp_path_factory):
    set_quiet(True)
    root = tmp_path_factory.mktemp("g")
    store = encode(tiny_videos, tiny_ae, root / "lat.zarr", EncodeConfig(device="cpu"))
    return train_predictor(LatentStore.open(store), TrainPredictorConfig(**PRED), root / "pred")


def test_generate_writes_frames_pictures_and_metrics(tiny_videos, tiny_ae, predictor, tmp_path):
    cfg = GenerateConfig(videos="1:4", future=10, device="cpu", npy=True)  # longer than trained
    metrics = generate(tiny_ae, predictor, tiny_videos, cfg, tmp_path)
    predicted = open_videos(tmp_path / "predicted.zarr")
    assert predicted.shape == (3, 10, 32, 32, 3)
    np.testing.assert_array_equal(np.load(tmp_path / "predicted.npy"), predicted.read(slice(None)))
    assert sorted(p.name for p in (tmp_path / "gifs").glob("*.gif")) == [
        "000.gif",
        "001.gif",
        "002.gif",
    ]
    gif = Image.open(tmp_path / "gifs" / "000.gif")
    # past | truth | prediction, each 32 px upscaled x4 with a 2 px border outside, a caption above
    assert gif.size == (3 * PANEL, CAPTION + PANEL)
    gif.seek(0)
    first = np.asarray(gif.convert("RGB"))
    # the observed frame's pixels are all there, inside the green border, nearest-neighbour x4
    frame = open_videos(tiny_videos).read([1])[0, 0]
    inner = first[CAPTION + 2 : CAPTION + 2 + 128 : 4, 2 : 2 + 128 : 4]
    assert np.abs(inner.astype(int) - frame).mean() < 8  # GIF palette quantisation only
    border = first[CAPTION, 2:130].astype(int)  # the green line above the frame, not over it
    assert np.abs(border - (40, 170, 60)).max() < 16
    # Pillow merges identical consecutive frames, so count time: 4 + 10 frames at 8 fps
    total = 0
    for i in range(gif.n_frames):
        gif.seek(i)
        total += gif.info["duration"]
    assert 14 * 120 <= total <= 14 * 130  # GIF stores centiseconds: 125 ms rounds either way
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width >= 14 * 32 and grid.height >= 6 * 32  # truth and prediction rows per video
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["videos"] == [1, 2, 3]
    assert saved["labels"] == ["video 1", "video 2", "video 3"]
    assert saved["source"] == str(tiny_videos)
    recorded = predicted.attrs["source_config"]["source"]
    assert recorded["videos"] == [1, 2, 3] and recorded["path"] == str(tiny_videos)
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (written["past"], written["future"]) == (4, 10)  # past as the predictor was trained
    assert GenerateConfig(**written).past == 4  # and the file is a config generate reads
    if has_pyav():
        assert sorted(p.name for p in (tmp_path / "gifs").glob("*.mp4")) == [
            "000.mp4",
            "001.mp4",
            "002.mp4",
        ]
    assert saved["steps_with_truth"] == 8  # 12 frames - 4 observed
    assert len(saved["mse"]) == len(saved["psnr"]) == len(saved["ssim"]) == 8
    # the saved figures are those of the written frames against the dataset's true futures
    truth = open_videos(tiny_videos).read([1, 2, 3])[:, 4:12]
    again = per_step_metrics(predicted.read(slice(None))[:, :8], truth)
    for key in ("mse", "psnr", "ssim"):
        np.testing.assert_allclose(saved[key], again[key], rtol=1e-6)
    frames = predicted.read(slice(None))[:, :8] / 255.0
    err = ((frames - truth / 255.0) ** 2).mean(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(saved["mse"], err, rtol=1e-5)  # MSE by hand, per step
    assert metrics["mean"]["mse"] == saved["mean"]["mse"]


def test_new_videos_from_npy_have_no_truth(tiny_videos, tiny_ae, predictor, tmp_path):
    new = tmp_path / "new.npy"
    np.save(new, open_videos(tiny_videos).read([0, 5])[:, :4])
    metrics = generate(tiny_ae, predictor, new, GenerateConfig(device="cpu"), tmp_path / "o")
    assert "mse" not in metrics
    assert open_videos(tmp_path / "o" / "predicted.zarr").shape == (2, 4, 32, 32, 3)
    assert Image.open(tmp_path / "o" / "gifs" / "001.gif").size == (2 * PANEL, CAPTION + PANEL)


def test_user_frames_of_another_size_are_resized_to_the_model(tiny_videos, tiny_ae, predictor,
                                                               tmp_path):  # fmt: skip
    frames = open_videos(tiny_videos).read([0, 5])[:, :4]  # (2, 4, 32, 32, 3)
    big = frames.repeat(2, axis=2).repeat(2, axis=3)  # 64x64: the model takes 32x32
    np.save(tmp_path / "big.npy", big)
    metrics = generate(tiny_ae, predictor, tmp_path / "big.npy", GenerateConfig(device="cpu"),
                       tmp_path / "o")  # fmt: skip
    assert metrics["videos"] == [0, 1]
    assert open_videos(tmp_path / "o" / "predicted.zarr").shape == (2, 4, 32, 32, 3)


def test_user_frames_with_other_channels_are_refused_naming_both(tiny_ae, predictor, tmp_path):
    np.save(tmp_path / "grey.npy", np.zeros((1, 4, 48, 48, 1), np.uint8))
    with pytest.raises(DataError, match=r"48×48×1 frames but the stage-1 model takes 32×32×3"):
        generate(tiny_ae, predictor, tmp_path / "grey.npy", GenerateConfig(device="cpu"), tmp_path)


def test_generate_reads_a_gif(tiny_videos, tiny_ae, predictor, tmp_path):
    frames = open_videos(tiny_videos).read([3])[0]  # (12, 32, 32, 3)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp_path / "clip.gif", save_all=True, append_images=images[1:], duration=100)
    cfg = GenerateConfig(device="cpu", frames=6, stride=1)  # two clips of 6 frames
    metrics = generate(tiny_ae, predictor, tmp_path / "clip.gif", cfg, tmp_path / "o")
    assert metrics["labels"] == ["clip.gif@0", "clip.gif@6"]
    assert metrics["steps_with_truth"] == 2  # 6 frames - 4 observed


def test_predictor_of_another_encoder_is_refused(tiny_videos, other_ae, predictor, tmp_path):
    with pytest.raises(CheckpointError, match="trained on latents of encoder [0-9a-f]{64}"):
        generate(other_ae, predictor, tiny_videos, GenerateConfig(device="cpu"), tmp_path)


def test_video_selection():
    assert parse_indices("2:5", 10) == [2, 3, 4]
    assert parse_indices("7,1", 10) == [7, 1]
    assert parse_indices(":", 3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="has 10 videos"):
        parse_indices("8,12", 10)
    with pytest.raises(ConfigError, match="not 'A:B'"):
        parse_indices("a-b", 10)


def test_frames_of_other_channels_are_refused_with_both_sizes(tiny_ae, predictor, tmp_path):
    new = tmp_path / "grey.npy"  # another size is resized (test_video_files); channels are not
    np.save(new, np.zeros((2, 4, 16, 16, 1), np.uint8))
    with pytest.raises(DataError, match="16×16×1 frames but the stage-1 model takes 32×32×3"):
        generate(tiny_ae, predictor, new, GenerateConfig(device="cpu"), tmp_path / "o")


def test_sizes_are_bounded_before_allocation(tiny_videos, tiny_ae, predictor, tmp_path):
    with pytest.raises(ValidationError, match="less than or equal to 4096"):
        GenerateConfig(future=10**9)
    cfg = GenerateConfig(videos="0:8", future=4096, samples=10**4, device="cpu")
    with pytest.raises(ConfigError, match="GiB; choose fewer"):
        generate(tiny_ae, predictor, tiny_videos, cfg, tmp_path / "o")
    with pytest.raises(ConfigError, match="negative"):
        parse_indices("-2:", 10)
