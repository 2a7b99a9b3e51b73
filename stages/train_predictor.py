"""`vidlat train-predictor`: stage 2, one visible loop training a predictor on the latent store.

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
and rank 0 alone validates and writes; see vidlat.stages.distributed.

Given OnlineLatents instead of a store (`--source online`), the same loop trains on windows that the
frozen stage-1 encoder re-encodes from pixels every step, as DRNET's reference does: the baseline
that `vidlat bench` measures the store against (vidlat.stages.online).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from vidlat.config import write_resolved
from vidlat.errors import CheckpointError, ConfigError, StoreError
from vidlat.progress import progress_bar
from vidlat.stages import distributed
from vidlat.stages.checkpoint import LATEST, load_checkpoint, mark_best, save_checkpoint
from vidlat.stages.online import OnlineLatents, OnlineWindowSampler
from vidlat.stages.predictors import (
    DeltaLSTM,
    LatentPredictor,
    PredictorConfig,
    build_predictor,
)
from vidlat.stages.runs import ResumeRule
from vidlat.stages.runtime import Amp, rng_state, seed_everything
from vidlat.store.format import PREDICTED_ROLES, FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler

KIND = "predictor"
# Settings a resumed run may change: they steer the loop, not what the weights mean.
RESUME = ResumeRule(
    meta_keys=("fields", "encoder_hash"),
    free_config=frozenset(
        {"steps", "lr", "grad_clip", "device", "amp", "log_every", "val_every", "val_batches"}
        | {"checkpoint_every", "keep"}
    ),
    hint="Resume with the same settings and data (--latents, or --data and --ae)",
)
# Where windows come from: a LatentStore, or OnlineLatents (pixels through the frozen encoder).
Source = LatentStore | OnlineLatents


class TrainPredictorConfig(PredictorConfig):
    """Stage-2 training: the predictor (fields of PredictorConfig), its windows, how long, how."""

    past: int = Field(16, ge=1, description="observed frames P of a training window")
    future: int = Field(16, ge=1, description="predicted frames F of a training window")
    steps: int = Field(10000, ge=0, description="optimiser steps")
    batch_size: int = Field(64, ge=1, description="windows of P + F frames per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (betas 0.9, 0.999 as DRNET)")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm (0: no clipping)")
    seed: int = Field(0, description="seeds the weights and the window sampler")
    source: Literal["store", "online"] = Field(
        "store",
        description="store: windows of the latent store; online: pixel windows re-encoded by the "
        "frozen stage-1 encoder every step (DRNET's way, the baseline that `vidlat bench` "
        "measures; slower and heavier, kept for comparison)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision (fp16: CUDA)")
    log_every: int = Field(50, ge=1, description="steps between metrics.jsonl lines")
    val_every: int = Field(500, ge=0, description="steps between val-split losses (0: never)")
    val_batches: int = Field(4, ge=1, description="batches of val windows per validation")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints (and at end)")
    keep: int = Field(2, ge=1, description="checkpoints kept in checkpoints/")
    memory_budget: int = Field(
        2 * 2**30, ge=1, description="bytes of a split's latents held in memory before streaming"
    )
    buffer_chunks: int = Field(8, ge=1, description="store chunks buffered when streaming")
    stats_videos: int = Field(
        512, ge=1, description="train videos read to measure the normalisation statistics"
    )

    @model_validator(mode="after")
    def _window(self) -> TrainPredictorConfig:
        if self.past + self.future < 3:
            raise ValueError("past + future must be at least 3 frames")
        return self

    def predictor_config(self) -> PredictorConfig:
        return PredictorConfig(**self.model_dump(include=set(PredictorConfig.model_fields)))


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
    meta = {
        "kind": KIND,
        "predictor": cfg.kind,
        "config": cfg.model_dump(mode="json"),
        "fields": [spec.to_json() for spec in store.fields.values()],
        "encoder_hash": store.encoder_hash,
        "store_path": str(store.path),
        "source_fingerprint": (store.attrs.get("source") or {}).get("fingerprint"),
        "normalisation": stats,
    }
    return model, meta


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


def train_step(
    model, optimizers, amp: Amp, window: dict, cfg: TrainPredictorConfig
) -> torch.Tensor:
    """One update on a window batch; returns (loss, future_mse, grad_norm) without a host sync.

    "adam" minimises forward's loss; a predictor with an adversary (svg) steps it in extra_step."""
    optimizer = optimizers["adam"]
    optimizer.zero_grad(set_to_none=True)
    with amp.autocast():
        res = model(window, cfg.past, force_future=cfg.teacher_forcing == "all")
    amp.backward(res.loss)
    if amp.scaler is not None:
        amp.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
    amp.step(optimizer)
    model.extra_step(window, cfg.past, optimizers, amp)
    amp.update()
    return torch.stack([res.loss.detach().float(), res.future_mse.float(), norm.float()])


def train_predictor(
    store: Source, cfg: TrainPredictorConfig, out: str | Path, resume: bool = False
) -> Path:
    """Train a stage-2 predictor on the train split of `store`; checkpoints and metrics in `out`.

    `store` is a LatentStore (cfg.source "store") or OnlineLatents (cfg.source "online": the
    encoder re-encodes pixel windows every step). Under torchrun every rank calls this; only rank 0
    writes into `out`."""
    out = Path(out)
    check_source(store, cfg)
    # Setup: ranks and device, seed, model (with statistics), precision, optimiser, data.
    ranks = distributed.setup(cfg.device)  # a world of one without torchrun
    device = ranks.device
    if isinstance(store, OnlineLatents):
        store.to(device)  # the encoder beside the predictor, on this rank's GPU under torchrun
    seed_everything(cfg.seed)
    model, meta = build_run(store, cfg)
    meta["world_size"] = ranks.world_size  # a step saw world_size x batch_size windows
    model.to(device).train()
    amp = ranks.amp(cfg.amp, model)  # averages gradients over ranks after each backward
    optimizers = model.make_optimizers(cfg.lr)  # {"adam": ...} (svg adds its adversary's)
    names = list(model.fields)
    sampler = make_sampler(
        store, window=cfg.past + cfg.future, batch_size=cfg.batch_size, split="train",
        fields=names, memory_budget=cfg.memory_budget, buffer_chunks=cfg.buffer_chunks,
        seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size,
    )  # fmt: skip
    val = val_sampler(store, cfg, names) if ranks.is_main else None
    state = distributed.RankState(sampler, model, ranks, cfg.seed)
    step = distributed.start_run(ranks, out, resume, model, optimizers, amp, state, meta, RESUME)
    if ranks.is_main:
        write_resolved(cfg, out)
    saved = step if resume else -1
    # the lowest val future MSE so far; its checkpoint is marked `best` (generate's default)
    best = load_checkpoint(out, optimizers=False).train_state.get("best") if resume else None

    def checkpoint() -> None:  # every rank: state.state_dict() gathers from all of them
        train_state = {"sampler": state.state_dict(), "rng": rng_state(), "amp": amp.state_dict()}
        if ranks.is_main:
            train_state["best"] = best
            save_checkpoint(out, step, {"model": model}, optimizers, meta, cfg.keep, train_state)

    # Train: sample, forward, backward, clip, step; log (the only host sync), validate, checkpoint.
    sums, count, notes = torch.zeros(3, device=device), 0, {"train": "", "val": ""}
    bar_cm = progress_bar("train-predictor", cfg.steps, "steps")
    with distributed.open_log(out, ranks) as log, bar_cm as bar:
        bar.advance(step)
        while step < cfg.steps:
            window = to_device(sampler.sample(), device)  # {field: (B, P + F, *shape)}
            sums += train_step(model, optimizers, amp, window, cfg)
            step, count = step + 1, count + 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss, mse, norm = (ranks.mean(sums) / count).tolist()  # means over ranks
                row = {"step": step, "loss": loss, "future_mse": mse, "grad_norm": norm}
                log.write(json.dumps(row) + "\n")
                sums, count = torch.zeros_like(sums), 0
                notes["train"] = f"loss {loss:.4g}  future mse {mse:.4g}"
            improved = torch.zeros(1, device=device)
            if val and (step % cfg.val_every == 0 or step == cfg.steps):
                metrics = validate(model, val, cfg, device, amp)
                log.write(json.dumps({"step": step, **metrics}) + "\n")
                notes["val"] = f"val loss {metrics['val_loss']:.4g}"
                if best is None or metrics["val_future_mse"] < best:
                    best, improved[0] = metrics["val_future_mse"], 1.0
            if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                # rank 0 alone validates; every rank joins the checkpoint of a new best
                if ranks.mean(improved).item() > 0:
                    checkpoint()
                    saved = step
                    if ranks.is_main:
                        mark_best(out, step)
            log.flush()
            bar.note("  ".join(notes.values()))
            if step % cfg.checkpoint_every == 0 and saved != step:
                checkpoint()
                saved = step
            bar.advance()
    if saved != step:
        checkpoint()
    ranks.barrier()  # no rank leaves (closing its connections) while rank 0 still writes
    return out


def load_predictor(
    pred_dir: str | Path, device: torch.device | str = "cpu", select: str = LATEST
) -> tuple[LatentPredictor, dict[str, Any]]:
    """The predictor of a train-predictor run folder's latest checkpoint (select "best": the one
    with the lowest validation future MSE, latest if none was marked), on `device`, in eval mode,
    and the checkpoint's meta (kind, predictor, config, fields, encoder_hash, normalisation)."""
    ckpt = load_checkpoint(pred_dir, optimizers=False, select=select)
    meta = ckpt.meta
    if meta.get("kind") != KIND:
        raise CheckpointError(
            f"{pred_dir} holds a {meta.get('kind', 'unknown')!r} checkpoint, not a predictor; "
            "give the --out folder of vidlat train-predictor"
        )
    config = {k: v for k, v in meta["config"].items() if k in PredictorConfig.model_fields}
    specs = [FieldSpec.from_json(d) for d in meta["fields"]]
    model = build_predictor(PredictorConfig.model_validate(config), specs)
    model.load_state_dict(ckpt.module_state("model"))
    return model.to(device).eval(), meta
