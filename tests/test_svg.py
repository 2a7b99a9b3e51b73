"""DR-SVG in latent space: its losses, K sampled futures, the pose adversary, store training."""

import math

import numpy as np
import pytest
import torch
from helpers import exact_rows, write_store

from vidlat.stages.common.runtime import Amp
from vidlat.stages.load import load_run
from vidlat.stages.stage2 import build_predictor, predictor_class
from vidlat.stages.stage2.configs import PredictorConfig
from vidlat.stages.stage2.svg import (
    SVGPredictor,
    confusion_loss,
    discriminator_loss,
    gaussian_kl,
    pose_pairs,
)
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.format import FieldSpec

SLOTS = [
    FieldSpec("background", "content", (4,)),
    FieldSpec("obj_pose", "pose", (2, 3)),
    FieldSpec("obj_mask", "mask", (2,)),
    FieldSpec("perm", "aux", (2,), dtype="int64"),
]
SIZES = {"hidden": 16, "layers": 2, "z_content": 4, "z_pose": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny LSTMs run fastest on one thread
    yield
    torch.set_num_threads(threads)


def tiny(specs=SLOTS, **kw) -> SVGPredictor:
    torch.manual_seed(0)
    return build_predictor(PredictorConfig(kind="svg", **{**SIZES, **kw}), specs)


def latents(specs, b: int, t: int) -> dict[str, torch.Tensor]:
    return {s.name: torch.randn(b, t, *s.shape) for s in specs if s.role != "aux"}


def make_store(path, n_videos=24, n_frames=12):
    """Sinusoidal poses (random frequency, phase, amplitude per video), constant content."""
    rng = np.random.default_rng(0)
    t = np.arange(n_frames)[None, :, None]
    freq, phase = rng.uniform(0.3, 0.6, (n_videos, 1, 3)), rng.uniform(0, 6.3, (n_videos, 1, 3))
    data = {
        "pose": 5.0 * np.sin(freq * t + phase) + 2.0,
        "content": np.repeat(rng.normal(size=(n_videos, 1, 4)), n_frames, axis=1),
    }
    fields = [FieldSpec("content", "content", (4,)), FieldSpec("pose", "pose", (3,))]
    split = {"train": list(range(n_videos - 4)), "val": list(range(n_videos - 4, n_videos))}
    return write_store(path, fields, data, split=split)


def train_config(**kw) -> TrainPredictorConfig:
    base = {"kind": "svg", "past": 4, "future": 6, "steps": 120, "batch_size": 16, "lr": 3e-3}
    base |= {"hidden": 32, "layers": 2, "z_content": 4, "z_pose": 2, "device": "cpu"}
    base |= {"log_every": 20, "val_every": 60, "checkpoint_every": 60}
    return TrainPredictorConfig(**{**base, **kw})


def rows(out) -> list[dict]:
    return exact_rows(out / "metrics.jsonl")  # timing keys differ run to run


# -- the loss terms


def test_gaussian_kl_matches_the_closed_form():
    mu_q, lv_q = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, math.log(4.0)]])
    mu_p, lv_p = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(2.0), 0.0]])
    # per dim: log(σp/σq) + (σq² + (μq-μp)²) / (2σp²) - 1/2
    want = (0.5 * math.log(2) + (1 + 0.25) / 4 - 0.5) + (-math.log(2) + (4 + 1) / 2 - 0.5)
    assert gaussian_kl(mu_q, lv_q, mu_p, lv_p).item() == pytest.approx(want, rel=1e-6)
    assert gaussian_kl(mu_q, lv_q, mu_q, lv_q).item() == pytest.approx(0.0, abs=1e-7)


def test_adversarial_losses_follow_eq_5_and_6():
    zero = torch.zeros(8, 1)
    assert confusion_loss(zero).item() == pytest.approx(math.log(2))  # eq. 6 minimum at D = 1/2
    assert confusion_loss(zero + 3).item() > math.log(2) and confusion_loss(zero - 3) > math.log(2)
    assert discriminator_loss(zero + 9, zero - 9).item() < 1e-3  # eq. 5: a perfect D_p
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    z = torch.arange(4 * 5 * 2, dtype=torch.float32).reshape(4, 5, 2)
    same, other = pose_pairs(z)
    assert same.shape == other.shape == (4, 4)
    assert torch.equal(same[:, :2], z[:, 0]) and torch.equal(other[:, 2:], same[:, 2:].roll(1, 0))


def test_forward_loss_is_finite_and_reaches_every_net_but_the_discriminator():
    model = tiny()
    out = model(latents(SLOTS, 6, 9), past=3)
    assert torch.isfinite(out.loss) and torch.isfinite(out.future_mse)
    out.loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("disc."):
            assert p.grad is None, name  # eq. 6 moves q_φp only, through a frozen copy of D_p
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model.eval()  # eval: future_mse of a prior sample, as generate draws, with the same noise
    window, rng = latents(SLOTS, 6, 9), torch.get_rng_state()
    with torch.no_grad():
        a, b = model(window, past=3), model(window, past=3)
    assert torch.isfinite(a.future_mse) and torch.equal(a.future_mse, b.future_mse)
    assert torch.equal(a.loss, b.loss) and torch.equal(torch.get_rng_state(), rng)


def test_extra_step_updates_only_the_discriminator():
    model = tiny()
    opts = model.make_optimizers(1e-2)
    assert {id(p) for p in opts["disc"].param_groups[0]["params"]} == {
        id(p) for p in model.disc.parameters()
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = model.extra_step(latents(SLOTS, 6, 9), 3, opts, Amp(torch.device("cpu")))
    assert torch.isfinite(loss)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("disc.") for k in changed), changed


def test_svg_trains_p_theta_on_the_true_frames_by_default_as_eq_7():
    assert PredictorConfig(kind="svg").teacher_forcing == "all"
    assert TrainPredictorConfig(kind="svg").teacher_forcing == "all"
    assert PredictorConfig(kind="svg", teacher_forcing="observed").teacher_forcing == "observed"
    assert PredictorConfig().teacher_forcing == "observed"  # the deterministic kinds: as before


@pytest.mark.parametrize("force_future", [False, True])
def test_in_training_the_prior_reads_the_true_previous_latents(monkeypatch, force_future):
    """Eq. 8 (and SVG-LP's training loop): p_ψ's input at step t is the true frame f_t-1, even
    where p_θ runs on its own predictions; p_θ reads the true f_t-1 too over the fed frames."""
    model = tiny().train()
    window, past = latents(SLOTS, 3, 7), 3
    pose = model.flat_pose(window)  # (3, 7, Dp), normalised
    true = model.frames(pose, model.flat_held(model.held_values(window, past), pose))
    prior_in, prior_out, theta_in = [], [], []

    def record(module, args, out):
        prior_in.append(args[0].detach())
        prior_out.append(out[0].detach())  # μ_ψ

    model.prior_p.register_forward_hook(record)
    with torch.no_grad():
        model(window, past, force_future)
    clean = torch.cat(prior_out, 1)
    predict = model.predict

    def far_off(f, z, state):  # p_θ's predictions pushed 100 units from any true pose
        theta_in.append(f)
        poses, state = predict(f, z, state)
        return poses + 100.0, state

    monkeypatch.setattr(model, "predict", far_off)
    prior_in.clear(), prior_out.clear()
    with torch.no_grad():
        model(window, past, force_future)
    assert torch.equal(torch.cat(prior_in, 1), true[:, :-1])  # frames 0..T-2, all true
    assert torch.equal(torch.cat(prior_out, 1), clean)  # so the KL's prior ignores p_θ's output
    fed = torch.cat(theta_in, 1)  # what p_θ read for frames 1..T-1
    n = true.shape[1] - 1 if force_future else past
    assert fed.shape == true[:, :-1].shape and torch.equal(fed[:, :n], true[:, :n])
    if not force_future:  # "observed" (ours): p_θ reads its own far-off poses after the past
        off = fed[:, n:, : model.pose_dim] - true[:, n:-1, : model.pose_dim]
        assert float(off.abs().amin()) > 50


# -- sampling


@pytest.mark.parametrize("future", [3, 20])
def test_k_sampled_futures_shapes_differ_and_repeat_with_a_seed(future):
    model = tiny().eval()
    past = latents(SLOTS, 2, 5)
    with torch.no_grad():
        a = model.sample_rollout(past, future, samples=4, seed=7)
        b = model.sample_rollout(past, future, samples=4, seed=7)
        c = model.sample_rollout(past, future, samples=4, seed=8)
    assert list(a) == ["background", "obj_pose", "obj_mask"]
    for spec in SLOTS[:3]:
        assert a[spec.name].shape == (2, 4, future, *spec.shape)
        assert torch.equal(a[spec.name], b[spec.name])  # the same seed draws the same futures
    pose = a["obj_pose"]
    for i in range(4):
        for j in range(i):
            assert (pose[:, i] - pose[:, j]).abs().amax() > 1e-3  # K futures really differ
    assert not torch.equal(pose, c["obj_pose"])
    # held fields: the same for every sample (content: mean of the observed; mask: last)
    want = past["background"].mean(1)[:, None, None].expand_as(a["background"])
    assert torch.allclose(a["background"], want)
    assert torch.equal(
        a["obj_mask"], past["obj_mask"][:, -1][:, None, None].expand_as(a["obj_mask"])
    )


def test_rollout_is_one_sample():
    model = tiny().eval()
    past = latents(SLOTS, 3, 4)
    with torch.no_grad():
        out = model.rollout(past, 6)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "background": (3, 6, 4), "obj_pose": (3, 6, 2, 3), "obj_mask": (3, 6, 2)
    }  # fmt: skip


# -- training from the store


def test_trains_from_a_tiny_store_and_resumes_exactly(tmp_path):
    assert predictor_class("svg") is SVGPredictor
    store = make_store(tmp_path / "latents.zarr")
    out = train_predictor(store, train_config(), tmp_path / "run")
    train = [r for r in rows(out) if "loss" in r]
    assert all(np.isfinite(r["loss"]) for r in train)
    # teacher-forced p_θ (eq. 7) starts low; the loss keeps adv_weight x log 2 of eq. 6's floor
    assert train[-1]["loss"] < 0.6 * train[0]["loss"], (train[0], train[-1])
    assert train[-1]["future_mse"] < 0.25 * train[0]["future_mse"], (train[0], train[-1])
    val = [r for r in rows(out) if "val_loss" in r]
    assert [r["step"] for r in val] == [60, 120] and np.isfinite(val[-1]["val_future_mse"])
    model, meta = load_run(out, "predictor")
    assert isinstance(model, SVGPredictor) and meta["config"]["z_pose"] == 2
    past = {k: torch.from_numpy(store.read(k, [20, 21])[:, :4]) for k in model.fields}
    with torch.no_grad():
        futures = model.sample_rollout(past, 8, samples=3, seed=0)
    assert futures["pose"].shape == (2, 3, 8, 3)
    assert abs(float(futures["pose"].mean()) - 2.0) < 6.0  # store units, not normalised ones
    # both optimisers (the adversary's too) are checkpointed: a resumed run equals a whole one
    part = train_predictor(store, train_config(steps=60), tmp_path / "part")
    train_predictor(store, train_config(), part, resume=True)
    assert rows(part) == rows(out)
