"""The one training driver: train-ae, train-predictor and train-generator all plug in here.

A trainer supplies a `build(ranks) -> Job`: its model on this rank's device, named optimisers, a
sampler of batches, the meta its checkpoints carry, and one `step(batch, ctx) -> {name: loss}`,
plus optionally a validation and pictures. The driver owns everything else, once: torchrun set-up
(DistributedDataParallel), seeding, fresh start or exact resume, the step loop, metrics.jsonl,
validation, pictures, atomic checkpoints, the progress bar (plain lines without a TTY), TensorBoard
event files (when the `tensorboard` package is installed) and the final barrier.

A metrics.jsonl row holds the step, the mean of each loss since the last row, the learning rate of
each optimiser (`lr`, or `lr_<name>` when there are several), `samples_per_s` (over all ranks, time
spent validating, drawing and saving left out), `elapsed_s` since this process started training and
`time` (Unix seconds). Validation rows hold the step, their metrics and `time`. TensorBoard gets the
same scalars (train/..., val/..., lr/..., perf/...) and the pictures, in `out`/tensorboard.

Under torchrun every rank runs this; only rank 0 writes into `out`, validates and draws, and
logged losses are means over ranks. Resuming restores weights, optimiser moments, the sampler's
state and every RNG, so a resumed run continues bit for bit like an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidlat.config import write_resolved
from vidlat.errors import TrainingError
from vidlat.progress import progress_bar
from vidlat.stages.common import distributed
from vidlat.stages.common.checkpoint import (
    STATE_FILE,
    latest_dir,
    mark_best,
    parse_state,
    save_checkpoint,
)
from vidlat.stages.common.runs import ResumeRule, run_lock
from vidlat.stages.common.runtime import Amp, rng_state, seed_everything
from vidlat.stages.training.configs import TrainingConfig


@dataclass
class StepContext:
    """What a step needs besides its batch. `run(fn, *args)` computes fn(*args) as the forward of
    the DistributedDataParallel model (a plain call in a world of one): a model runs each pass
    whose backward its optimisers step through it, so DDP averages that pass's gradients."""

    optimizers: dict[str, torch.optim.Optimizer]
    amp: Amp
    run: Callable[..., Any]
    progress: float = 0.0  # step / steps, for schedules such as the main paper's alpha (e/E)


@dataclass
class Job:
    """What a trainer's `build(ranks)` hands the driver."""

    model: nn.Module  # on the rank's device, in train mode
    optimizers: dict[str, torch.optim.Optimizer]
    sampler: Any  # sample() -> batch; state_dict(), load_state_dict(), rng (numpy Generator)
    meta: dict[str, Any]  # what its checkpoints say about the run (kind, config, ...)
    rule: ResumeRule  # what must match to resume
    step: Callable[[Any, StepContext], Mapping[str, torch.Tensor]]  # detached scalars, no sync
    validate: Callable[[], dict[str, float]] | None = None  # rank 0 only
    val_every: int = 0  # steps between validations (0: never); also at the last step
    validate_at_start: bool = False  # a fresh run also validates the untrained model (step 0)
    pictures: Callable[[int], Path | None] | None = None  # rank 0, given the step: the PNG
    picture_every: int = 0
    best: str | None = None  # a validation metric: its lowest value's checkpoint is marked `best`
    # config fields the trainer filled in itself (a model's full settings, a default lr):
    # config.yaml records these values in place of the given ones
    used: dict[str, Any] = field(default_factory=dict)


TIMING_KEYS = ("samples_per_s", "elapsed_s", "time")  # differ run to run; the rest is exact


def _note(values: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in values.items() if k not in TIMING_KEYS)


def learning_rates(optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, float]:
    """{"lr": x} for one optimiser, {"lr_<name>": x, ...} for several (first param group's)."""
    rates = {name: float(opt.param_groups[0]["lr"]) for name, opt in optimizers.items()}
    if len(rates) == 1:
        return {"lr": next(iter(rates.values()))}
    return {f"lr_{name}": v for name, v in rates.items()}


class Meter:
    """Timing of the rows: samples/s between rows, leaving out the time spent validating,
    drawing and saving (`with meter.paused():`), seconds since start, and the wall clock."""

    def __init__(self, samples_per_step: int):
        self.samples_per_step = samples_per_step
        self.started = self.since = time.monotonic()
        self.aside = 0.0

    @contextmanager
    def paused(self) -> Iterator[None]:
        start = time.monotonic()
        yield
        self.aside += time.monotonic() - start

    def row(self, steps: int) -> dict[str, float]:
        """The timing keys of a row covering the last `steps` steps; starts the next interval."""
        now = time.monotonic()
        busy = max(now - self.since - self.aside, 1e-9)
        self.since, self.aside = now, 0.0
        rate = self.samples_per_step * steps / busy
        return {"samples_per_s": rate, "elapsed_s": now - self.started, "time": time.time()}


class Board:
    """TensorBoard's SummaryWriter on rank 0 when wanted and installed; else it does nothing."""

    def __init__(self, out: Path, wanted: bool, step: int):
        self.writer = None
        if wanted and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only here

            # purge_step: a resumed run drops events the interrupted one wrote past its checkpoint
            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=step or None)

    def scalars(self, group: str, row: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key in ("step", "time"):
                continue
            tag = f"lr/{key}" if key.startswith("lr") else f"{group}/{key}"
            tag = f"perf/{key}" if key in TIMING_KEYS else tag
            self.writer.add_scalar(tag, value, step, walltime=row.get("time"))

    def image(self, path: Path | None, step: int) -> None:
        if self.writer is None or path is None or not Path(path).is_file():
            return
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(Path(path).parent.name, pixels, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_state(sums: Mapping[str, torch.Tensor], count: int, ranks) -> dict[str, Any]:
    """The partial loss sums (means over ranks: a collective) and their count, for a checkpoint."""
    if not sums:
        return {"sums": {}, "count": count}
    values = (ranks.mean(torch.stack(list(sums.values())).clone()) if ranks.enabled else
              torch.stack(list(sums.values()))).tolist()  # fmt: skip
    return {"sums": dict(zip(sums, values, strict=True)), "count": count}


def saved_train_state(out: Path) -> dict[str, Any]:
    """train_state of the latest checkpoint's state.json (validated; weights are not read)."""
    path = latest_dir(out) / STATE_FILE
    return parse_state(path, path.read_text()).train_state


def restore_log(kept: dict[str, Any], device: torch.device) -> tuple[dict[str, torch.Tensor], int]:
    """The sums log_state kept in a checkpoint's train_state (none before issue 13)."""
    log = kept.get("log") or {"sums": {}, "count": 0}
    sums = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in log["sums"].items()}
    return sums, int(log["count"])


def train(
    name: str,
    cfg: TrainingConfig,
    out: str | Path,
    resume: bool,
    build: Callable[..., Job],
    cpu_threads: int | None = None,
) -> Path:
    """Train the Job that `build(ranks)` makes for `cfg.steps` steps into run folder `out`.
    cpu_threads: the trainer's default for cfg.threads (None: torch's, one per core)."""
    ranks = distributed.setup(cfg.device)  # a world of one without torchrun
    threads, before = cfg.threads or cpu_threads, torch.get_num_threads()
    if ranks.device.type == "cpu" and threads:
        torch.set_num_threads(threads)
    try:
        with distributed.peer_guard(ranks), run_lock(Path(out), ranks.is_main):
            return _train(name, cfg, Path(out), resume, build, ranks)  # one writer per run folder
    finally:
        torch.set_num_threads(before)  # a library call leaves the process as it found it


def _train(name, cfg, out: Path, resume: bool, build, ranks: distributed.Ranks) -> Path:
    # Setup: seed, then the model, its optimisers and data; then start fresh or resume.
    seed_everything(cfg.seed)
    job = build(ranks)
    amp = Amp(ranks.device, cfg.amp)
    # a step saw world_size x batch samples; seed and batch size must match to resume (DRIVER_KEYS)
    meta = {**job.meta, "world_size": ranks.world_size, "seed": cfg.seed}
    meta["batch_size"] = cfg.batch_size
    state = distributed.RankState(job.sampler, job.model, ranks, cfg.seed)
    step = distributed.start_run(
        ranks, out, resume, job.model, job.optimizers, amp, state, meta, job.rule
    )
    ctx = StepContext(job.optimizers, amp, distributed.data_parallel(job.model, ranks))
    if ranks.is_main:
        write_resolved(cfg, out, used=job.used)
    saved = step if resume else -1
    # the lowest job.best value so far (rank 0's); its checkpoint is marked `best`
    kept = saved_train_state(out) if resume else {}  # what the loaded checkpoint also recorded
    best = kept.get("best")

    def checkpoint() -> None:  # every rank: state.state_dict() gathers from all of them
        train_state = {"sampler": state.state_dict(), "rng": rng_state(), "amp": amp.state_dict()}
        train_state["log"] = log_state(sums, count, ranks)
        if ranks.is_main:
            models = {"model": job.model}
            train_state["best"] = best
            save_checkpoint(out, step, models, job.optimizers, meta, cfg.keep, train_state)

    board = Board(out, cfg.tensorboard and ranks.is_main, step)
    meter = Meter(cfg.batch_size * ranks.world_size)

    def validate(log) -> bool:
        """Rank 0 validates and logs; whether job.best improved (False without job.best)."""
        nonlocal best
        metrics = job.validate()
        log.write(json.dumps({"step": step, **metrics, "time": time.time()}) + "\n")
        board.scalars("val", metrics, step)
        notes["val"] = _note(metrics)
        value = metrics.get(job.best) if job.best else None
        if value is None or (best is not None and not value < best):
            return False
        best = value
        return True

    # Divergence: a flag per step that every loss is finite, kept on the device (no sync), read
    # at each log line and before each checkpoint, so no NaN is ever logged or saved as latest.
    finite: list[torch.Tensor] = []

    def check_finite(names) -> None:
        if not finite:
            return
        bad = ranks.mean((~torch.stack(finite)).float())  # every rank sees any rank's NaN
        first = torch.nonzero(bad > 0)
        if len(first):
            at = step - len(finite) + 1 + int(first[0])
            kept = f"checkpoint step {saved} stays latest" if saved >= 0 else "no checkpoint kept"
            raise TrainingError(
                f"training diverged: a loss ({', '.join(names)}) became NaN/inf at step {at}; "
                f"{kept} in {out}. Lower the learning rate (or use --amp off) and start again, "
                "or --resume from that checkpoint"
            )
        finite.clear()

    # Train: sample, step; log (the only host sync), validate, draw, checkpoint.
    # Losses summed since the last metrics line; a resume continues the sums the checkpoint kept,
    # so metrics.jsonl equals an uninterrupted run's whatever step the checkpoint was taken at.
    sums, count = restore_log(kept, ranks.device) if resume else ({}, 0)
    notes, logged = {"train": "", "val": ""}, False
    validating = ranks.is_main and job.validate is not None
    bar_cm = progress_bar(name, cfg.steps, "steps", plain_every=None)  # lines: every log_every
    with distributed.open_log(out, ranks) as log, bar_cm as bar:
        if validating and job.validate_at_start and step == 0:
            validate(log)
        bar.advance(step)
        while step < cfg.steps:
            ctx.progress = step / max(cfg.steps, 1)
            losses = job.step(job.sampler.sample(), ctx)
            step, count = step + 1, count + 1
            sums = {k: sums.get(k, 0) + v.detach().float() for k, v in losses.items()}
            finite.append(
                torch.isfinite(torch.stack([v.detach().float() for v in losses.values()])).all()
            )
            if step % cfg.log_every == 0 or step == cfg.steps or step % cfg.checkpoint_every == 0:
                check_finite(losses)
            if step % cfg.log_every == 0 or step == cfg.steps:
                values = (ranks.mean(torch.stack(list(sums.values()))) / count).tolist()
                row = dict(zip(sums, values, strict=True)) | learning_rates(job.optimizers)
                row |= meter.row(count)
                log.write(json.dumps({"step": step, **row}) + "\n")
                board.scalars("train", row, step)
                notes["train"] = _note(row)
                sums, count, logged = {}, 0, True
            with meter.paused():
                if job.val_every and (step % job.val_every == 0 or step == cfg.steps):
                    improved = validate(log) if validating else False
                    # every rank learns of a new best from rank 0 and joins its checkpoint
                    flag = torch.tensor([float(improved)], device=ranks.device)
                    if job.best and ranks.mean(flag).item() > 0:
                        check_finite(losses)  # never a diverged step as `best`
                        checkpoint()
                        saved = step
                        if ranks.is_main:
                            mark_best(out, step)
                if ranks.is_main and job.pictures and job.picture_every:
                    if step % job.picture_every == 0:
                        board.image(job.pictures(step), step)
                log.flush()
                bar.note("  ".join(n for n in notes.values() if n))
                if step % cfg.checkpoint_every == 0 and saved != step:
                    checkpoint()
                    saved = step
            bar.advance()
            if logged:  # the plain line without a TTY (a rich bar shows the note instead)
                bar.line("  ".join(n for n in notes.values() if n))
                logged = False
    board.close()
    if saved != step:
        checkpoint()
    ranks.barrier()  # no rank leaves (closing its connections) while rank 0 still writes
    return out
