"""The hierarchical model (main paper §3.2): geometry, composition, every loss term and where its
gradients go, the ablation switches, eval-mode encode, overfitting a batch, train-ae and resume."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
import typer.testing
from helpers import exact_rows
from PIL import Image

from vidlat.cli.app import app
from vidlat.errors import ConfigError
from vidlat.pipeline.evaluate import EvaluateConfig, evaluate
from vidlat.pipeline.generate import GenerateConfig, generate
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import load_checkpoint
from vidlat.stages.common.runtime import Amp, frames_to_device
from vidlat.stages.inference.encode import EncodeConfig, encode, encode_frames
from vidlat.stages.inference.rollout import decode_latents, interpolate_frames, interpolation_fields
from vidlat.stages.load import load_run
from vidlat.stages.stage1 import STAGE1_MODELS, build_stage1
from vidlat.stages.stage1.hierarchical import losses as L
from vidlat.stages.stage1.hierarchical import model as hier
from vidlat.stages.stage1.hierarchical import nets as hier_nets
from vidlat.stages.stage1.hierarchical.align import apply_perm
from vidlat.stages.stage1.hierarchical.nets import compose, crop, paste, where_from_raw
from vidlat.stages.training.train_ae import TrainAEConfig, train_ae
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

TINY = {"slots": 2, "back_dim": 8, "pose_dim": 3, "content_dim": 4, "feature_dim": 16,
        "lstm_hidden": 16, "width": 4, "glimpse_width": 4, "sbd_width": 8, "critic_hidden": 8,
        "disc_width": 4}  # fmt: skip
CPU = Amp(torch.device("cpu"))


def tiny(size: int = 32, channels: int = 3, **params) -> hier.Hierarchical:
    torch.manual_seed(0)
    return build_stage1("hierarchical", {**TINY, **params}, size, channels)


def pair_batch(b: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "x_t": torch.rand(b, 3, size, size, generator=g),
        "x_tk": torch.rand(b, 3, size, size, generator=g),
        "video": torch.arange(b),
    }


def grads(loss: torch.Tensor, module: torch.nn.Module) -> bool:
    """Whether `loss` has a non-zero gradient on some parameter of `module`."""
    params = [p for p in module.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return any(g is not None and g.abs().sum() > 0 for g in got)


def test_fields_shapes_and_sizes():
    model = tiny().eval()
    assert isinstance(model, hier.Hierarchical) and "hierarchical" in STAGE1_MODELS
    assert {(f.name, f.role, f.shape) for f in model.latent_fields()} == {
        ("z_back", "content", (8,)), ("z_where", "where", (2, 4)), ("z_pose", "pose", (2, 3)),
        ("z_content", "content", (2, 4)), ("presence", "mask", (2,))}  # fmt: skip
    z = model.encode(torch.rand(5, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in z.items()} == {
        "z_back": (5, 8), "z_where": (5, 2, 4), "z_pose": (5, 2, 3), "z_content": (5, 2, 4),
        "presence": (5, 2)}  # fmt: skip
    assert ((z["presence"] >= 0) & (z["presence"] <= 1)).all()
    assert model.decode(z).shape == (5, 3, 32, 32)
    layers = model.decompose(z)
    assert {k: tuple(v.shape) for k, v in layers.items()} == {
        "background": (5, 3, 32, 32), "glimpses": (5, 2, 3, 16, 16),
        "glimpse_masks": (5, 2, 1, 16, 16), "masks": (5, 2, 1, 32, 32),
        "objects": (5, 2, 3, 32, 32), "composite": (5, 3, 32, 32)}  # fmt: skip
    # glimpses at a window's native size (object_scale 0.5: half the frame), image / 4 for the
    # lstm detector; the slot count reaches encode's attribute
    assert [tiny(s).glimpse for s in (32, 64, 128)] == [16, 32, 64]
    assert tiny(64, object_scale=0.25).glimpse == 16
    assert [tiny(s, detector="lstm").glimpse for s in (32, 64, 128)] == [8, 16, 32]
    assert tiny(slots=3).slots == 3  # encode reads it by getattr
    assert tiny(64, 1).eval().encode(torch.rand(2, 1, 64, 64))["z_where"].shape == (2, 2, 4)
    for bad in ({"glimpse_size": 12}, {"glimpse_size": 64}, {"size_range": (0.5, 0.2)},
                {"grid_cells": 3}, {"grid_cells": 2, "slots": 5}, {"detector": "air"}):  # fmt: skip
        with pytest.raises(ConfigError):
            tiny(**bad)


def test_crop_and_paste_are_inverse_spatial_transforms():
    img = torch.zeros(1, 1, 32, 32)
    img[..., 8:16, 16:24] = 1.0  # an 8x8 square centred at pixel (x, y) = (20, 12)
    # centre (20/16 - 1, 12/16 - 1) in normalised coordinates; side 8/32 of the frame
    where = torch.tensor([[[0.25, -0.25, 0.25, 0.25], [0.0, 0.0, 0.5, 0.5]]])
    glimpses = crop(img, where, 8)  # (1, 2, 1, 8, 8)
    torch.testing.assert_close(glimpses[0, 0, 0], torch.ones(8, 8))  # exactly the square
    pasted = paste(glimpses[:, :1], where[:, :1], 32)  # (1, 1, 1, 32, 32)
    torch.testing.assert_close(pasted[0, 0], img[0])
    ones = paste(torch.ones(1, 2, 1, 8, 8), where, 32)
    assert ones[0, 1].sum().item() == pytest.approx(0.25 * 32 * 32)  # a half-side window
    w = where_from_raw(torch.randn(100, 4) * 5, (0.1, 0.6))
    assert (w[:, :2].abs() <= 1).all() and ((w[:, 2:] >= 0.1) & (w[:, 2:] <= 0.6)).all()


def test_composition_eq3_and_mask_sums():
    g = torch.Generator().manual_seed(0)
    background = torch.rand(2, 3, 8, 8, generator=g)
    objects = torch.rand(2, 3, 3, 8, 8, generator=g)
    frame, weights = compose(background, objects, torch.zeros(2, 3, 1, 8, 8))
    assert torch.equal(frame, background) and torch.equal(weights, torch.zeros_like(weights))
    masks = torch.rand(2, 3, 1, 8, 8, generator=g)
    frame, weights = compose(background, objects, masks)
    total = weights.sum(1)
    assert (weights >= 0).all() and (total <= 1 + 1e-6).all()
    expected = (1 - total) * background + (weights * objects).sum(1)  # eq. 3 as printed
    torch.testing.assert_close(frame, expected)
    one = torch.zeros(2, 3, 1, 8, 8)
    one[:, 1] = 1.0  # a full mask: the frame is that object
    torch.testing.assert_close(compose(background, objects, one)[0], objects[:, 1])


@pytest.mark.parametrize("detector", ["grid", "lstm"])
def test_model_composite_is_the_background_where_masks_are_zero(detector):
    model = tiny(detector=detector).eval()
    with torch.no_grad():
        model.object_decoder.out.bias[-1] = -1e4  # sigmoid(mask) = 0 everywhere
    z = model.encode(torch.rand(3, 3, 32, 32))
    layers = model.decompose(z)
    assert torch.equal(layers["masks"], torch.zeros_like(layers["masks"]))
    torch.testing.assert_close(layers["composite"], layers["background"])
    if detector == "lstm":  # presence is the mean mask
        assert torch.equal(z["presence"], torch.zeros(3, 2))
    with torch.no_grad():
        model.object_decoder.out.bias[-1] = 1e4  # full masks: their sum is still at most 1
    masks = model.decompose(z)["masks"].sum(1)
    assert masks.max() <= 1 + 1e-6 and masks.max() > 0.25
    if detector == "grid":  # full masks, but no slot present: the frame is the background
        layers = model.decompose({**z, "presence": torch.zeros(3, 2)})
        torch.testing.assert_close(layers["composite"], layers["background"])
        half = model.decompose({**z, "presence": torch.full((3, 2), 0.5)})["masks"][:, 0]
        full = model.decompose({**z, "presence": torch.ones(3, 2)})["masks"][:, 0]
        torch.testing.assert_close(half, 0.5 * full)  # the front slot's mask scales


def test_encode_is_deterministic_and_batch_independent():
    model = tiny()
    model.train_step(pair_batch(), model.make_optimizers(), CPU)  # BatchNorm stats move
    model.eval()
    x = torch.rand(6, 3, 32, 32)
    a, b, part = model.encode(x), model.encode(x), model.encode(x[:2])
    for k in a:
        assert torch.equal(a[k], b[k]), k
        torch.testing.assert_close(part[k], a[k][:2], atol=1e-5, rtol=1e-5)


def test_loss_values():
    d = torch.tensor([[[0.0, 4.0], [1.0, 0.5]]])  # (B=1, N=2, N=2)
    j1, j2 = L.match_slots(d)
    assert j1.tolist() == [[0, 1]] and j2.tolist() == [[1, 0]]
    # eq. 5: [d1 - d2 + beta]_+: slot 0: [0 - 4 + 1]_+ = 0; slot 1: [0.5 - 1 + 1]_+ = 0.5
    assert L.content_triplet_loss(d, j1, j2, 1.0).item() == pytest.approx(0.25)
    assert L.content_triplet_loss(d[:, :1, :1], j1[:, :1], j1[:, :1], 1.0).item() == 0.0
    zeros = torch.zeros(4)
    assert L.pose_encoder_loss(zeros).item() == pytest.approx(math.log(0.5))  # eq. 7 at D = 1/2
    right = L.pose_discriminator_loss(torch.full((4,), -8.0), torch.full((4,), 8.0), zeros + 1)
    wrong = L.pose_discriminator_loss(torch.full((4,), 8.0), torch.full((4,), -8.0), zeros + 1)
    assert right.item() < 1e-3 < 10 < wrong.item()
    unweighted = L.pose_discriminator_loss(torch.full((4,), -8.0), torch.full((4,), -8.0), zeros)
    assert unweighted.item() < 1e-3  # "other" pairs of one video do not count
    assert L.mask_loss(torch.full((2, 3, 1, 4, 4), 0.5)).item() == 0.0
    assert L.mask_loss(torch.zeros(2, 3, 1, 4, 4)).item() == pytest.approx(0.25)
    assert L.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).tolist() == [0.0, 0.0]
    # eq. 4 normalised by the codes' spread: 4 / 1 here, unchanged by a common scale, ~2 for
    # unrelated pairs, 0 for pairs that share their code
    assert L.background_loss(torch.ones(2, 4), torch.zeros(2, 4)).item() == pytest.approx(4.0)
    a, b = torch.randn(4000, 8), torch.randn(4000, 8)
    assert L.background_loss(a, b).item() == pytest.approx(2.0, rel=0.05)
    assert L.background_loss(1e-3 * a, 1e-3 * b).item() == pytest.approx(
        L.background_loss(a, b).item(), rel=1e-4
    )
    assert L.background_loss(a, a).item() == 0.0
    # the presence prior: KL(Bernoulli(p) || Bernoulli(0.1)) per slot, summed over slots
    logit = math.log(0.1 / 0.9)
    at_prior = L.bernoulli_kl(torch.full((2, 3), logit), 0.1).tolist()
    assert at_prior == pytest.approx([0.0, 0.0], abs=1e-6)
    assert L.bernoulli_kl(torch.full((1, 3), 30.0), 0.1).item() == pytest.approx(
        3 * math.log(10), rel=1e-4
    )
    assert L.bernoulli_kl(torch.zeros(1, 2), 0.5).item() == pytest.approx(0.0, abs=1e-7)
    # eq. 8 weighted by presence: empty slots are free
    masks = torch.zeros(1, 2, 1, 4, 4)
    assert L.mask_loss(masks, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.125)
    assert L.mask_loss(masks, torch.zeros(1, 2)).item() == 0.0
    x = torch.rand(3, 2, requires_grad=True)  # D(x) = x . w: R1 = ||w||^2
    w = torch.tensor([3.0, 4.0])
    assert L.r1_penalty(x @ w, x).item() == pytest.approx(25.0)
    assert L.r1_penalty(x @ w, x, scale=torch.tensor(1024.0)).item() == pytest.approx(25.0)


@pytest.mark.parametrize("detector", ["grid", "lstm"])
def test_every_term_is_finite_and_reaches_the_right_nets(detector):
    model = tiny(detector=detector, image_adv_weight=0.01)
    model.progress = 0.2
    b = pair_batch()
    x, video = torch.cat([b["x_t"], b["x_tk"]]), b["video"].repeat(2)
    terms = model.model_losses(model.pair_pass(x, 0.2), x, video)
    expected = {"rec", "kl", "back", "triplet", "mask", "pose_adv", "image_adv"}
    expected |= {"presence"} if detector == "grid" else set()
    assert set(terms) == set(model.loss_weights(0.2)) == expected
    assert all(torch.isfinite(t) for t in terms.values())
    m = model
    finders = [m.detector] + ([m.encoder] if detector == "lstm" else [])
    reach = {
        "rec": [m.back_encoder, m.back_decoder, m.pose_encoder, m.content_encoder,
                m.object_decoder, *finders],
        "kl": [m.back_encoder, m.detector, m.pose_encoder, m.content_encoder],
        "back": [m.back_encoder],  # eq. 4 is on z_back alone
        "triplet": [m.content_encoder],
        "mask": [m.object_decoder, m.pose_encoder, m.content_encoder],
        "pose_adv": [m.pose_encoder],
        "image_adv": [m.object_decoder, m.back_decoder],
    }  # fmt: skip
    never = {"back": [m.back_decoder, m.object_decoder], "triplet": [m.pose_encoder],
             "pose_adv": [m.content_encoder, m.object_decoder]}  # fmt: skip
    for name, nets in reach.items():
        assert all(grads(terms[name], net) for net in nets), name
    if detector == "grid":
        reach["presence"] = [m.detector]
        never["presence"] = [m.object_decoder, m.back_encoder]
    for name, nets in never.items():
        assert not any(grads(terms[name], net) for net in nets), name
    # x_diff uses a detached background: the object encoder does not train the background VAE
    assert not grads(terms["mask"], m.back_decoder)


def test_critics_update_themselves_only():
    model = tiny(image_adv_weight=0.01)
    opts = model.make_optimizers()
    assert set(opts) == {"model", "pose_critic", "image_critic"}
    b = pair_batch()
    x, video = torch.cat([b["x_t"], b["x_tk"]]), b["video"].repeat(2)
    _, _, critic_inputs = model.model_pass(x, video, 0.5)
    assert all(not t.requires_grad for t in critic_inputs["pose_pairs"])  # detached for the critics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logs = model.critic_step(critic_inputs, x, opts, CPU)
    assert set(logs) == {"pose_critic", "image_critic", "r1"}
    assert all(torch.isfinite(v) for v in logs.values())
    changed = {
        k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed == {"pose_critic", "image_critic"}
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("pose_encoder"))


def test_train_step_runs_and_holds_the_critics_during_the_model_update():
    model = tiny(image_adv_weight=0.01)
    model.progress = 0.7
    logs = model.train_step(pair_batch(), model.make_optimizers(), CPU)
    assert set(logs) == {"loss", "rec", "kl", "back", "triplet", "mask", "pose_adv", "image_adv",
                         "presence", "pose_critic", "image_critic", "r1"}  # fmt: skip
    assert all(v.ndim == 0 and torch.isfinite(v) and not v.requires_grad for v in logs.values())
    assert all(p.requires_grad for p in model.parameters())  # critics released after the step


def test_swap_and_mixing_paths(monkeypatch):
    model = tiny().eval()  # eval: BatchNorm on running statistics, so passes can be compared
    for module in (hier, hier_nets):  # posterior means instead of samples, detector included
        monkeypatch.setattr(module, "reparameterize", lambda mu, logvar: mu)
    monkeypatch.setattr(hier_nets, "gumbel_noise", torch.zeros_like)  # the cells by presence
    b = pair_batch()
    x = torch.cat([b["x_t"], b["x_tk"]])
    with torch.no_grad():
        back_mu, _ = model.back_encoder(x)
        out = model.pair_pass(x, 1.0)
        # §3.2.1: x's background is decoded from the partner's z_back (rows r and r + B swap)
        torch.testing.assert_close(out.layers["background"], model.back_decoder(back_mu.roll(4, 0)))
        model.config.background_swap = False
        torch.testing.assert_close(model.pair_pass(x, 1.0).layers["background"],
                                   model.back_decoder(back_mu))  # fmt: skip
        # x' = x: each slot matches itself (eq. 1), so mixing (eq. 2) at any alpha changes nothing
        model.config.background_first = 0.0  # objects drawn from the start, at both alphas
        same = torch.cat([b["x_t"], b["x_t"]])
        mixed, plain = model.pair_pass(same, 1.0), model.pair_pass(same, 0.0)
    assert torch.equal(mixed.j1, torch.arange(2).expand(8, 2))
    torch.testing.assert_close(mixed.layers["composite"], plain.layers["composite"])
    alpha = model.mixing_ratio((500, 2), 0.4, torch.zeros(()))
    assert alpha.shape == (500, 2, 1) and 0 <= alpha.min() and alpha.max() <= 0.4
    assert alpha.std() > 0.05 and model.mixing_ratio((5, 2), 0.0, torch.zeros(())).max() == 0


def test_switches_choose_the_active_terms():
    full = tiny()
    assert full.loss_weights(0.2)["mask"] > 0 and full.loss_weights(0.4)["mask"] == 0  # eq. 8
    no_adv = tiny(pose_adversarial=False)  # Table 1 "w/o adv"
    assert "pose_adv" not in no_adv.loss_weights(0.0)
    assert "pose_critic" not in no_adv.make_optimizers()
    no_swap = tiny(content_swap=False)  # Table 1 "w/o swap": alpha = 0 all along
    assert no_swap.mixing_ratio((4, 2), 1.0, torch.zeros(())).abs().max() == 0
    no_gan = tiny(image_adv_weight=0.0, pose_adversarial=False, content_swap=False)
    assert set(no_gan.make_optimizers()) == {"model"}
    no_gan.progress = 0.9
    logs = no_gan.train_step(pair_batch(), no_gan.make_optimizers(), CPU)
    assert set(logs) == {"loss", "rec", "kl", "back", "triplet", "mask", "presence"}
    assert set(no_gan.loss_weights(0.9)) == set(logs) - {"loss"}


def test_overfits_one_batch(tiny_videos):
    set_quiet(True)
    videos = open_videos(tiny_videos)
    clips = videos.read(list(range(6)))  # (6, T, 32, 32, 3)
    cpu = torch.device("cpu")
    batch = {"x_t": frames_to_device(clips[:, 0], cpu), "x_tk": frames_to_device(clips[:, 4], cpu),
             "video": torch.arange(6)}  # fmt: skip
    model = tiny(image_adv_weight=0.0, pose_adversarial=False)
    opts = model.make_optimizers(lr=3e-3)
    rec = []
    for step in range(150):
        model.progress = step / 150
        rec.append(model.train_step(batch, opts, CPU)["rec"].item())
    first, last = sum(rec[:5]) / 5, sum(rec[-5:]) / 5
    print(f"overfit rec: first 5 steps {first:.4f}, last 5 steps {last:.4f}")
    assert last < first / 3, (first, last)


def test_train_ae_runs_and_resumes_exactly(tiny_videos, tmp_path):
    set_quiet(True)
    videos = open_videos(tiny_videos)
    cfg = TrainAEConfig(model="hierarchical", model_params=TINY, steps=4, batch_size=3, max_k=3,
                        device="cpu", log_every=1, sample_every=2, val_every=2,
                        checkpoint_every=2)  # fmt: skip
    a = train_ae(videos, cfg, tmp_path / "a")
    rows = [json.loads(r) for r in (a / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_rec" in r]
    assert [r["step"] for r in val] == [2, 4]  # the slots' decomposition scores at validation
    assert {"val_recall", "val_precision", "val_count_accuracy", "val_chance_recall"} <= set(val[0])
    recall, objects = val[-1]["val_recall"], val[-1]["val_objects_per_frame"]
    assert (0 <= recall <= 1) if objects > 0 else math.isnan(recall)  # no object: nothing to find
    assert val[-1]["val_rec"] > 0
    # the training pictures: reconstructions, and the layers of the x^t frames (2 + 3 per slot)
    layers = Image.open(a / "samples" / "step_000004_layers.png")
    assert layers.height == 2 + (2 + 3 * TINY["slots"]) * (128 + 2)
    assert (a / "samples" / "step_000004.png").exists()
    train_ae(videos, cfg, tmp_path / "b")
    # "crash" b after its step-2 checkpoint: latest points back there, step 4 never happened
    ckpts = tmp_path / "b" / "checkpoints"
    shutil.rmtree(ckpts / "step_000004")
    (ckpts / "latest").write_text("step_000002\n")
    train_ae(videos, cfg, tmp_path / "b", resume=True)
    ca, cb = load_checkpoint(a), load_checkpoint(tmp_path / "b")
    assert ca.step == cb.step == 4
    for k, v in ca.model_state.items():
        assert torch.equal(cb.model_state[k], v), k
    metrics = [exact_rows(p / "metrics.jsonl") for p in (a, tmp_path / "b")]
    assert metrics[0] == metrics[1]
    lines = metrics[0]
    train_rows = [ln for ln in lines if "loss" in ln]
    assert [ln["step"] for ln in train_rows] == [1, 2, 3, 4]
    assert "pose_critic" in lines[0]
    assert all(math.isfinite(v) for ln in train_rows for v in ln.values())
    model, meta = load_run(a, "stage1")
    assert meta["model"] == "hierarchical" and model.slots == 2 and not model.training
    z = model.encode(frames_to_device(videos.read([0])[0, :3], torch.device("cpu")))
    assert z["z_where"].shape == (3, 2, 4) and model.decode(z).shape == (3, 3, 32, 32)


@pytest.fixture(scope="module")
def hier_run(tiny_videos, tmp_path_factory):
    """A 2-step hierarchical run, its store and a 2-step predictor on it."""
    set_quiet(True)
    root = tmp_path_factory.mktemp("hier")
    cfg = TrainAEConfig(model="hierarchical", model_params=TINY, steps=2, batch_size=3, max_k=3,
                        device="cpu", log_every=1, sample_every=2, val_every=2,
                        checkpoint_every=2)  # fmt: skip
    ae = train_ae(open_videos(tiny_videos), cfg, root / "ae")
    store = encode(tiny_videos, ae, root / "lat.zarr", EncodeConfig(device="cpu"))
    pred = TrainPredictorConfig(
        hidden=8,
        layers=1,
        past=4,
        future=4,
        steps=2,
        batch_size=4,
        device="cpu",
        val_every=0,
        log_every=1,
        checkpoint_every=2,
    )
    return ae, store, train_predictor(LatentStore.open(store), pred, root / "pred")


def test_encode_stores_slots_aligned_by_content(tiny_videos, hier_run):
    ae, store, _ = hier_run
    latents = LatentStore.open(store)
    fields = {"z_back", "z_where", "z_pose", "z_content", "presence", "perm", "ambiguous"}
    assert fields <= set(latents.fields)
    model, _ = load_run(ae, "stage1")
    raw = encode_frames(model, open_videos(tiny_videos).read([0, 1]), 64, torch.device("cpu"))
    stored = {k: latents.read(k, [0, 1]) for k in ("z_where", "z_content", "presence", "perm")}
    for name in ("z_where", "z_content", "presence"):  # one permutation moves every slot field
        np.testing.assert_allclose(stored[name], apply_perm(raw[name], stored["perm"]), atol=1e-5)

    # eq. 9: the stored order is no costlier frame to frame than the raw order
    def cost(c):
        return ((c[:, 1:] - c[:, :-1]) ** 2).sum(axis=(2, 3))

    assert (cost(stored["z_content"]) <= cost(raw["z_content"]) + 1e-5).all()
    assert sorted(stored["perm"][0, 5]) == [0, 1]


def test_generate_shows_the_layers_and_interpolates(tiny_videos, hier_run, tmp_path):
    ae, _, pred = hier_run
    cfg = GenerateConfig(videos="0:2", future=3, device="cpu")
    generate(ae, pred, tiny_videos, cfg, tmp_path / "gen")
    layers = Image.open(tmp_path / "gen" / "layers.png")  # composite, background, 3 rows per slot
    assert layers.height == 2 + (2 + 3 * TINY["slots"]) * (128 + 2)  # 32 px frames shown at 128
    cli = typer.testing.CliRunner().invoke(
        app, ["generate", "--ae", str(ae), "--data", str(tiny_videos), "--videos", "3:5",
              "--interpolate", "z_where", "--interpolate", "z_back", "--interpolate-steps", "5",
              "--device", "cpu", "--out", str(tmp_path / "interp")],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    picture = Image.open(tmp_path / "interp" / "interpolate.png")  # inputs + 2 field rows
    assert picture.height == 2 + 3 * (32 + 2)
    bad = typer.testing.CliRunner().invoke(
        app, ["generate", "--ae", str(ae), "--data", str(tiny_videos), "--interpolate", "z_nope",
              "--out", str(tmp_path / "bad")],
    )  # fmt: skip
    assert bad.exit_code == 1 and "z_back, z_where" in bad.output


def test_interpolation_moves_one_field_from_frame_1_to_frame_2(tiny_videos, hier_run):
    ae, _, _ = hier_run
    model, _ = load_run(ae, "stage1")
    cpu = torch.device("cpu")
    pair = open_videos(tiny_videos).read([0])[0, [0, 7]]
    rows = interpolate_frames(model, pair, ["z_back", "z_pose"], 4, cpu)
    assert rows["reconstruction"].shape == (2, 32, 32, 3) and rows["z_back"].shape == (4, 32, 32, 3)
    for name in ("z_back", "z_pose"):  # t = 0: frame 1 itself
        np.testing.assert_array_equal(rows[name][0], rows["reconstruction"][0])
    z = model.postprocess_latents(encode_frames(model, pair[None], 2, cpu))
    z = {f.name: torch.from_numpy(z[f.name][0]) for f in model.latent_fields()}
    end = {k: v[:1] for k, v in z.items()} | {"z_back": z["z_back"][1:]}  # t = 1
    expected = decode_latents(model, {k: v[None] for k, v in end.items()}, 1)[0, 0]
    np.testing.assert_array_equal(rows["z_back"][-1], expected)
    assert interpolation_fields(model, ["all"]) == ["z_back", "z_where", "z_pose", "z_content"]


def test_grid_detector_windows_cells_and_presence_order(monkeypatch):
    det = hier_nets.GridDetector(6, 32, 4, 4, 3, object_scale=0.5, scale_ratio=1.5,
                                 logvar_init=-4.0).eval()  # fmt: skip
    x = torch.rand(2, 6, 32, 32)
    mu, logvar, where, logits, cell = det(x, sample=False)
    assert mu.shape == logvar.shape == where.shape == (2, 3, 4) and logits.shape == cell.shape
    # at initialisation every cell proposes its own centre at the prior scale
    centres = hier_nets.coord_grid(4).flatten(2)[0].T  # (16, 2): row-major cell centres
    torch.testing.assert_close(where[..., :2], centres[cell])
    torch.testing.assert_close(where[..., 2:], torch.full((2, 3, 2), 0.5))
    assert torch.equal(logvar, torch.full((2, 3, 4), -4.0))
    # the N cells of highest presence, in that order; offsets reach at most one cell
    bias = torch.zeros(16)
    bias[[5, 9, 14]] = torch.tensor([3.0, 1.0, 2.0])
    monkeypatch.setattr(det, "head", _Fixed(bias))
    _, _, where, logits, cell = det(x, sample=False)
    assert cell.tolist() == [[5, 14, 9]] * 2 and logits[0].tolist() == [3.0, 2.0, 1.0]
    extreme = det.where(torch.full((1, 4), 50.0), torch.tensor([0]))
    torch.testing.assert_close(extreme, torch.tensor([[-0.75 + 0.5, -0.75 + 0.5, 0.75, 0.75]]))
    # in training, Gumbel top-k: distinct cells, every cell tried over many draws
    seen = set()
    for _ in range(30):
        cell = det(torch.rand(4, 6, 32, 32), sample=True)[-1]
        assert all(len(set(row)) == 3 for row in cell.tolist())
        seen |= set(cell.flatten().tolist())
    assert seen == set(range(16))


class _Fixed(torch.nn.Module):
    """A detector head whose output is fixed: presence logits `bias` per cell, zero elsewhere."""

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = bias

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(h.shape[0], 9, 4, 4)
        out[:, 0] = self.bias.reshape(4, 4)
        return out


def test_background_first_holds_the_objects_out():
    model = tiny(background_first=0.25)
    b = pair_batch()
    x = torch.cat([b["x_t"], b["x_tk"]])
    early, late = model.pair_pass(x, 0.2), model.pair_pass(x, 0.3)
    assert early.layers["masks"].abs().max() == 0
    torch.testing.assert_close(early.layers["composite"], early.layers["background"])
    assert late.layers["masks"].abs().max() > 0


def test_runs_saved_before_the_grid_detector_load_as_lstm():
    stored = hier.HierarchicalConfig(detector="lstm").model_dump()
    old = {k: v for k, v in stored.items() if k not in ("detector", "background_first")}
    upgraded = hier.HierarchicalConfig(**hier.HierarchicalConfig.upgrade_stored(old))
    assert upgraded.detector == "lstm" and upgraded.background_first == 0.0
    assert hier.HierarchicalConfig.upgrade_stored(stored) == stored


def test_evaluate_reports_the_decomposition(tiny_videos, hier_run, tmp_path):
    ae, store, pred = hier_run
    cfg = EvaluateConfig(videos=4, device="cpu", probes={"steps": 2}, mig={"samples": 20})
    result = evaluate(ae, pred, store, tiny_videos, cfg, tmp_path / "ev")
    found = result["decomposition"]
    assert found["videos"] == len(LatentStore.open(store).split["test"][:4])
    assert {"recall", "precision", "count_accuracy", "chance_recall"} <= set(found["slots"])
    back = found["background"]
    assert 0 <= back["sprites_left"] and -1 <= back["ssim_true_background"] <= 1
    written = json.loads((tmp_path / "ev" / "evaluation.json").read_text())["decomposition"]
    assert json.dumps(written, sort_keys=True) == json.dumps(found, sort_keys=True)


def test_grid_detector_never_takes_two_windows_on_one_place(monkeypatch):
    det = hier_nets.GridDetector(6, 32, 4, 4, 3, object_scale=0.4, scale_ratio=1.5,
                                 logvar_init=-4.0, nms_radius=0.3).eval()  # fmt: skip
    bias = torch.zeros(16)
    bias[[5, 6, 9, 15]] = torch.tensor([4.0, 3.0, 2.0, 1.0])  # 6 and 9 touch 5 (cells 1/4 apart)
    monkeypatch.setattr(det, "head", _Fixed(bias))
    cell = det(torch.rand(2, 6, 32, 32), sample=False)[-1]
    assert cell.tolist() == [[5, 15, 0]] * 2  # 6 and 9 suppressed by 5; then the best far cell
    det.nms_radius = 0.0
    assert det(torch.rand(1, 6, 32, 32), sample=False)[-1].tolist() == [[5, 6, 9]]
    crowded = hier_nets.GridDetector(6, 32, 2, 4, 4, object_scale=0.4, scale_ratio=1.5,
                                     logvar_init=-4.0, nms_radius=2.0).eval()  # fmt: skip
    cells = crowded(torch.rand(3, 6, 32, 32), sample=False)[-1]  # all suppressed: still N cells
    assert all(sorted(row) == [0, 1, 2, 3] for row in cells.tolist())
