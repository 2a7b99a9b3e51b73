"""Shared tiny fixtures: a synthetic dataset and a briefly trained DRNET, built once a session."""

from __future__ import annotations

import pytest
import torch

from vidlat.pipeline.sources.synth import SynthConfig, make_synth
from vidlat.progress import set_quiet
from vidlat.stages.training.train_ae import TrainAEConfig, train_ae
from vidlat.store.videos import open_videos

TINY_DRNET = {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8}


def tiny_ae_config(**over) -> TrainAEConfig:
    base = {"model_params": TINY_DRNET, "steps": 4, "batch_size": 4, "max_k": 3, "device": "cpu",
            "log_every": 2, "sample_every": 4, "val_every": 4, "checkpoint_every": 4}  # fmt: skip
    return TrainAEConfig(**{**base, **over})


@pytest.fixture(scope="session")
def tiny_videos(tmp_path_factory):
    """10 synthetic videos of 12 frames, 32x32 RGB, 4 videos per chunk (the last chunk short)."""
    set_quiet(True)
    cfg = SynthConfig(videos=10, frames=12, size=32, objects=1, seed=0, videos_per_chunk=4)
    return make_synth(cfg, tmp_path_factory.mktemp("data") / "videos.zarr")


@pytest.fixture(scope="session")
def tiny_ae(tiny_videos, tmp_path_factory):
    """A DRNET run folder after 4 steps: enough for encode/generate plumbing, not for quality."""
    set_quiet(True)
    return train_ae(open_videos(tiny_videos), tiny_ae_config(), tmp_path_factory.mktemp("ae"))


@pytest.fixture(scope="session")
def other_ae(tiny_videos, tmp_path_factory):
    """A second DRNET (another seed): a different encoder hash."""
    set_quiet(True)
    cfg = tiny_ae_config(seed=1, steps=2, checkpoint_every=2)
    return train_ae(open_videos(tiny_videos), cfg, tmp_path_factory.mktemp("ae2"))


@pytest.fixture
def one_thread():
    """Tiny models run fastest, and steadiest, on one thread; restores the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def plain_ae(tiny_videos, tmp_path_factory):
    """A DRNET without U-Net skips (decodes from latents alone, as AVLAE's sequences need)."""
    set_quiet(True)
    cfg = tiny_ae_config(model_params={**TINY_DRNET, "skips": False})
    return train_ae(open_videos(tiny_videos), cfg, tmp_path_factory.mktemp("ae_plain"))
