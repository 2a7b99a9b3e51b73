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
    temporal_smoothness_loss,
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
    context = torch.rand(5, channels, size, size) if model.needs_context else None
    x = model.decode(z, context=context)
    assert x.shape == (5, channels, size, size)
    assert 0.0 <= x.min().item() and x.max().item() <= 1.0  # sigmoid output


def test_skips_decode_from_the_context_frames_only():
    model = tiny().eval()  # DRNET: skips by default
    assert model.needs_context
    frames = torch.rand(4, 3, 32, 32)
    z = model.encode(frames)
    context = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        out = model.decode(z, context=context)
        # the frames the latents came from play no part beyond the latents themselves
        again = model.decode({k: v.clone() for k, v in z.items()}, context=context.clone())
        other = context.clone()
        other[2] = torch.rand(3, 32, 32)  # change one row's context frame
        moved = model.decode(z, context=other)
        # two context frames per row: their skips are averaged
        pair = model.decode(z, context=torch.stack([context, context], 1))
    assert torch.equal(out, again)
    assert not torch.allclose(moved[2], out[2])  # that row's output changes ...
    torch.testing.assert_close(moved[[0, 1, 3]], out[[0, 1, 3]])  # ... and no other row's
    torch.testing.assert_close(pair, out, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="context"):
        model.decode(z)


def test_models_without_skips_ignore_the_context():
    model = tiny(skips=False).eval()
    assert not model.needs_context
    z = model.encode(torch.rand(3, 3, 32, 32))
    with torch.no_grad():
        given = model.decode(z, context=torch.rand(3, 3, 32, 32))
        torch.testing.assert_close(model.decode(z), given)


def test_depth_follows_image_size_and_odd_sizes_are_refused():
    assert [conv_depth(s) for s in (16, 32, 64, 128)] == [2, 3, 4, 5]
    model = tiny(size=64)
    assert len(model.content_encoder.body) == 4  # DCGAN's 4 stride-2 blocks at 64x64
    for bad in (8, 48, 100):
        with pytest.raises(ConfigError, match="power of two"):
            tiny(size=bad)


def test_content_has_unit_norm_pose_none_by_default_and_norms_are_configurable():
    x = torch.rand(4, 3, 32, 32)
    z = tiny().eval().encode(x)
    torch.testing.assert_close(z["content"].norm(dim=1), torch.ones(4))
    assert not torch.allclose(z["pose"].norm(dim=1), torch.ones(4))
    unit = tiny(pose_norm="unit").eval().encode(x)
    torch.testing.assert_close(unit["pose"].norm(dim=1), torch.ones(4))
    tanh = tiny(content_norm="tanh").eval().encode(x)
    assert tanh["content"].abs().max() < 1
    # the former `normalize` flag still reads: both codes unit norm, or neither
    old = tiny(normalize=True)
    assert (old.config.content_norm, old.config.pose_norm) == ("unit", "unit")
    raw = tiny(normalize=False).eval().encode(x)
    assert not torch.allclose(raw["content"].norm(dim=1), torch.ones(4))


def test_registry_and_config_errors():
    assert set(STAGE1_MODELS) >= {"drnet", "mipae"}
    with pytest.raises(ConfigError, match="drnet"):
        build_stage1("nope", {}, 32, 3)
    with pytest.raises(ConfigError, match="pose_dims"):
        build_stage1("drnet", {"pose_dims": 4}, 32, 3)
    drnet, mipae = build_stage1("drnet", {}, 32, 3), build_stage1("mipae", {}, 32, 3)
    assert isinstance(drnet, Drnet) and isinstance(mipae, Mipae)
    assert (drnet.config.pose_dim, drnet.config.content_dim, drnet.config.beta) == (10, 128, 1e-4)
    assert drnet.config.skips and drnet.config.reconstruction == "cross"
    # MIPAE sec. IV-A (DCGAN datasets): no skips, |z_p| 5, beta 1e-4, same-frame eq. 4
    m = mipae.config
    assert (m.skips, m.pose_dim, m.beta, m.reconstruction) == (False, 5, 1e-4, "same")
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


def test_temporal_smoothness_loss_values():
    # per feature: mean squared step to the next frame over mean squared step to frame t+k
    pose_t = torch.tensor([[0.0, 0.0], [2.0, 4.0]])
    pose_next = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # squared steps (1, 0) and (0, 16)
    pose_far = torch.tensor([[0.0, 2.0], [4.0, 4.0]])  # squared steps (0, 4) and (4, 0)
    loss = temporal_smoothness_loss(pose_t, pose_next, pose_far)
    assert loss.item() == pytest.approx((0.5 / 2 + 8 / 2) / 2)
    # neither shrinking the pose nor a per-video constant in it can meet it
    offset = torch.tensor([[5.0, -3.0], [100.0, 7.0]])  # one constant per row (video)
    moved = [p * 1e-3 + offset for p in (pose_t, pose_next, pose_far)]
    assert temporal_smoothness_loss(*moved).item() == pytest.approx(loss.item(), rel=1e-4)
    assert temporal_smoothness_loss(pose_t, pose_t.clone(), pose_far).item() == 0.0
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(20000, 3, generator=g) for _ in range(3))
    assert temporal_smoothness_loss(a, b, c).item() == pytest.approx(1, abs=0.03)  # noise: 1
    # a pose moving linearly in time, k uniform in [1, 8]: E[1] / E[k^2] = 8 / 204
    v = torch.randn(20000, 3, generator=g)
    k = torch.randint(1, 9, (20000, 1), generator=g).float()
    linear = temporal_smoothness_loss(a, a + v, a + k * v)
    assert linear.item() == pytest.approx(8 / 204, rel=0.05)


def test_smoothness_adds_its_term_and_zero_weight_is_the_old_loss():
    amp = Amp(torch.device("cpu"), "off")
    b = batch()
    with_next = {**b, "x_t1": torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))}
    # weight 0 (the default): no neighbour needed, x_t1 ignored, the same step as without it
    runs = []
    for inputs in (b, with_next):
        model = tiny().train()
        assert not model.needs_neighbour
        losses = model.train_step(inputs, model.make_optimizers(), amp)
        runs.append((losses, model.state_dict()))
    (old, old_state), (new, new_state) = runs
    assert set(new) == {"loss", "rec", "sim", "adv", "critic"}
    assert all(torch.equal(old[k], new[k]) for k in old)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    c = tiny().config
    want = old["rec"] + c.alpha * old["sim"] + c.beta * old["adv"]
    assert old["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    # weight 0.5: the pose of x_t1 enters, loss = eq. 5 + 0.5 * smooth
    model = tiny(smoothness=0.5).train()
    assert model.needs_neighbour
    state = {k: v.clone() for k, v in model.state_dict().items()}
    losses = model.train_step(with_next, model.make_optimizers(lr=1e-12), amp)
    want = losses["rec"] + c.alpha * losses["sim"] + c.beta * losses["adv"] + 0.5 * losses["smooth"]
    assert losses["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    model.load_state_dict(state)
    with torch.no_grad():
        pose = model._pose(torch.cat([with_next[k] for k in ("x_t", "x_tk", "x_t1")]))
    expected = temporal_smoothness_loss(pose[:6], pose[12:], pose[6:12])
    torch.testing.assert_close(losses["smooth"], expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="x_t1"):
        model.train_step(b, model.make_optimizers(), amp)


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
@pytest.mark.parametrize("skips", [True, False])
def test_train_step_updates_both_parts_and_returns_finite_losses(name, penalty, skips):
    model = tiny(name, skips=skips).train()
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


def test_mipae_reconstructs_the_same_frame_drnet_the_other():
    """MIPAE eq. 4 compares D(E_c(x^t), E_p(x^t)) with x^t (both frames of a pair); DRNET eq. 1
    compares D(E_c(x^t), E_p(x^t+k)) with x^t+k."""
    amp = Amp(torch.device("cpu"), "off")
    b = batch()
    for name, skips in (("mipae", False), ("drnet", True)):
        model = tiny(name, skips=skips).train()
        opts = model.make_optimizers(lr=1e-12)  # a step that leaves the weights as they were
        state = {k: v.clone() for k, v in model.state_dict().items()}
        rec = model.train_step(b, opts, amp)["rec"]
        model.load_state_dict(state)
        both = torch.cat([b["x_t"], b["x_tk"]])
        content, maps = model._content(both)
        pose = model._pose(both)
        with torch.no_grad():
            if name == "mipae":
                want = reconstruction_loss(model.decoder(torch.cat([content, pose], 1)), both)
            else:
                z = torch.cat([content.chunk(2)[0], pose.chunk(2)[1]], 1)
                out = model.decoder(z, [m.chunk(2)[0] for m in maps])
                want = reconstruction_loss(out, b["x_tk"])
        torch.testing.assert_close(rec, want, atol=1e-5, rtol=1e-4)


def test_train_step_under_cpu_bf16_autocast_keeps_float32_weights_and_losses():
    model = tiny("mipae").train()
    opts = model.make_optimizers()
    losses = model.train_step(batch(), opts, Amp(torch.device("cpu"), "bf16"))
    assert all(v.dtype == torch.float32 and math.isfinite(v.item()) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("name", ["drnet", "mipae"])
def test_checkpoints_of_the_former_config_load_with_their_behaviour(tmp_path, name):
    """A checkpoint written before skips, pose/content norms and same-frame MIPAE existed stores
    a config without those keys (and `normalize`); it loads as the model it was: no skips, unit
    norm on both codes, cross-frame reconstruction."""
    from vidlat.stages.common.checkpoint import save_checkpoint
    from vidlat.stages.load import load_run
    from vidlat.stages.stage1.base import KIND

    old = tiny(name, skips=False, content_norm="unit", pose_norm="unit", reconstruction="cross")
    config = old.config_dict()
    for key in ("skips", "content_norm", "pose_norm", "reconstruction"):
        config.pop(key)
    config["normalize"] = True
    meta = {"kind": KIND, "model": name, "config": config, "image_size": 32, "channels": 3}
    save_checkpoint(tmp_path, 1, {"model": old}, {}, meta)
    model, _ = load_run(tmp_path, "stage1")
    c = model.config
    assert (c.skips, c.content_norm, c.pose_norm, c.reconstruction) == (
        False, "unit", "unit", "cross"
    )  # fmt: skip
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.decode(model.encode(x)), old.eval().decode(old.encode(x)))
