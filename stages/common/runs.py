"""Training run folders: start fresh (never over a checkpoint) or resume exactly where one stopped.

Every trainer (train-ae, train-predictor, train-generator) keeps the same folder: config.yaml,
metrics.jsonl, checkpoints/ (see vidlat.stages.common.checkpoint). A resumed run reloads weights,
optimiser state, the data sampler's state and the RNG, so it continues bit for bit like an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vidlat.errors import CheckpointError
from vidlat.stages.common.checkpoint import (
    STATE_FILE,
    has_checkpoint,
    load_checkpoint,
    load_weights,
)
from vidlat.stages.common.runtime import Amp, set_rng_state

METRICS = "metrics.jsonl"
LOCK = ".lock"  # held (flock) by the one process writing a run folder; the OS drops it on a kill
UNSET = object()  # a config key one side of a resume lacks
DRIVER_KEYS = ("seed", "batch_size")  # meta keys every resume must match, whatever the trainer


@dataclass(frozen=True)
class ResumeRule:
    """What must match for a resume: meta keys and config fields (all but `free_config`)."""

    meta_keys: tuple[str, ...]
    free_config: Collection[str]
    hint: str  # how to fix a mismatch, e.g. "Resume with the same settings and --latents"
    # the model config's upgrade_stored: what keys an older checkpoint lacks meant then, so a
    # resume that would change them (e.g. a new default) is refused by name, not by weight shapes
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def fixed(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        config = {k: v for k, v in meta.get("config", {}).items() if k not in self.free_config}
        return {"config": config, **{k: meta.get(k) for k in self.meta_keys}}

    def check(self, old: Mapping[str, Any], new: Mapping[str, Any], out: Path) -> None:
        """CheckpointError naming every setting of `new` that differs from the checkpoint's."""
        if self.upgrade is not None:
            old = {**old, "config": self.upgrade(dict(old.get("config", {})))}
        a, b = self.fixed(old), self.fixed(new)
        ca, cb = a.pop("config"), b.pop("config")  # named key by key, a missing one as (unset)
        keys = dict.fromkeys([*ca, *cb])
        diff = [
            f"{k}: {ca.get(k, '(unset)')} -> {cb.get(k, '(unset)')}"
            for k in keys
            if ca.get(k, UNSET) != cb.get(k, UNSET)
        ]
        diff += [f"{k}: {a[k]} -> {b[k]}" for k in a if a[k] != b[k]]
        # The driver's own settings, recorded by every trainer since issue 13 (older checkpoints
        # lack them): a resume with another seed or batch size would not continue the same run.
        diff += [
            f"{k}: {old[k]} -> {new.get(k)}"
            for k in DRIVER_KEYS
            if k in old and old[k] != new.get(k)
        ]
        if diff:
            raise CheckpointError(
                f"cannot resume {out}: its checkpoint differs from this run in "
                f"{'; '.join(diff)}. {self.hint}, or choose another --out"
            )


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past `step` (written by the interrupted run after its last checkpoint)."""
    if path.is_file():
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in kept))


def restore(
    out: Path,
    model: torch.nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    amp: Amp,
    sampler,
    meta: Mapping[str, Any],
    rule: ResumeRule,
) -> int:
    """Load the latest checkpoint of `out` into model, optimisers, sampler, RNG; its step."""
    ckpt = load_checkpoint(out)
    rule.check(ckpt.meta, meta, out)
    load_weights(model, ckpt.module_state("model"), ckpt.path)
    if missing := [k for k in ("sampler", "rng") if k not in ckpt.train_state]:
        raise CheckpointError(
            f"{ckpt.path / STATE_FILE} lacks train_state {missing}; it cannot be resumed exactly. "
            "Train again into another --out"
        )
    for name, opt in optimizers.items():
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(ckpt.optim_state[name])
        for group, settings in zip(opt.param_groups, fresh, strict=True):
            group.update(settings)  # this run's lr/betas win over the checkpoint's
    sampler.load_state_dict(ckpt.train_state["sampler"])
    set_rng_state(ckpt.train_state["rng"])
    amp.load_state_dict(ckpt.train_state.get("amp", {}))
    truncate_metrics(out / METRICS, ckpt.step)
    return ckpt.step


def start_run(out: Path, resume: bool, model, optimizers, amp, sampler, meta, rule) -> int:
    """The step to start from: 0 for a fresh run (refused over a checkpoint), else resume's."""
    if resume:
        if not has_checkpoint(out):
            raise CheckpointError(f"--resume given but {out} holds no checkpoint; drop --resume")
        return restore(out, model, optimizers, amp, sampler, meta, rule)
    if has_checkpoint(out):
        raise CheckpointError(
            f"{out} already holds a checkpoint; pass --resume to continue or choose another --out"
        )
    (out / METRICS).unlink(missing_ok=True)  # a run that died before its first checkpoint
    return 0


@contextlib.contextmanager
def run_lock(out: Path, hold: bool = True) -> Iterator[None]:
    """Hold `out`/.lock for the duration: a second writer of the same run folder gets one line
    naming the holder's PID instead of interleaving metrics and configs. `hold` False (the other
    ranks under torchrun) does nothing."""
    if not hold:
        yield
        return
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise CheckpointError(
                f"{out} is being written by another vidlat process (PID {holder}); wait for it "
                "to finish, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the lock
