"""CUDA paths (skipped without a GPU; never a CI dependency): bf16 training, pinned copies, and
encode on CUDA agreeing with the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidlat.stages.common.runtime import frames_to_device
from vidlat.stages.inference.encode import encode_frames
from vidlat.stages.load import load_run
from vidlat.stages.training.train_ae import train_ae
from vidlat.store.videos import open_videos

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def test_bf16_training_on_cuda_gives_finite_weights(tiny_videos, tmp_path):
    from conftest import tiny_ae_config

    cfg = tiny_ae_config(device="cuda", amp="bf16", steps=3, sample_every=0, checkpoint_every=3)
    out = train_ae(open_videos(tiny_videos), cfg, tmp_path / "ae")
    model, _ = load_run(out, "stage1", "cuda")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # bf16 only in autocast


def test_pinned_copy_and_cuda_encode_match_the_cpu(tiny_videos, tiny_ae):
    frames = open_videos(tiny_videos).read([0, 1])  # (2, T, H, W, C) uint8
    x = frames_to_device(frames[:, 0], torch.device("cuda"))
    np.testing.assert_allclose(x.cpu().numpy(), frames_to_device(frames[:, 0], torch.device("cpu")))
    cpu_model, _ = load_run(tiny_ae, "stage1", "cpu")
    gpu_model, _ = load_run(tiny_ae, "stage1", "cuda")
    on_cpu = encode_frames(cpu_model, frames, 8, torch.device("cpu"))
    on_gpu = encode_frames(gpu_model, frames, 8, torch.device("cuda"))
    for name in on_cpu:
        np.testing.assert_allclose(on_gpu[name], on_cpu[name], atol=1e-4)
