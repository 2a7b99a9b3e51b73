"""AVLAE in latent space: Fréchet distance, Algorithm 1, held codes, training, decoding."""

import json
import typing

import numpy as np
import pytest
import torch
from helpers import exact_rows, write_store
from PIL import Image

from vidlat.errors import CheckpointError, ConfigError, DataError
from vidlat.pipeline.unconditional import UnconditionalConfig, generate_unconditional
from vidlat.progress import set_quiet
from vidlat.stages.common.runtime import Amp
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.inference.rollout import sample_sequences
from vidlat.stages.load import load_run
from vidlat.stages.stage2.avlae import (
    AVLAE,
    GENERATORS,
    GeneratorConfig,
    discriminator_step,
    generator_step,
    reconstruction_step,
    video_code,
)
from vidlat.stages.training.train_generator import (
    TrainGeneratorConfig,
    latent_frechet_distance,
    train_generator,
)
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore

SLOTS = [
    FieldSpec("background", "content", (4,)),
    FieldSpec("obj_pose", "pose", (2, 3)),
    FieldSpec("obj_mask", "mask", (2,)),
    FieldSpec("perm", "aux", (2,), dtype="int64"),
]
TINY = {"frames": 6, "z_dim": 4, "w_dim": 6, "hidden": 16, "mapping_layers": 2}
CPU = Amp(torch.device("cpu"))


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(specs=SLOTS, **kw) -> AVLAE:
    torch.manual_seed(0)
    model = AVLAE(specs, GeneratorConfig(**{**TINY, **kw}))
    means = {s.name: np.full(s.shape[-1:], 3.0) for s in specs if s.role != "aux"}
    stds = {s.name: np.full(s.shape[-1:], 2.0) for s in specs if s.role != "aux"}
    model.set_stats(means, stds, {"obj_pose": np.full(3, 0.5)})
    return model.eval()


def make_store(path, n_videos=40, n_frames=12):
    """Sinusoidal poses (random frequency, phase per video), constant content per video."""
    rng = np.random.default_rng(0)
    t = np.arange(n_frames)[None, :, None]
    freq, phase = rng.uniform(0.3, 0.6, (n_videos, 1, 3)), rng.uniform(0, 6.3, (n_videos, 1, 3))
    data = {
        "pose": 5.0 * np.sin(freq * t + phase) + 2.0,
        "content": np.repeat(rng.normal(size=(n_videos, 1, 4)), n_frames, axis=1),
    }
    fields = [FieldSpec("content", "content", (4,)), FieldSpec("pose", "pose", (3,))]
    split = {"train": list(range(n_videos))}
    return write_store(path, fields, data, split=split, encoder_hash="ef" * 32, videos_per_chunk=8)


def train_config(**kw) -> TrainGeneratorConfig:
    base = {"frames": 8, "z_dim": 8, "w_dim": 8, "hidden": 32, "mapping_layers": 3}
    base |= {"steps": 200, "batch_size": 32, "lr": 1e-3, "device": "cpu", "log_every": 50}
    base |= {"eval_every": 100, "eval_samples": 256, "checkpoint_every": 100}
    return TrainGeneratorConfig(**{**base, **kw})


def rows(out) -> list[dict]:
    return exact_rows(out / "metrics.jsonl")  # timing keys differ run to run


# -- the latent Fréchet distance


def test_latent_fd_is_zero_for_equal_statistics_and_exact_otherwise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    y = rng.normal(size=(400, 5)) * [1, 2, 3, 0.5, 1] + 0.3
    assert latent_frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0])
    assert latent_frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    # the textbook form: tr(S1 + S2 - 2 (S1 S2)^½), via the eigenvalues of the non-symmetric S1 S2
    s1, s2 = np.cov(x.T), np.cov(y.T)
    cross = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(min=0)).sum()
    want = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross
    assert latent_frechet_distance(x, y) == pytest.approx(want, rel=1e-8)
    assert latent_frechet_distance(torch.from_numpy(y), x) == pytest.approx(want, rel=1e-8)
    assert latent_frechet_distance(x, y) > 1.0
    with pytest.raises(DataError, match=r"\(N, D\)"):
        latent_frechet_distance(x, y[:, :4])


# -- networks, losses, Algorithm 1


def test_algorithm_1_steps_are_finite_and_update_their_own_networks():
    model = tiny_model().train()
    opts = model.make_optimizers(1e-2)
    real = model.from_store({s.name: torch.randn(8, 6, *s.shape) for s in SLOTS[:3]})
    assert real[0].shape == (8, 4 + 2) and real[1].shape == (8, 6, 6)  # static once, pose per frame
    owners = {
        "I": {"e_a", "e_m", "d_i", "d_v_seq", "d_v"},
        "II": {"f_a", "f_m", "g"},
        "III": {"e_a", "e_m", "g"},
    }
    steps = {
        "I": lambda: discriminator_step(model, real, opts["disc"], CPU),
        "II": lambda: generator_step(model, 8, 6, opts["gen"], CPU),
        "III": lambda: reconstruction_step(model, 8, 6, opts, CPU),
    }
    for name, step in steps.items():
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loss = step()
        assert torch.isfinite(loss), name
        changed = {
            k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])
        }
        assert changed == owners[name], (name, changed)


def test_sampled_sequences_have_store_shapes_units_and_repeat_with_a_seed():
    model = tiny_model()
    seqs = sample_sequences(model, 5, seed=3)
    assert list(seqs) == ["background", "obj_pose", "obj_mask"]
    assert {k: tuple(v.shape) for k, v in seqs.items()} == {
        "background": (5, 6, 4), "obj_pose": (5, 6, 2, 3), "obj_mask": (5, 6, 2)
    }  # fmt: skip
    assert torch.equal(seqs["background"], seqs["background"][:, :1].expand(-1, 6, -1))  # static
    assert abs(float(seqs["background"].mean()) - 3.0) < 1.0  # store units: mean 3, std 2
    again = sample_sequences(model, 5, seed=3)
    assert all(torch.equal(seqs[k], again[k]) for k in seqs)
    other = sample_sequences(model, 5, seed=4)
    assert not torch.equal(seqs["obj_pose"], other["obj_pose"])
    assert sample_sequences(model, 2, frames=20)["obj_pose"].shape == (2, 20, 2, 3)  # any T
    with pytest.raises(ConfigError, match="appearance"):
        sample_sequences(model, 2, fix="colour")


def differs(x: torch.Tensor) -> bool:
    """Every pair of the N sequences (N, ...) differs somewhere by more than round-off."""
    return all((x[i] - x[j]).abs().amax() > 1e-3 for i in range(len(x)) for j in range(i))


def test_video_code_is_the_pair_of_codes_of_eq_2():
    """W_V = W_A x W_M (§4.1): a sample is (w_A, w_M), the codes concatenated; not a product of
    their entries."""
    w_a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w_m = torch.tensor([[5.0, 6.0, 7.0], [8.0, 9.0, 10.0]])
    w_v = video_code(w_a, w_m)
    assert w_v.shape == (2, 5)
    assert torch.equal(w_v, torch.tensor([[1.0, 2, 5, 6, 7], [3, 4, 8, 9, 10]]))
    shared = video_code(w_a[:1], w_m)  # one appearance code for both sequences
    assert torch.equal(shared, torch.tensor([[1.0, 2, 5, 6, 7], [1, 2, 8, 9, 10]]))
    one_motion = video_code(w_a, w_m[1:])  # one motion code for both
    assert torch.equal(one_motion, torch.tensor([[1.0, 2, 8, 9, 10], [3, 4, 8, 9, 10]]))


def test_the_papers_joint_generator_reads_both_codes_in_every_output():
    choices = typing.get_args(GeneratorConfig.model_fields["generator"].annotation)
    assert set(GENERATORS) == set(choices)  # the registry is the config's choices
    joint, split = tiny_model(), tiny_model(generator="split")
    assert joint.cfg.generator == "joint"  # the default
    assert joint.g.static[0].in_features == joint.g.lstm.input_size == 2 * TINY["w_dim"]
    assert split.g.static[0].in_features == split.g.lstm.input_size == TINY["w_dim"]
    w_a, w_m = torch.randn(3, 6), torch.randn(3, 6)
    other_m, other_a = w_m + torch.randn(3, 6), w_a + torch.randn(3, 6)
    with torch.no_grad():
        for model, built_in in ((joint, False), (split, True)):
            static, pose = model.g(w_a, w_m, 5, model.step_scale)
            assert static.shape == (3, 6) and pose.shape == (3, 5, 6)
            static_m, pose_m = model.g(w_a, other_m, 5, model.step_scale)  # other motion code
            _, pose_a = model.g(other_a, w_m, 5, model.step_scale)  # other appearance code
            held_look = torch.equal(static, static_m) and torch.equal(pose[:, 0], pose_m[:, 0])
            steps, steps_a = torch.diff(pose, dim=1), torch.diff(pose_a, dim=1)
            assert held_look == built_in  # joint: w_M moves the look too
            assert torch.allclose(steps, steps_a, atol=1e-6) == built_in  # joint: w_A the moves
            assert not torch.allclose(torch.diff(pose_m, dim=1), steps)  # w_M moves it anyway


def test_fixing_one_code_holds_exactly_that_code_with_the_split_generator():
    model = tiny_model(generator="split")
    # appearance = the static fields and the first pose; motion = the pose differences
    same_look = sample_sequences(model, 4, fix="appearance", seed=0)
    for name in ("background", "obj_mask"):
        assert torch.equal(same_look[name], same_look[name][:1].expand_as(same_look[name]))
    pose = same_look["obj_pose"]
    assert torch.equal(pose[:, 0], pose[:1, 0].expand_as(pose[:, 0]))  # the same start
    assert differs(torch.diff(pose, dim=1))  # moving differently
    same_moves = sample_sequences(model, 4, fix="motion", seed=0)
    steps = torch.diff(same_moves["obj_pose"], dim=1)  # (4, T-1, 2, 3)
    assert torch.allclose(steps, steps[:1].expand_as(steps), atol=1e-5)
    assert differs(same_moves["background"]) and differs(same_moves["obj_pose"][:, 0])
    free = sample_sequences(model, 4, seed=0)
    assert differs(free["background"]) and differs(torch.diff(free["obj_pose"], dim=1))
    joint = tiny_model()  # the paper's G: the held code is shared, every field may still move
    same_look = sample_sequences(joint, 4, fix="appearance", seed=0)
    assert differs(same_look["background"]) and differs(torch.diff(same_look["obj_pose"], dim=1))


# -- training from the store


def test_latent_fd_falls_while_training_from_a_tiny_store(tmp_path):
    store = make_store(tmp_path / "latents.zarr")
    out = train_generator(store, train_config(), tmp_path / "run")
    fd = [r["latent_fd"] for r in rows(out) if "latent_fd" in r]  # steps 0, 100, 200
    assert len(fd) == 3 and fd[-1] < 0.7 * fd[0], fd
    losses = [r for r in rows(out) if "loss_d" in r]
    assert len(losses) == 4 and all(np.isfinite(list(r.values())).all() for r in losses)
    model, meta = load_run(out, "generator")
    assert meta["kind"] == "generator" and meta["encoder_hash"] == "ef" * 32
    assert meta["config"]["generator"] == model.cfg.generator == "joint"  # the paper's G
    assert not model.training
    assert sample_sequences(model, 3)["pose"].shape == (3, 8, 3)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    store = make_store(tmp_path / "latents.zarr", n_videos=16)
    cfg = train_config(steps=4, log_every=1, eval_every=2, eval_samples=16, checkpoint_every=2)
    whole = train_generator(store, cfg, tmp_path / "whole")
    part = train_generator(store, cfg.model_copy(update={"steps": 2}), tmp_path / "part")
    with pytest.raises(CheckpointError, match="--resume"):
        train_generator(store, cfg, part)
    with pytest.raises(CheckpointError, match="w_dim"):
        train_generator(store, cfg.model_copy(update={"w_dim": 4}), part, resume=True)
    train_generator(store, cfg, part, resume=True)
    assert rows(part) == rows(whole)


def test_a_run_saved_before_the_joint_generator_loads_as_the_split_one(tmp_path):
    store = make_store(tmp_path / "latents.zarr", n_videos=16)
    cfg = train_config(steps=2, eval_every=0, checkpoint_every=2, generator="split")
    out = train_generator(store, cfg, tmp_path / "old")
    want = sample_sequences(load_run(out, "generator")[0], 3, seed=1)
    for path in out.rglob("state.json"):  # as vidlat wrote them then: no `generator` key
        state = json.loads(path.read_text())
        del state["meta"]["config"]["generator"]
        path.write_text(json.dumps(state))
    model, meta = load_run(out, "generator")
    assert "generator" not in meta["config"] and model.cfg.generator == "split"
    got = sample_sequences(model, 3, seed=1)
    assert all(torch.equal(got[k], want[k]) for k in want)  # the same weights, the same G
    # resuming it under today's default would change G: refused by name, before any weights load
    with pytest.raises(CheckpointError, match="generator: split -> joint"):
        train_generator(store, cfg.model_copy(update={"generator": "joint", "steps": 4}), out, True)
    train_generator(store, cfg.model_copy(update={"steps": 4}), out, resume=True)  # as it was


# -- decoding through stage 1


def test_generate_unconditional_writes_gifs_and_refuses_another_encoder(
    tiny_videos, plain_ae, tiny_ae, other_ae, tmp_path
):
    set_quiet(True)
    store = encode(tiny_videos, plain_ae, tmp_path / "lat.zarr", EncodeConfig(device="cpu"))
    # the split G, whose fixed appearance holds the content exactly (the joint G's need not)
    cfg = train_config(frames=6, steps=2, eval_every=0, checkpoint_every=2, generator="split")
    gen = train_generator(LatentStore.open(store), cfg, tmp_path / "gen")
    out = tmp_path / "out"
    summary = generate_unconditional(
        plain_ae, gen, 3, "appearance", out, UnconditionalConfig(device="cpu", frames=9)
    )
    assert summary["sequences"] == 3 and summary["frames"] == 9 and summary["fix"] == "appearance"
    assert sorted(p.name for p in (out / "gifs").iterdir()) == ["000.gif", "001.gif", "002.gif"]
    assert Image.open(out / "gifs" / "000.gif").size == (32, 32)
    assert Image.open(out / "grid.png").width >= 9 * 32
    latents = np.load(out / "latents.npz")
    assert latents["content"].shape[:2] == (3, 9) and latents["pose"].shape[:2] == (3, 9)
    np.testing.assert_array_equal(latents["content"][0], latents["content"][2])  # same appearance
    with pytest.raises(CheckpointError) as err:
        generate_unconditional(other_ae, gen, 2, None, tmp_path / "x", UnconditionalConfig())
    assert LatentStore.open(store).encoder_hash in str(err.value)  # names both encoders
    # a stage 1 with skips decodes from a content frame, which unconditional sequences lack
    skip_store = encode(tiny_videos, tiny_ae, tmp_path / "skip.zarr", EncodeConfig(device="cpu"))
    skip_gen = train_generator(LatentStore.open(skip_store), cfg, tmp_path / "gen_skip")
    with pytest.raises(ConfigError, match="skips"):
        generate_unconditional(tiny_ae, skip_gen, 2, None, tmp_path / "y", UnconditionalConfig())
