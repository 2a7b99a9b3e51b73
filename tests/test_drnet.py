"""DRNET and MIPAE: shapes, the loss terms of their equations, a training step, eval-mode encode."""

from __future__ import annotations

import math

import pytest
import torch

from vidlat.errors import ConfigError
from vidlat.stages.common.nets import conv_depth
from vidlat.stages.common.runtime import Amp
from vidlat.stages.stage1 import STAGE1_MODELS, build_stage1
from vidlat.stages.stage1.drnet import (
    Drnet,
    Mipae,
    js_mutual_information,
    pose_adversarial_loss,
    reconstruction_loss,
    scene_discriminator_loss,
    similarity_loss,
)

TINY = {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8}


def tiny(name: str = "drnet", size: int = 32, channels: int = 3, **params):
    torch.manual_seed(0)
    return build_stage1(name, {**TINY, **params}, size, channels)


def batch(b: int = 6, size: int = 32, channels: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "x_t": torch.rand(b, channels, size, size, generator=g),
        "x_tk": torch.rand(b, channels, size, size, generator=g),
        "video": torch.arange(b),
    }


@pytest.mark.parametrize("name", ["drnet", "mipae"])
@pytest.mark.parametrize(("size", "channels"), [(32, 3), (64, 1)])
def test_encode_decode_shapes(name, size, channels):
    model = tiny(name, size, channels).eval()
    z = model.encode(torch.rand(5, channels, size, size))
    assert {k: tuple(v.shape) for k, v in z.items()} == {"content": (5, 8), "pose": (5, 3)}
    assert {(f.name, f.role, f.shape) for f in model.latent_fields()} == {
        ("content", "content", (8,)),
        ("pose", "pose", (3,)),
    }
    x = model.decode(z)
    assert x.shape == (5, channels, size, size)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0  # sigmoid output


def test_depth_follows_image_size_and_odd_sizes_are_refused():
    assert [conv_depth(s) for s in (16, 32, 64, 128)] == [2, 3, 4, 5]
    model = tiny(size=64)
    assert len(model.content_encoder.body) == 4  # DCGAN's 4 stride-2 blocks at 64x64
    for bad in (8, 48, 100):
        with pytest.raises(ConfigError, match="power of two"):
            tiny(size=bad)


def test_latents_have_unit_norm_unless_disabled():
    x = torch.rand(4, 3, 32, 32)
    z = tiny().eval().encode(x)
    for v in z.values():
        torch.testing.assert_close(v.norm(dim=1), torch.ones(4))
    raw = tiny(normalize=False).eval().encode(x)
    assert not torch.allclose(raw["pose"].norm(dim=1), torch.ones(4))


def test_registry_and_config_errors():
    assert set(STAGE1_MODELS) >= {"drnet", "mipae"}
    with pytest.raises(ConfigError, match="drnet"):
        build_stage1("nope", {}, 32, 3)
    with pytest.raises(ConfigError, match="pose_dims"):
        build_stage1("drnet", {"pose_dims": 4}, 32, 3)
    drnet, mipae = build_stage1("drnet", {}, 32, 3), build_stage1("mipae", {}, 32, 3)
    assert isinstance(drnet, Drnet) and isinstance(mipae, Mipae)
    assert (drnet.config.pose_dim, drnet.config.content_dim, drnet.config.beta) == (10, 128, 0.1)
    assert drnet.config.lr == 0.002 and drnet.config.betas == (0.5, 0.999)
    assert drnet.critic[0].out_features == 100 and mipae.critic[0].out_features == 512
    assert len([m for m in mipae.critic if isinstance(m, torch.nn.Linear)]) == 3


def test_reconstruction_and_similarity_losses():
    x = torch.rand(2, 3, 8, 8)
    assert reconstruction_loss(x, x).item() == 0.0
    assert reconstruction_loss(x, x + 0.1).item() == pytest.approx(0.01, rel=1e-4)
    c = torch.randn(4, 8)
    assert similarity_loss(c, c.clone()).item() == 0.0
    assert similarity_loss(c, c + 1.0).item() == pytest.approx(1.0)


def test_adversarial_losses_follow_eq3_and_eq4():
    zeros = torch.zeros(5)
    # eq. 4 is cross-entropy toward 1/2: minimal (log 2) when C outputs exactly 1/2
    assert pose_adversarial_loss(zeros).item() == pytest.approx(math.log(2))
    assert pose_adversarial_loss(torch.full((5,), 3.0)).item() > math.log(2) + 0.5
    assert pose_adversarial_loss(torch.full((5,), -3.0)).item() > math.log(2) + 0.5
    # eq. 3: a discriminator right about same/different pairs has a small loss, a wrong one large
    other = torch.zeros(5)
    right = scene_discriminator_loss(torch.full((5,), 6.0), torch.full((5,), -6.0), other)
    wrong = scene_discriminator_loss(torch.full((5,), -6.0), torch.full((5,), 6.0), other)
    assert right.item() < 0.01 < 10.0 < wrong.item()
    # a rolled pair that shares a video is a positive: predicting "same" for it costs nothing
    shared = scene_discriminator_loss(torch.full((5,), 6.0), torch.full((5,), 6.0), torch.ones(5))
    assert shared.item() < 0.01


def test_js_mutual_information_bound():
    mask = torch.ones(6, dtype=torch.bool)
    assert js_mutual_information(torch.zeros(6), torch.zeros(6), mask).item() == pytest.approx(0)
    dependent = js_mutual_information(torch.full((6,), 2.0), torch.full((6,), -2.0), mask)
    assert dependent.item() == pytest.approx(1 + 2 - math.exp(-2))
    # masked-out marginal pairs (same video) do not count
    masked = torch.tensor([True, False] * 3)
    marg = torch.tensor([-2.0, 50.0] * 3)
    out = js_mutual_information(torch.full((6,), 2.0), marg, masked)
    assert out.item() == pytest.approx(1 + 2 - math.exp(-2))


def test_optimizers_split_autoencoder_and_critic():
    model = tiny()
    opts = model.make_optimizers()
    ids = {n: {id(p) for g in o.param_groups for p in g["params"]} for n, o in opts.items()}
    critic = {id(p) for p in model.critic.parameters()}
    assert ids["critic"] == critic
    assert not ids["model"] & critic
    assert ids["model"] | ids["critic"] == {id(p) for p in model.parameters()}
    assert opts["model"].param_groups[0]["lr"] == 0.002
    assert model.make_optimizers(lr=0.01)["critic"].param_groups[0]["lr"] == 0.01


@pytest.mark.parametrize(("name", "penalty"), [("drnet", "adv"), ("mipae", "mi")])
def test_train_step_updates_both_parts_and_returns_finite_losses(name, penalty):
    model = tiny(name).train()
    opts = model.make_optimizers()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.train_step(batch(), opts, Amp(torch.device("cpu"), "off"))
    assert set(losses) == {"loss", "rec", "sim", penalty, "critic"}
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in losses.values())
    assert all(math.isfinite(v.item()) for v in losses.values())
    changed = {
        k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == {"content_encoder", "pose_encoder", "decoder", "critic"}
    assert all(p.requires_grad for p in model.critic.parameters())  # held only during the step


def test_encode_is_deterministic_and_independent_of_the_batch_in_eval_mode():
    model = tiny().train()
    opts = model.make_optimizers()
    for _ in range(3):  # move the BatchNorm running statistics away from their init
        model.train_step(batch(), opts, Amp(torch.device("cpu"), "off"))
    frame = torch.rand(1, 3, 32, 32)
    others = torch.rand(7, 3, 32, 32) * 0.3
    model.eval()
    with torch.no_grad():
        alone = model.encode(frame)
        inside = model.encode(torch.cat([others[:3], frame, others[3:]]))
        again = model.encode(frame)
    for k in alone:
        torch.testing.assert_close(inside[k][3:4], alone[k], atol=1e-6, rtol=0)
        assert torch.equal(again[k], alone[k])
    model.train()  # in train mode BatchNorm mixes the batch: the same check fails
    with torch.no_grad():
        mixed = model.encode(torch.cat([others[:3], frame, others[3:]]))
    assert not torch.allclose(mixed["content"][3:4], alone["content"], atol=1e-4)


def test_train_step_under_cpu_bf16_autocast_keeps_float32_weights_and_losses():
    model = tiny("mipae").train()
    opts = model.make_optimizers()
    losses = model.train_step(batch(), opts, Amp(torch.device("cpu"), "bf16"))
    assert all(v.dtype == torch.float32 and math.isfinite(v.item()) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
