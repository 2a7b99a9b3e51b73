"""Stage-2 predictor modules: role split, shapes, the lstm-delta arithmetic, losses, learning."""

import numpy as np
import pytest
import torch

from vidlat.errors import DataError, StoreError
from vidlat.stages.stage2 import PREDICTORS, build_predictor, predictor_class
from vidlat.stages.stage2.configs import PredictorConfig
from vidlat.stages.stage2.lstm import DeltaLSTM, PoseLSTM
from vidlat.store.format import FieldSpec

FLAT = [FieldSpec("content", "content", (5,)), FieldSpec("pose", "pose", (3,))]
SLOTS = [
    FieldSpec("background", "content", (4,)),
    FieldSpec("obj_content", "content", (2, 3)),
    FieldSpec("obj_pose", "pose", (2, 3)),
    FieldSpec("obj_where", "where", (2, 4)),
    FieldSpec("obj_mask", "mask", (2,)),
    FieldSpec("perm", "aux", (2,), dtype="int64"),
]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny LSTMs on a 2-core machine run fastest, and timings steadiest, on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(kind: str, specs, **kw):
    """A small predictor without the training-time regularisers (exact losses), unless asked."""
    torch.manual_seed(0)
    kw = {"dropout": 0.0, "input_noise": 0.0, **kw}
    return build_predictor(PredictorConfig(kind=kind, hidden=16, layers=2, **kw), specs)


def latents(specs, b: int, t: int) -> dict[str, torch.Tensor]:
    return {s.name: torch.randn(b, t, *s.shape) for s in specs if s.role != "aux"}


def zero_head(model) -> None:
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)


def test_registry_and_config_choices():
    assert set(PREDICTORS) == {"lstm", "lstm-delta", "svg"}  # svg: tests/test_svg.py
    assert PredictorConfig().kind == "lstm-delta"
    assert (PredictorConfig().hidden, PredictorConfig().layers) == (256, 2)
    assert isinstance(tiny("lstm", FLAT), PoseLSTM)
    assert isinstance(tiny("lstm-delta", FLAT), DeltaLSTM)
    assert predictor_class("lstm") is PoseLSTM and predictor_class("lstm-delta") is DeltaLSTM


@pytest.mark.parametrize("kind", sorted(PREDICTORS))
@pytest.mark.parametrize("specs", [FLAT, SLOTS], ids=["D", "ND"])
@pytest.mark.parametrize("future", [4, 25])  # 25 is longer than any window it could train on
def test_rollout_shapes_and_held_fields(kind, specs, future):
    model = tiny(kind, specs)
    past = latents(specs, 3, 6)
    out = model.rollout(past, future)
    assert "perm" not in out and list(out) == [s.name for s in specs if s.role != "aux"]
    for spec in specs:
        if spec.role != "aux":
            assert out[spec.name].shape == (3, future, *spec.shape)
    # held fields: masks at their last observed value; content last (lstm) or mean (lstm-delta)
    for name in ("obj_mask",) if specs is SLOTS else ():
        assert torch.equal(out[name], past[name][:, -1:].expand_as(out[name]))
    held = past["content" if specs is FLAT else "background"]
    want = held[:, -1] if kind == "lstm" else held.mean(1)
    got = out["content" if specs is FLAT else "background"]
    assert torch.allclose(got, want[:, None].expand_as(got))
    assert all(torch.isfinite(v).all() for v in out.values())


def test_roles_decide_inputs_and_outputs():
    model = tiny("lstm", SLOTS)
    assert model.pose_names == ["obj_pose", "obj_where"]
    assert model.held_names == ["background", "obj_content", "obj_mask"]
    assert (model.pose_dim, model.held_dim) == (14, 12)
    assert model.embed.in_features == 26
    assert tiny("lstm-delta", SLOTS).embed.in_features == 12 + 2 * 14
    with pytest.raises(StoreError, match="role pose or where"):
        tiny("lstm", [FieldSpec("content", "content", (5,))])
    with pytest.raises(DataError, match="obj_mask"):
        model.rollout({k: v for k, v in latents(SLOTS, 2, 4).items() if k != "obj_mask"}, 3)


def test_normalisation_round_trips_store_units():
    model = tiny("lstm-delta", SLOTS)
    model.set_stats(
        {n: np.full(s.shape[-1:], 3.0) for n, s in model.fields.items()},
        {n: np.full(s.shape[-1:], 0.5) for n, s in model.fields.items()},
    )
    x = latents(SLOTS, 2, 5)
    flat = model.flat_pose(x)
    assert flat.shape == (2, 5, 14)
    assert torch.allclose(flat[..., :6].reshape(2, 5, 2, 3), (x["obj_pose"] - 3) / 0.5)
    back = model.unflat_pose(flat)
    assert all(torch.allclose(back[n], x[n], atol=1e-5) for n in model.pose_names)


def test_delta_with_zero_output_holds_the_last_pose():
    model = tiny("lstm-delta", SLOTS)
    model.set_stats(  # non-trivial statistics must not break the identity
        {n: np.full(s.shape[-1:], 2.0) for n, s in model.fields.items()},
        {n: np.full(s.shape[-1:], 3.0) for n, s in model.fields.items()},
    )
    model.set_delta_scale({n: np.full(model.fields[n].shape[-1:], 0.1) for n in model.pose_names})
    zero_head(model)
    past = latents(SLOTS, 2, 5)
    out = model.rollout(past, 7)
    for name in model.pose_names:
        assert torch.allclose(out[name], past[name][:, -1:].expand_as(out[name]), atol=1e-5)


def test_losses_are_l2_for_lstm_and_huber_for_delta():
    # zero outputs, unit statistics; true poses 3*t, so every target is far beyond the Huber knee
    window = {"content": torch.zeros(2, 6, 5), "pose": 3.0 * torch.arange(6.0)[None, :, None]}
    window["pose"] = window["pose"].expand(2, 6, 3)
    lstm, delta = tiny("lstm", FLAT), tiny("lstm-delta", FLAT)
    zero_head(lstm)
    zero_head(delta)
    # lstm: l2 between predicted pose 0 and true poses of frames 2..5
    want = torch.tensor([6.0, 9.0, 12.0, 15.0]).pow(2).mean()
    assert torch.allclose(lstm(window, past=3).loss, want)
    # lstm-delta: Huber (delta 1) between predicted difference 0 and true difference 3
    assert torch.allclose(delta(window, past=3).loss, torch.tensor(3.0 - 0.5))
    delta2 = tiny("lstm-delta", FLAT, huber_delta=10.0)
    zero_head(delta2)
    assert torch.allclose(delta2(window, past=3).loss, torch.tensor(0.5 * 9.0))  # quadratic zone
    # future_mse: the held pose (frame 2) against frames 3..5
    out = delta(window, past=3)
    assert torch.allclose(out.future_mse, torch.tensor([3.0, 6.0, 9.0]).pow(2).mean())


def test_forward_rejects_windows_without_a_future():
    with pytest.raises(DataError, match="past"):
        tiny("lstm", FLAT)(latents(FLAT, 2, 5), past=5)


def linear_motion(b: int, t: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Poses start anywhere in [-1, 1] and move at a constant velocity in [-0.2, 0.2] per frame."""
    start = torch.rand(b, 1, 3, generator=gen) * 2 - 1
    velocity = torch.rand(b, 1, 3, generator=gen) * 0.4 - 0.2
    pose = start + velocity * torch.arange(t, dtype=torch.float32)[None, :, None]
    return {"content": torch.zeros(b, t, 5), "pose": pose}


@pytest.mark.parametrize("force_future", [False, True])
def test_delta_learns_to_extrapolate_linear_motion(force_future):
    torch.manual_seed(0)
    cfg = PredictorConfig(kind="lstm-delta", hidden=32, layers=1, dropout=0.0, input_noise=0.0)
    model = build_predictor(cfg, FLAT)
    model.set_delta_scale({"pose": np.full(3, 0.1)})
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        opt.zero_grad()
        model(linear_motion(32, 8, gen), past=4, force_future=force_future).loss.backward()
        opt.step()
    # roll out 4x further than the 4 future frames it trained on: stays near the line
    test = linear_motion(64, 20, gen)
    with torch.no_grad():
        out = model.rollout({k: v[:, :4] for k, v in test.items()}, 16)
    err = (out["pose"] - test["pose"][:, 4:]).abs().mean()
    held = (test["pose"][:, 3:4] - test["pose"][:, 4:]).abs().mean()  # holding the last pose
    assert err < 0.15 * held, (err, held)


@pytest.mark.parametrize("kind", ["lstm", "lstm-delta"])
def test_noise_and_dropout_act_in_training_only(kind):
    model = tiny(kind, FLAT, dropout=0.3, input_noise=0.5)
    window = latents(FLAT, 4, 8)
    model.train()
    torch.manual_seed(1)
    a = model(window, past=4).loss
    torch.manual_seed(2)
    b = model(window, past=4).loss
    assert not torch.allclose(a, b)  # noisy inputs and dropout: two draws differ
    model.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        c = model(window, past=4).loss
        torch.manual_seed(2)
        d = model(window, past=4).loss
    assert torch.equal(c, d)
    clean = tiny(kind, FLAT).eval()
    clean.load_state_dict(model.state_dict())  # no parameters of their own: same weights fit
    with torch.no_grad():
        assert torch.equal(clean(window, past=4).loss, c)


def test_weight_decay_acts_on_weights_not_biases():
    model = tiny("lstm-delta", FLAT, weight_decay=0.01)
    groups = model.make_optimizers(1e-3)["adam"].param_groups
    decay = {id(p) for g in groups if g["weight_decay"] == 0.01 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decay}
    assert names and all("weight" in n for n in names)
    assert len(decay) + sum(len(g["params"]) for g in groups if not g["weight_decay"]) == len(
        list(model.parameters())
    )


def test_state_follows_device_and_dtype():
    model = tiny("lstm", FLAT).double()
    h, c = model.init_state(3)
    assert h.shape == (2, 3, 16) and h.dtype == torch.float64 and not h.any() and not c.any()
