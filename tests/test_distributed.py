"""Scale-out: torchrun training on 2 CPU ranks (gloo), encode on a dask cluster, fsspec URLs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
import torch
import yaml
from helpers import exact_rows, write_store

from vidlat.errors import ConfigError
from vidlat.progress import set_quiet
from vidlat.stages.common import distributed
from vidlat.stages.common.checkpoint import load_checkpoint
from vidlat.stages.common.runtime import Amp, seed_everything
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.training.loop import StepContext
from vidlat.stages.training.samplers import FramePairSampler
from vidlat.stages.training.train_ae import TrainAEConfig
from vidlat.stages.training.train_predictor import (
    TrainPredictorConfig,
    build_run,
    to_device,
    train_predictor,
    train_step,
)
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler
from vidlat.store.videos import open_videos

TINY_DRNET = {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8}
PREDICTOR = {"kind": "lstm", "hidden": 8, "layers": 1, "past": 3, "future": 3, "steps": 6,
             "batch_size": 4, "lr": 0.01, "device": "cpu", "log_every": 3, "val_every": 3,
             "val_batches": 1, "checkpoint_every": 3,
             "dropout": 0.0, "input_noise": 0.0}  # fmt: skip  # deterministic: exact averages


@pytest.fixture(autouse=True)
def quiet_one_thread(one_thread):
    set_quiet(True)  # in-process reference runs of tiny LSTMs: one thread (conftest), no bars


CAUSE = re.compile(r'Error|error:|terminate called|what\(\)|Fatal|Abort|Traceback|^\s+File "')


def make_store(path, n_videos=12, n_frames=8):
    """Smooth random-walk poses and constant contents; videos 0-9 train, 10-11 val."""
    rng = np.random.default_rng(0)
    data = {
        "pose": np.cumsum(rng.normal(0, 0.3, (n_videos, n_frames, 3)), axis=1),
        "content": np.repeat(rng.normal(size=(n_videos, 1, 4)), n_frames, axis=1),
    }
    fields = [FieldSpec("content", "content", (4,)), FieldSpec("pose", "pose", (3,))]
    split = {"train": list(range(n_videos - 2)), "val": [n_videos - 2, n_videos - 1]}
    write_store(path, fields, data, split=split)
    return data


def torchrun(tmp_path, command: str, config: dict, *args: str, code: int = 0) -> str:
    """`torchrun --standalone --nproc-per-node 2 -m vidlat COMMAND --config FILE ARGS --quiet`."""
    config_file = tmp_path / f"{command}-{uuid.uuid4().hex[:6]}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "vidlat", command, "--config", str(config_file), *args, "--quiet"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONFAULTHANDLER"] = "1"  # a worker killed by a signal prints its Python stacks
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    # torchrun ends with its own summary; the worker's error lines go last so a tail shows them
    cause = [ln for ln in run.stderr.splitlines() if CAUSE.search(ln)]
    assert run.returncode == code, "\n".join(
        [run.stdout, run.stderr, "worker errors:", *cause[-40:]]
    )
    return run.stdout + run.stderr


def metrics(out) -> list[dict]:
    return exact_rows(out / "metrics.jsonl")  # timing keys differ run to run


def check_two_ranks(out) -> dict:
    """The latest checkpoint was gathered from 2 ranks holding rank 0's saved weights exactly."""
    ckpt = load_checkpoint(out)
    ranks = ckpt.train_state["sampler"]
    assert ckpt.meta["world_size"] == ranks["world_size"] == len(ranks["ranks"]) == 2
    a, b = ranks["ranks"]
    assert a["weights"] == b["weights"] == distributed.state_digest(ckpt.module_state("model"))
    assert a["sampler"]["rng"] != b["sampler"]["rng"]  # each rank drew its own batches
    assert a["rng"]["torch"] != b["rng"]["torch"]
    return ckpt.train_state


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "lat.zarr"
    make_store(path)
    return path


@pytest.fixture(scope="module")
def predictor_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("pred") / "run"
    torchrun(out.parent, "train-predictor", PREDICTOR, "--latents", str(store), "--out", str(out))
    return out


def reference_weights(store, cfg: TrainPredictorConfig, ranks: int) -> dict[str, torch.Tensor]:
    """One process stepping on the union of ranks 0..ranks-1's batches (what averaging is for)."""
    seed_everything(cfg.seed)
    model, _ = build_run(LatentStore.open(store), cfg)
    optimizers = model.make_optimizers(cfg.lr)
    samplers = [
        WindowSampler(
            LatentStore.open(store),
            window=cfg.past + cfg.future,
            batch_size=cfg.batch_size,
            fields=list(model.fields),
            seed=cfg.seed,
            rank=r,
            world_size=2,
        )  # fmt: skip
        for r in range(ranks)
    ]
    for _ in range(cfg.steps):
        parts = [s.sample() for s in samplers]
        window = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ctx = StepContext(optimizers, Amp(torch.device("cpu")), distributed.direct)
        train_step(model, to_device(window, "cpu"), ctx, cfg)
    return model.state_dict()


def test_torchrun_train_predictor_averages_gradients_and_rank0_writes(store, predictor_run):
    out = predictor_run
    written = sorted(p.name for p in out.iterdir() if p.name != "tensorboard")  # when installed
    assert written == [".lock", "checkpoints", "config.yaml", "metrics.jsonl"]  # .lock: rank 0's
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best", "latest", "step_000003", "step_000006"
    ]  # fmt: skip
    rows = [(r["step"], tuple(sorted(r))) for r in metrics(out)]
    assert [step for step, _ in rows] == [3, 3, 6, 6] and len(set(rows)) == len(rows)
    check_two_ranks(out)
    # Averaged gradients of 2 batches of B = one process's gradient on the 2B windows.
    saved = load_checkpoint(out).module_state("model")
    cfg = TrainPredictorConfig(**PREDICTOR)
    both, rank0 = reference_weights(store, cfg, 2), reference_weights(store, cfg, 1)
    for name, value in saved.items():
        torch.testing.assert_close(value, both[name], rtol=1e-4, atol=1e-5)
    assert any(not torch.allclose(saved[k], rank0[k], atol=1e-3) for k in saved)


def test_torchrun_resume_equals_uninterrupted_and_other_world_sizes_resume(
    store, predictor_run, tmp_path
):
    part = tmp_path / "part"
    shutil.copytree(predictor_run, part)  # as if killed after the step-3 checkpoint
    shutil.rmtree(part / "checkpoints" / "step_000006")
    (part / "checkpoints" / "latest").write_text("step_000003\n")
    torchrun(tmp_path, "train-predictor", PREDICTOR, "--latents", str(store), "--out", str(part),
             "--resume")  # fmt: skip
    assert metrics(part) == metrics(predictor_run)
    whole = load_checkpoint(predictor_run).module_state("model")
    resumed = load_checkpoint(part).module_state("model")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert check_two_ranks(part) == load_checkpoint(predictor_run).train_state
    # One process continues the 2-rank run: a reseeded, deterministic stream of windows.
    cfg = TrainPredictorConfig(**{**PREDICTOR, "steps": 8})
    digests = []
    for name in ("one_a", "one_b"):
        shutil.copytree(predictor_run, tmp_path / name)
        train_predictor(LatentStore.open(store), cfg, tmp_path / name, resume=True)
        ckpt = load_checkpoint(tmp_path / name)
        assert ckpt.step == 8 and ckpt.meta["world_size"] == 1 and "ranks" not in ckpt.train_state
        digests.append(distributed.state_digest(ckpt.module_state("model")))
    assert digests[0] == digests[1]


def test_torchrun_user_error_is_one_line_per_rank(store, predictor_run, tmp_path):
    before = load_checkpoint(predictor_run).step
    output = torchrun(tmp_path, "train-predictor", PREDICTOR, "--latents", str(store), "--out",
                      str(predictor_run), code=1)  # fmt: skip
    assert "already holds a checkpoint; pass --resume" in output
    # rank 1 either sees rank 0 leave (one line: "rank 1 of 2 stopped: another rank ...") or is
    # stopped by torchrun first; neither way a traceback of gloo's
    assert "[rank0]: Traceback" not in output and "[rank1]: Traceback" not in output
    assert load_checkpoint(predictor_run).step == before


def test_torchrun_train_ae_drnet_two_optimisers_stay_in_sync(tiny_videos, tmp_path):
    out = tmp_path / "ae"
    config = {"model": "drnet", "model_params": TINY_DRNET, "steps": 4, "batch_size": 4,
              "max_k": 3, "device": "cpu", "log_every": 2, "sample_every": 2, "val_every": 0,
              "checkpoint_every": 2}  # fmt: skip
    torchrun(tmp_path, "train-ae", config, "--data", str(tiny_videos), "--out", str(out))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "latest", "step_000002", "step_000004"
    ]  # fmt: skip
    assert [r["step"] for r in metrics(out)] == [2, 4]
    assert {"rec", "critic"} <= metrics(out)[0].keys()
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step_000002.png", "step_000004.png"
    ]  # fmt: skip
    check_two_ranks(out)  # encoders/decoder and critic: equal on both ranks (and BN statistics)


def test_torchrun_train_generator_three_updates_stay_in_sync(store, tmp_path):
    out = tmp_path / "avlae"
    config = {"frames": 6, "z_dim": 4, "w_dim": 6, "hidden": 16, "mapping_layers": 2, "steps": 4,
              "batch_size": 4, "device": "cpu", "log_every": 2, "eval_every": 2,
              "eval_samples": 8, "checkpoint_every": 4}  # fmt: skip
    torchrun(tmp_path, "train-generator", config, "--latents", str(store), "--out", str(out))
    rows = metrics(out)
    assert [r["step"] for r in rows if "loss_d" in r] == [2, 4]
    assert [r["step"] for r in rows if "latent_fd" in r] == [0, 2, 4]  # rank 0 alone evaluates
    check_two_ranks(out)  # discriminator, generator and encoders: equal on both ranks


def test_pair_sampler_ranks_stream_disjoint_chunks(tiny_videos):
    videos = open_videos(tiny_videos)
    cfg = TrainAEConfig(batch_size=3, max_k=2, memory_budget=1, refresh_every=2)
    samplers = [FramePairSampler(videos, cfg, rank=r, world_size=2) for r in (0, 1)]
    mine = [set(s.chunks.tolist()) for s in samplers]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(samplers[0].indices // 4)
    for sampler, chunks in zip(samplers, mine, strict=True):
        drawn = np.concatenate([sampler.sample()["video"] for _ in range(6)])
        assert set((drawn // 4).tolist()) <= chunks


def test_world_size_without_rank_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        distributed.setup("cpu")


def test_encode_on_a_dask_cluster_equals_threads_and_loads_once_per_worker(
    tiny_videos, tiny_ae, tmp_path
):
    from distributed import Client, LocalCluster

    cfg = EncodeConfig(device="cpu", batch_size=16)
    threads = LatentStore.open(encode(tiny_videos, tiny_ae, tmp_path / "t.zarr", cfg))

    def count_loads() -> None:  # runs on each worker: count encoder loads from now on
        import vidlat.stages.inference.encode as enc

        real = enc.load_run

        def counted(*args, **kwargs):
            enc.LOADS = getattr(enc, "LOADS", 0) + 1
            return real(*args, **kwargs)

        enc.load_run = counted

    def loads() -> tuple[int, int]:
        import vidlat.stages.inference.encode as enc

        return getattr(enc, "LOADS", 0), len(enc._MODELS)

    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(count_loads)
        on_cluster = cfg.model_copy(update={"scheduler": cluster.scheduler_address})
        out = encode(tiny_videos, tiny_ae, tmp_path / "c.zarr", on_cluster)
        per_worker = list(client.run(loads).values())
    cluster_store = LatentStore.open(out)
    for name in threads.fields:
        np.testing.assert_array_equal(
            threads.read(name, slice(None)), cluster_store.read(name, slice(None))
        )
    # 3 chunks on 2 workers: a worker that ran tasks loaded the model once, never once per task
    assert all(n_loads == cached <= 1 for n_loads, cached in per_worker), per_worker
    assert 1 <= sum(n for n, _ in per_worker) < threads.n_chunks


def test_latent_store_at_an_fsspec_url_trains_a_predictor(tmp_path):
    url = f"memory://vidlat-{uuid.uuid4().hex}/lat.zarr"
    data = make_store(url)
    store = LatentStore.open(url)
    assert store.path == url and store.complete
    np.testing.assert_allclose(store.read("pose", [3, 11]), data["pose"][[3, 11]], rtol=1e-6)
    cfg = TrainPredictorConfig(**{**PREDICTOR, "steps": 2, "memory_budget": 1, "buffer_chunks": 1})
    out = train_predictor(store, cfg, tmp_path / "run")  # streaming: chunks read from the URL
    assert load_checkpoint(out).meta["store_path"] == url
