"""`vidlat train-predictor`: stage 2, a predictor trained on the latent store by the one driver.

Windows of past + future frames come from the store's train split through the WindowSampler; no
pixel is read and no stage-1 module is imported. Before training, the per-feature mean and std of
every latent field (and, for lstm-delta, the RMS frame-to-frame difference of each normalised pose
feature) are measured on up to `stats_videos` train videos and kept as buffers of the predictor, so
they are saved with its weights and latents of any scale train alike. Validation runs on the same
windows of the val split every time (its sampler is rewound), free-running over the future frames as
generate does; the checkpoint with the lowest val future MSE so far is kept and marked `best` (the
one `generate` and `evaluate` read by default; `--select latest` for the last). Resuming restores
weights, Adam moments, the sampler's RNG and buffer, and torch's RNG, so a resumed run equals an
uninterrupted one. Under torchrun each rank samples its own windows (its own chunks when streaming)
and rank 0 alone validates and writes; see vidlat.stages.common.distributed.

Given OnlineLatents instead of a store (`--source online`), the same loop trains on windows that the
frozen stage-1 encoder re-encodes from pixels every step, as DRNET's reference does: the baseline
that `vidlat bench` measures the store against (vidlat.stages.training.online).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlat.config import Config
from vidlat.errors import ConfigError, StoreError
from vidlat.stages.common import distributed
from vidlat.stages.common.runs import ResumeRule
from vidlat.stages.common.runtime import Amp
from vidlat.stages.stage2 import build_predictor
from vidlat.stages.stage2.base import LatentPredictor
from vidlat.stages.stage2.lstm import DeltaLSTM
from vidlat.stages.training.configs import TrainPredictorConfig
from vidlat.stages.training.loop import Job, StepContext, train
from vidlat.stages.training.online import OnlineLatents, OnlineWindowSampler
from vidlat.store.format import PREDICTED_ROLES
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler

KIND = "predictor"
# Settings a resumed run may change: they steer the loop, not what the weights mean.
RESUME = ResumeRule(
    meta_keys=("fields", "encoder_hash"),
    free_config=frozenset(
        {"steps", "lr", "grad_clip", "device", "amp", "log_every", "val_every", "val_batches"}
        | {"checkpoint_every", "keep", "threads", "tensorboard"}
    ),
    hint="Resume with the same settings and data (--latents, or --data and --ae)",
)
# Where windows come from: a LatentStore, or OnlineLatents (pixels through the frozen encoder).
Source = LatentStore | OnlineLatents


DEFAULT_LR = 1e-3  # Adam, betas 0.9, 0.999 as DRNET


def latent_stats(
    store: Source, names: list[str], max_videos: int
) -> dict[str, dict[str, list[float]]]:
    """Per-feature statistics of up to `max_videos` train videos, evenly spread over the split.

    Returns {"mean": {field: (D,)}, "std": {field: (D,)}, "delta_rms": {pose field: (D,)}} as
    lists, D = shape[-1], taken over every other axis (videos, frames, slots). delta_rms is the RMS
    of frame-to-frame differences of the normalised pose. A constant feature gets std 1 (and an
    unmoving one delta_rms 1) rather than a division by zero.
    """
    train = np.unique(store.split.get("train", np.zeros(0, np.int64)))
    if not train.size:
        raise StoreError(f"{store.path} has no train videos; re-encode a dataset with a split")
    ids = train[np.linspace(0, len(train) - 1, min(max_videos, len(train))).round().astype(int)]
    out: dict[str, dict[str, list[float]]] = {"mean": {}, "std": {}, "delta_rms": {}}
    for name in names:
        x = store.read(name, np.unique(ids)).astype(np.float64)  # (v, T, *shape)
        per_feature = bool(store.fields[name].shape)  # a scalar-per-frame field has one feature
        axes = tuple(range(x.ndim - 1 if per_feature else x.ndim))
        mean, std = x.mean(axis=axes), x.std(axis=axes)
        std = np.where(std > 1e-6, std, 1.0)
        out["mean"][name], out["std"][name] = mean.tolist(), std.tolist()
        if store.fields[name].role in PREDICTED_ROLES:
            rms = np.sqrt((np.diff((x - mean) / std, axis=1) ** 2).mean(axis=axes))
            out["delta_rms"][name] = np.where(rms > 1e-6, rms, 1.0).tolist()
    return out


def build_run(store: Source, cfg: TrainPredictorConfig) -> tuple[LatentPredictor, dict]:
    """The predictor for `store` with its statistics set, and the meta its checkpoints carry."""
    model = build_predictor(cfg.predictor_config(), list(store.fields.values()))
    stats = latent_stats(store, list(model.fields), cfg.stats_videos)
    model.set_stats(stats["mean"], stats["std"])
    if isinstance(model, DeltaLSTM):
        model.set_delta_scale(stats["delta_rms"])
    return model, {**store_meta(store, KIND, cfg, stats), "predictor": cfg.kind}


def store_meta(store: Source, kind: str, cfg: Config, stats: dict) -> dict[str, Any]:
    """What a checkpoint of a model trained on `store` says about itself: its kind and config,
    the store's fields, encoder and source, and the normalisation statistics it measured."""
    return {
        "kind": kind,
        "config": cfg.model_dump(mode="json"),
        "fields": [spec.to_json() for spec in store.fields.values()],
        "encoder_hash": store.encoder_hash,
        "store_path": str(store.path),
        "source_fingerprint": (store.attrs.get("source") or {}).get("fingerprint"),
        "normalisation": stats,
    }


def to_device(
    batch: dict[str, np.ndarray | torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    """Host arrays (WindowSampler) or tensors (OnlineWindowSampler, already there) on `device`."""
    return {k: torch.as_tensor(v).to(device, non_blocking=True) for k, v in batch.items()}


def make_sampler(store: Source, **kw) -> WindowSampler | OnlineWindowSampler:
    """The sampler for what windows come from; both take WindowSampler's arguments `kw`."""
    if isinstance(store, OnlineLatents):
        return OnlineWindowSampler(store, **kw)
    return WindowSampler(store, **kw)


def check_source(store: Source, cfg: TrainPredictorConfig) -> None:
    """Refuse a config whose `source` names the other kind of data than the one given."""
    given = "online" if isinstance(store, OnlineLatents) else "store"
    if given != cfg.source:
        what = {
            "store": "a latent store (--latents)",
            "online": "videos and an encoder (--data, --ae)",
        }
        raise ConfigError(
            f"source {cfg.source!r} trains on {what[cfg.source]} but got {what[given]}; "
            f"set source: {given} or give the other data"
        )


def val_sampler(store: Source, cfg: TrainPredictorConfig, names: list[str]):
    """(sampler of the val split, its initial state) or None when the store has no val videos."""
    if cfg.val_every == 0 or not len(store.split.get("val", [])):
        return None
    sampler = make_sampler(
        store, window=cfg.past + cfg.future, batch_size=cfg.batch_size, split="val", fields=names,
        memory_budget=cfg.memory_budget, buffer_chunks=cfg.buffer_chunks, seed=cfg.seed + 1,
    )  # fmt: skip
    return sampler, sampler.state_dict()


@torch.no_grad()
def validate(model, val, cfg: TrainPredictorConfig, device: torch.device, amp: Amp) -> dict:
    """Mean loss and future MSE on the same val windows every time, free-running like generate."""
    sampler, start = val
    sampler.load_state_dict(start)  # rewind: every validation sees the same windows
    model.eval()
    sums = torch.zeros(2, device=device)
    for _ in range(cfg.val_batches):
        with amp.autocast():
            res = model(to_device(sampler.sample(), device), cfg.past)
        sums += torch.stack([res.loss.float(), res.future_mse.float()])
    model.train()
    loss, mse = (sums / cfg.val_batches).tolist()
    return {"val_loss": loss, "val_future_mse": mse}


def train_step(model, window: dict, ctx: StepContext, cfg: TrainPredictorConfig) -> dict:
    """One update on a window batch: {loss, future_mse, grad_norm} as tensors (no host sync).

    "adam" minimises forward's loss; a predictor with an adversary (svg) steps it in extra_step."""
    optimizer, amp = ctx.optimizers["adam"], ctx.amp
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        res = ctx.run(model, window, cfg.past, force_future=cfg.teacher_forcing == "all")
    amp.backward(res.loss)
    if amp.scaler is not None:
        amp.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
    amp.step(optimizer)
    model.extra_step(window, cfg.past, ctx.optimizers, amp, ctx.run)
    amp.update()
    return {"loss": res.loss.detach(), "future_mse": res.future_mse, "grad_norm": norm}


def used_settings(cfg: TrainPredictorConfig) -> dict[str, Any]:
    """The fields train-predictor fills in itself, as config.yaml records them: the learning rate
    (DEFAULT_LR unless given)."""
    return {"lr": cfg.lr or DEFAULT_LR}


def train_predictor(
    store: Source, cfg: TrainPredictorConfig, out: str | Path, resume: bool = False
) -> Path:
    """Train a stage-2 predictor on the train split of `store`; checkpoints and metrics in `out`.

    `store` is a LatentStore (cfg.source "store") or OnlineLatents (cfg.source "online": the
    encoder re-encodes pixel windows every step). Under torchrun every rank calls this; only rank 0
    writes into `out`."""
    check_source(store, cfg)
    used = used_settings(cfg)

    def build(ranks: distributed.Ranks) -> Job:
        device = ranks.device
        if isinstance(store, OnlineLatents):
            store.to(device)  # the encoder beside the predictor, on this rank's GPU under torchrun
        model, meta = build_run(store, cfg)
        model.to(device).train()
        names = list(model.fields)
        sampler = make_sampler(
            store, window=cfg.past + cfg.future, batch_size=cfg.batch_size, split="train",
            fields=names, memory_budget=cfg.memory_budget, buffer_chunks=cfg.buffer_chunks,
            seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size,
        )  # fmt: skip
        val = val_sampler(store, cfg, names) if ranks.is_main else None
        amp = Amp(device, cfg.amp)  # validation's autocast, as the driver's
        return Job(
            model, model.make_optimizers(used["lr"]), sampler, meta, RESUME,
            step=lambda window, ctx: train_step(model, to_device(window, device), ctx, cfg),
            validate=(lambda: validate(model, val, cfg, device, amp)) if val else None,
            val_every=cfg.val_every, best="val_future_mse", used=used,
        )  # fmt: skip

    # 1 thread: measured on the 2-core CPU, a 16-frame LSTM step took 121-173 ms with torch's 2
    # threads and 14-19 ms with 1 (issue 15)
    return train("train-predictor", cfg, out, resume, build, cpu_threads=1)
