"""Stage-1 training: pair sampling, run folder, exact resume, refusals, and that DRNET learns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import exact_rows
from PIL import Image

from vidlat.config import resolve_config
from vidlat.errors import CheckpointError, ConfigError, DataError
from vidlat.pipeline.sources.synth import SynthConfig, make_synth
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import load_checkpoint, weights_hash
from vidlat.stages.common.images import save_gif, save_grid
from vidlat.stages.common.runtime import frames_to_device
from vidlat.stages.load import load_run
from vidlat.stages.stage1.drnet import DrnetConfig
from vidlat.stages.training.samplers import FramePairSampler
from vidlat.stages.training.train_ae import TrainAEConfig, fixed_frames, train_ae
from vidlat.store.videos import create_videos, open_videos

TINY = {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8}


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)
    yield
    set_quiet(False)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """12 synthetic videos of 8 frames, 32x32 RGB, 4 videos per chunk."""
    cfg = SynthConfig(videos=12, frames=8, size=32, objects=1, seed=0, videos_per_chunk=4)
    return open_videos(make_synth(cfg, tmp_path_factory.mktemp("d") / "v.zarr"))


def tiny_cfg(**over) -> TrainAEConfig:
    base = {"model_params": TINY, "steps": 6, "batch_size": 4, "max_k": 3, "device": "cpu",
            "log_every": 3, "sample_every": 3, "val_every": 3, "checkpoint_every": 3}  # fmt: skip
    return TrainAEConfig(**{**base, **over})


def coded_videos(path, n=10, frames=6, per_chunk=3):
    """Videos whose every pixel is video * 20 + frame, so a sampled frame says where it is from."""
    writer = create_videos(path, n, frames, 4, 4, 1, videos_per_chunk=per_chunk)
    code = np.arange(n)[:, None] * 20 + np.arange(frames)[None]  # (V, T)
    writer.write(
        0, np.broadcast_to(code[..., None, None, None], (n, frames, 4, 4, 1)).astype(np.uint8)
    )
    split = {"train": [0, 1, 2, 4, 5, 7, 8, 9], "val": [3], "test": [6]}
    return open_videos(writer.finish("test", {}, split))


@pytest.mark.parametrize("budget", [2**30, 60])  # whole split in memory / one chunk at a time
def test_sampler_draws_pairs_within_k_of_train_videos(tmp_path, budget):
    videos = coded_videos(tmp_path / "c.zarr")
    cfg = TrainAEConfig(batch_size=3, max_k=2, memory_budget=budget, refresh_every=2)
    sampler = FramePairSampler(videos, cfg)
    assert sampler.in_memory == (budget > 60)
    offsets = set()
    for _ in range(40):
        b = sampler.sample()
        vid_t, t = np.divmod(b["x_t"][:, 0, 0, 0].astype(int), 20)
        vid_k, tk = np.divmod(b["x_tk"][:, 0, 0, 0].astype(int), 20)
        np.testing.assert_array_equal(vid_t, b["video"])
        np.testing.assert_array_equal(vid_k, b["video"])
        assert set(b["video"]) <= set(videos.split["train"])
        # distinct videos where the cache allows: pairs across rows are "different"
        assert len(set(b["video"])) == min(3, len(sampler.cache_ids))
        offsets |= set(tk - t)
        if not sampler.in_memory:
            assert 2 <= len(sampler.cache_ids) <= 6  # two chunks of whole videos
    assert offsets == {1, 2}  # k >= 1 by default: x^t+k = x^t teaches skips to copy
    cfg0 = TrainAEConfig(batch_size=3, max_k=2, min_k=0, memory_budget=budget, refresh_every=2)
    sampler0, offsets = FramePairSampler(videos, cfg0), set()
    for _ in range(40):
        b = sampler0.sample()
        offsets |= set(b["x_tk"][:, 0, 0, 0].astype(int) - b["x_t"][:, 0, 0, 0].astype(int))
    assert offsets == {0, 1, 2}


def test_sampler_neighbour_frames_leave_the_pairs_as_they_were(tmp_path):
    """With neighbour (a model with a temporal smoothness term) x_t1 is the frame after x^t of the
    same video, or the one before at the last frame; x_t, x_tk and video are drawn as without."""
    videos = coded_videos(tmp_path / "c.zarr")
    for min_k in (1, 0):
        cfg = TrainAEConfig(batch_size=3, max_k=2, min_k=min_k)
        plain, near = FramePairSampler(videos, cfg), FramePairSampler(videos, cfg, neighbour=True)
        steps = set()
        for _ in range(60):
            a, b = plain.sample(), near.sample()
            assert "x_t1" not in a and set(b) == {"x_t", "x_tk", "video", "x_t1"}
            assert all(np.array_equal(a[k], b[k]) for k in a)
            vid, t = np.divmod(b["x_t"][:, 0, 0, 0].astype(int), 20)
            vid1, t1 = np.divmod(b["x_t1"][:, 0, 0, 0].astype(int), 20)
            np.testing.assert_array_equal(vid1, vid)
            np.testing.assert_array_equal(t1, np.where(t + 1 < 6, t + 1, t - 1))
            steps |= set(t1 - t)
        assert steps == ({1} if min_k else {1, -1})


@pytest.mark.parametrize("budget", [2**30, 1])
def test_resume_gives_the_same_run(videos, tmp_path, budget):
    cfg = tiny_cfg(memory_budget=budget, refresh_every=2)
    train_ae(videos, cfg, tmp_path / "a")
    train_ae(videos, tiny_cfg(memory_budget=budget, refresh_every=2, steps=3), tmp_path / "b")
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:  # a line the "crashed" run wrote late
        f.write(json.dumps({"step": 5, "loss": 0.0}) + "\n")
    train_ae(videos, cfg, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a.step == b.step == 6
    for k, v in a.model_state.items():
        assert torch.equal(b.model_state[k], v), k
    assert weights_hash(tmp_path / "a") == weights_hash(tmp_path / "b")
    for name in ("model", "critic"):
        sa, sb = a.optim_state[name]["state"], b.optim_state[name]["state"]
        assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)
    metrics = [exact_rows(tmp_path / r / "metrics.jsonl") for r in "ab"]
    assert metrics[0] == metrics[1]
    assert [row["step"] for row in metrics[0]] == [3, 3, 6, 6]  # + validation rows


def test_run_folder_and_checkpoint_meta(videos, tmp_path):
    out = train_ae(videos, tiny_cfg(steps=4), tmp_path / "run")
    assert (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000003.png"]
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [3, 3, 4, 4]  # losses, then validation
    timing = {"lr_model", "lr_critic", "samples_per_s", "elapsed_s", "time"}
    assert set(lines[0]) == {"step", "loss", "rec", "sim", "adv", "critic"} | timing
    assert lines[0]["lr_model"] == lines[0]["lr_critic"] == 0.002  # DRNET's default lr
    assert lines[0]["samples_per_s"] > 0
    assert set(lines[1]) == {"step", "val_rec", "time"} and 0 < lines[1]["val_rec"] < 1
    assert lines[2]["time"] >= lines[0]["time"] and lines[2]["elapsed_s"] > lines[0]["elapsed_s"]
    assert all(np.isfinite(v) for ln in lines for v in ln.values())
    ckpt = load_checkpoint(out)
    assert ckpt.step == 4  # the last step is saved even off the checkpoint_every grid
    meta = ckpt.meta
    assert (meta["kind"], meta["model"], meta["image_size"], meta["channels"]) == (
        "stage1", "drnet", 32, 3)  # fmt: skip
    assert meta["dataset_fingerprint"] == videos.fingerprint
    assert meta["config"]["pose_dim"] == 3 and meta["config"]["width"] == 4
    model, meta2 = load_run(out, "stage1")
    assert not model.training and meta2 == meta
    z = model.encode(frames_to_device(videos.read([0])[0, :2], torch.device("cpu")))
    assert z["pose"].shape == (2, 3)


def test_config_yaml_records_the_models_own_defaults(videos, tmp_path):
    out = train_ae(videos, tiny_cfg(steps=1, sample_every=0, val_every=0), tmp_path / "run")
    written = yaml.safe_load((out / "config.yaml").read_text())
    # every field of the model's config, not only the four TINY gives
    assert written["model_params"] == DrnetConfig(**TINY).model_dump(mode="json")
    assert set(written["model_params"]) == set(DrnetConfig.model_fields) > set(TINY)
    assert written["model_params"]["lr"] == 0.002 and written["model_params"]["width"] == 4
    assert written["model_params"] == load_checkpoint(out).meta["config"]  # what the model ran
    assert written["lr"] is None  # null: model_params.lr, so editing that one takes effect
    # the file is the --config of the same run
    again = resolve_config(TrainAEConfig, out / "config.yaml")
    assert again.model_dump(mode="json") == written


def test_sample_grid_frames_are_upscaled_to_128_px_nearest_neighbour(videos, tmp_path):
    cfg = tiny_cfg(steps=1, sample_every=1, val_every=0)
    out = train_ae(videos, cfg, tmp_path / "run")
    with Image.open(out / "samples" / "step_000001.png") as im:
        grid = np.asarray(im.convert("RGB"))
    # rows x^t, x^t+k, reconstruction, swap: 32 px frames x4 = 128 px, 2 px apart and around
    assert grid.shape[0] == 4 * (128 + 2) + 2
    x_t, x_tk = fixed_frames(videos, cfg.max_k)
    n = len(x_t)
    assert grid.shape[1] > n * (128 + 2) + 2  # the row labels take a column on the left
    left = grid.shape[1] - n * (128 + 2)  # the first tile's left edge
    for row, frames in ((0, x_t), (1, x_tk)):
        top = 2 + row * (128 + 2)
        for i in (0, n - 1):
            tile = grid[top : top + 128, left + i * 130 : left + i * 130 + 128]
            np.testing.assert_array_equal(tile, frames[i].repeat(4, 0).repeat(4, 1))


def test_refusals(videos, tmp_path):
    out = tmp_path / "run"
    train_ae(videos, tiny_cfg(steps=3), out)
    with pytest.raises(CheckpointError, match="pass --resume to continue or choose another --out"):
        train_ae(videos, tiny_cfg(steps=3), out)
    with pytest.raises(CheckpointError, match="model: drnet -> mipae"):
        train_ae(videos, tiny_cfg(model="mipae", steps=6), out, resume=True)
    with pytest.raises(CheckpointError, match="pose_dim"):
        train_ae(videos, tiny_cfg(model_params={**TINY, "pose_dim": 4}, steps=6), out, resume=True)
    with pytest.raises(CheckpointError, match="drop --resume"):
        train_ae(videos, tiny_cfg(), tmp_path / "empty", resume=True)
    assert load_checkpoint(out).step == 3  # nothing above touched the good checkpoint
    # loss weights may change on resume; they steer training, not what the weights mean
    train_ae(videos, tiny_cfg(model_params={**TINY, "beta": 0.5}, steps=4), out, resume=True)
    assert load_checkpoint(out).step == 4


def test_config_and_data_errors(tmp_path):
    with pytest.raises(ConfigError, match="model"):
        resolve_config(TrainAEConfig, model="nope")
    writer = create_videos(tmp_path / "wide.zarr", 3, 4, 16, 32, 3)
    writer.write(0, np.zeros((3, 4, 16, 32, 3), np.uint8))
    wide = open_videos(writer.finish("test", {}))
    with pytest.raises(DataError, match="square"):
        train_ae(wide, tiny_cfg(), tmp_path / "run")


def test_mipae_trains(videos, tmp_path):
    out = train_ae(videos, tiny_cfg(model="mipae", steps=3, sample_every=0), tmp_path / "m")
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    line = [r for r in rows if "loss" in r][-1]
    assert {"step", "loss", "rec", "sim", "mi", "critic", "lr_model"} <= set(line)
    model, meta = load_run(out, "stage1")
    assert meta["model"] == "mipae"
    c = model.config  # the logged loss is MIPAE's eq. 5 of the logged terms
    assert line["loss"] == pytest.approx(line["rec"] + c.alpha * line["sim"] + c.beta * line["mi"])


def test_drnet_learns_to_reconstruct_better_than_the_mean_frame(tmp_path):
    cfg = SynthConfig(videos=24, frames=10, size=32, objects=1, seed=1)
    videos = open_videos(make_synth(cfg, tmp_path / "v.zarr"))
    params = {"width": 8, "content_dim": 16, "pose_dim": 4}
    train_cfg = tiny_cfg(model_params=params, steps=250, batch_size=16, max_k=4,
                         log_every=50, sample_every=0, checkpoint_every=1000)  # fmt: skip
    out = train_ae(videos, train_cfg, tmp_path / "run")
    model, _ = load_run(out, "stage1")
    train = videos.read(videos.split["train"])
    frames = train.reshape(-1, *train.shape[2:])  # (N, H, W, C)
    x = frames_to_device(frames, torch.device("cpu"))
    with torch.no_grad():
        rec = model.decode(model.encode(x), context=x)  # skips from the frame itself
    mse = (rec - x).pow(2).mean().item()
    mean_frame = x.mean(0, keepdim=True)
    baseline = (mean_frame - x).pow(2).mean().item()
    assert mse < 0.5 * baseline, (mse, baseline)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["rec"] for r in rows if "rec" in r]
    assert losses[-1] < 0.5 * losses[0]
    assert rows[-1]["val_rec"] < baseline  # held-out videos too beat the mean frame


def test_save_grid_and_gif(tmp_path):
    rows = [np.zeros((3, 8, 8, 3), np.uint8), torch.rand(2, 8, 8, 1), np.ones((3, 8, 8))]
    path = save_grid(tmp_path / "g.png", rows, labels=["a", "bb", "ccc"])
    with Image.open(path) as im:
        assert im.mode == "RGB" and im.height == 3 * (8 + 2) + 2
        width = im.width
    path = save_grid(tmp_path / "h.png", rows)
    with Image.open(path) as im:
        assert im.width == 3 * (8 + 2) + 2 < width  # labels take a column on the left
    with pytest.raises(DataError):
        save_grid(tmp_path / "bad.png", [np.zeros((2, 3, 8, 8))])  # channels first
    gif = save_gif(
        tmp_path / "a.gif",
        np.random.default_rng(0).integers(0, 255, (5, 8, 8, 3), dtype=np.uint8),
        fps=10,
    )
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.size == (8, 8)
        assert im.info["duration"] == 100
