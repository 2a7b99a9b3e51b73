"""Checkpoints round-trip exactly, atomically, and are pruned; RNG state and AMP helpers."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

import vidlat.stages.common.checkpoint as checkpoint
from vidlat.errors import CheckpointError, ConfigError
from vidlat.stages.common.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    weights_hash,
)
from vidlat.stages.common.runtime import Amp, autocast, resolve_device, rng_state, set_rng_state


def trained(seed: int = 0, steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small net with BatchNorm buffers and an Adam optimiser holding moments."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.999))
    for _ in range(steps):
        opt.zero_grad()
        net(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    return net, opt


def one_step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    torch.manual_seed(123)
    opt.zero_grad()
    net(torch.randn(16, 4)).pow(2).mean().backward()
    opt.step()


def test_round_trip_is_exact(tmp_path):
    net, opt = trained()
    meta = {"kind": "test", "config": {"a": [1, 2]}}
    folder = save_checkpoint(tmp_path, 7, {"net": net}, {"opt": opt}, meta, train_state={"x": 1})
    assert folder.name == "step_000007"
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.safetensors",
        "optim.safetensors",
        "state.json",
    ]
    ckpt = load_checkpoint(tmp_path)
    assert (ckpt.step, ckpt.meta, ckpt.train_state) == (7, meta, {"x": 1})
    assert all(k.startswith("net.") for k in ckpt.model_state)
    net2, opt2 = trained(seed=1, steps=1)
    net2.load_state_dict(ckpt.module_state("net"))
    opt2.load_state_dict(ckpt.optim_state["opt"])
    for k, v in net.state_dict().items():
        assert torch.equal(net2.state_dict()[k], v), k
    assert opt2.param_groups[0]["betas"] == (0.5, 0.999)
    one_step(net, opt)  # the next step from either copy is bitwise the same
    one_step(net2, opt2)
    for k, v in net.state_dict().items():
        assert torch.equal(net2.state_dict()[k], v), k


def test_state_json_is_plain_json_and_weights_carry_no_pickle(tmp_path):
    net, opt = trained()
    folder = save_checkpoint(tmp_path, 1, {"net": net}, {"opt": opt}, {"kind": "test"})
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 1 and "param_groups" in state["optimizers"]["opt"]
    raw = (folder / "model.safetensors").read_bytes()  # safetensors: u64 header size, JSON header
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert set(header) - {"__metadata__"} == {f"net.{k}" for k in net.state_dict()}
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path, 2, {"net": net}, {}, {"bad": object()})
    assert load_checkpoint(tmp_path).step == 1  # the failed save left `latest` alone


def test_crash_mid_save_keeps_the_previous_latest(tmp_path, monkeypatch):
    net, opt = trained()
    save_checkpoint(tmp_path, 1, {"net": net}, {"opt": opt}, {"kind": "test"})
    good = weights_hash(tmp_path)
    one_step(net, opt)
    real_save = checkpoint.save_file
    calls = []

    def crash_after_weights(tensors, path, metadata=None):
        real_save(tensors, path, metadata=metadata)
        calls.append(path)
        if len(calls) == 1:  # model.safetensors is on disk; die before the optimiser state
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoint, "save_file", crash_after_weights)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"net": net}, {"opt": opt}, {"kind": "test"})
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step_000001"
    assert not (root / "step_000002").exists()
    assert weights_hash(tmp_path) == good
    assert load_checkpoint(tmp_path).step == 1
    monkeypatch.setattr(checkpoint, "save_file", real_save)
    save_checkpoint(tmp_path, 2, {"net": net}, {"opt": opt}, {"kind": "test"})
    assert load_checkpoint(tmp_path).step == 2
    assert not list(root.glob(".tmp-*"))  # the crashed save's leftovers are cleaned up


def test_keep_prunes_old_steps_and_latest_is_never_overwritten(tmp_path):
    net, opt = trained()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"net": net}, {"opt": opt}, {}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000003", "step_000004"]
    with pytest.raises(CheckpointError, match="never overwritten"):
        save_checkpoint(tmp_path, 4, {"net": net}, {"opt": opt}, {})


def test_weights_hash_depends_on_weights_only(tmp_path):
    net, opt = trained()
    save_checkpoint(tmp_path / "a", 1, {"net": net}, {"opt": opt}, {"meta": 1})
    save_checkpoint(tmp_path / "b", 5, {"net": net}, {}, {"meta": 2})
    assert weights_hash(tmp_path / "a") == weights_hash(tmp_path / "b")
    assert len(weights_hash(tmp_path / "a")) == 64
    one_step(net, opt)
    save_checkpoint(tmp_path / "b", 6, {"net": net}, {}, {})
    assert weights_hash(tmp_path / "a") != weights_hash(tmp_path / "b")


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError):
        weights_hash(tmp_path / "nowhere")


def test_rng_state_round_trip_through_json():
    gen = np.random.default_rng(5)
    torch.manual_seed(3)
    random.seed(4)
    state = json.loads(json.dumps(rng_state(gen)))
    first = (torch.rand(3), gen.random(3), random.random())
    torch.rand(10), gen.random(10), random.random()  # move every generator on
    set_rng_state(state, gen)
    again = (torch.rand(3), gen.random(3), random.random())
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_devices_and_precision_choices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            resolve_device("cuda")
    cpu = torch.device("cpu")
    with pytest.raises(ConfigError, match="bf16"):
        Amp(cpu, "fp16")
    with autocast(cpu, "bf16"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with autocast(cpu, "off"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert Amp(cpu, "off").scaler is None and Amp(cpu, "off").state_dict() == {}


def test_best_pointer_is_selected_and_spared_by_pruning(tmp_path):
    net, opt = trained()
    save_checkpoint(tmp_path, 1, {"net": net}, {"opt": opt}, {"s": 1})
    # no best marked yet: "best" reads the latest
    assert checkpoint.latest_dir(tmp_path, "best").name == "step_000001"
    checkpoint.mark_best(tmp_path, 1)
    for step in (2, 3, 4):
        save_checkpoint(tmp_path, step, {"net": net}, {"opt": opt}, {"s": step}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000001", "step_000003", "step_000004"]  # best kept beside the 2 newest
    assert load_checkpoint(tmp_path, select="best").meta == {"s": 1}
    assert load_checkpoint(tmp_path).meta == {"s": 4}
    assert weights_hash(tmp_path, "best") == weights_hash(tmp_path)  # same weights saved
    checkpoint.mark_best(tmp_path, 4)
    save_checkpoint(tmp_path, 5, {"net": net}, {"opt": opt}, {"s": 5}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000004", "step_000005"]  # the former best is no longer spared
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        checkpoint.mark_best(tmp_path, 3)
    with pytest.raises(CheckpointError, match="selection"):
        load_checkpoint(tmp_path, select="oldest")


def test_checkpoints_keep_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = save_checkpoint(tmp_path / "run", 1, {"model": nn.Linear(2, 1)}, {}, {})
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755
    assert {f.stat().st_mode & 0o777 for f in folder.iterdir()} == {0o644}
