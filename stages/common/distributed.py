"""Data-parallel training under torchrun: one process per device, DistributedDataParallel.

`torchrun --nproc-per-node N -m vidlat train-ae ...` (or train-predictor) starts N copies of the
command; each reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from its environment
and joins one process group (nccl on CUDA, each rank on GPU LOCAL_RANK; gloo on CPU). Without
torchrun (WORLD_SIZE unset) everything here is a no-op and a run is exactly a single-process run.

How ranks stay equal:
- every rank builds the model from the same seed; the driver then wraps it in one
  torch.nn.parallel.DistributedDataParallel (`data_parallel`), which broadcasts rank 0's weights
  and buffers and averages gradients over ranks during every backward pass;
- a step with several optimisers (DRNET's autoencoder then its critic; the hierarchical model's
  critics; AVLAE's three updates) does several forward/backward passes. Each pass's computation runs
  as one forward of the DDP module through `run(fn, *args)` (the Job's StepContext), so DDP
  averages exactly the gradients that pass produced; parameters the pass does not reach (a critic
  held fixed while the encoders train) are found unused and keep their gradients;
- BatchNorm normalises with each rank's own batch; DDP broadcasts rank 0's running statistics
  before every forward, and every checkpoint checks that every rank holds rank 0's weights.

Each rank draws its own batches (WindowSampler with rank/world_size, FramePairSampler seeded by
rank); --batch-size is per rank, so a step sees world_size x batch_size samples. Only rank 0 writes
config, metrics, samples and checkpoints and shows a progress bar; logged losses are means over
ranks. A checkpoint keeps every rank's sampler position and RNG (`RankState`), so resuming with the
same number of ranks continues exactly; with another number, each rank's data stream restarts from
a seed derived from (seed, rank, step): deterministic, but not the stream of an unchanged world.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vidlat.errors import ConfigError, VidlatError
from vidlat.progress import set_quiet
from vidlat.stages.common import runs
from vidlat.stages.common.runtime import resolve_device, rng_state, set_rng_state


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job and its device; a world of one outside torchrun."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `t` over ranks (in place; `t` itself in a world of one)."""
        if self.enabled:
            dist.all_reduce(t)  # SUM then divide: gloo has no AVG
            t /= self.world_size
        return t

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Overwrite this rank's parameters and buffers (or buffers only) with rank 0's."""
        if not self.enabled:
            return
        tensors = [*([] if buffers_only else module.parameters()), *module.buffers()]
        with torch.no_grad():
            for t in tensors:
                dist.broadcast(t.detach(), src=0)


def setup(device: str = "auto") -> Ranks:
    """Join torchrun's process group (once per process; later calls reuse it) and pick the device:
    with CUDA, GPU LOCAL_RANK and nccl; on CPU, gloo. A world of one when WORLD_SIZE is unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(0, 1, 0, resolve_device(device))
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this PyTorch has no torch.distributed")
    if "RANK" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE={world} but RANK is unset; launch with torchrun --nproc-per-node N "
            "-m vidlat ..., which sets both"
        )
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); use "
                "--nproc-per-node <= the GPU count, or --device cpu"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")  # env:// rendezvous
        atexit.register(_cleanup)
        global _joined
        _joined = True
    if rank != 0:
        set_quiet(True)  # one progress bar per job: rank 0's
    return Ranks(rank, world, local, dev)


_joined = False  # this process joined a process group (setup under torchrun)


def joined() -> bool:
    """Whether setup() joined a torchrun process group in this process."""
    return _joined


@contextlib.contextmanager
def peer_guard(ranks: Ranks) -> Iterator[None]:
    """Under torchrun, a collective that fails because another rank's process ended (its own error
    says why) becomes one VidlatError line naming this rank, not a backend traceback."""
    try:
        yield
    except RuntimeError as exc:  # gloo: "Connection closed by peer"; NCCL: a remote error
        if not ranks.enabled or not _peer_left(exc):
            raise
        raise VidlatError(
            f"{describe_self()} stopped: another rank of this torchrun job ended first; its "
            "message above names the problem"
        ) from None


def _peer_left(exc: RuntimeError) -> bool:
    text = str(exc)
    return any(s in text for s in ("by peer", "Connection reset", "Broken pipe", "remote process"))


def describe_self() -> str:
    """'rank R of W' from torchrun's environment."""
    return f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}"


def _cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> NoReturn:
    """End a torchrun worker whose command has returned: run the atexit handlers (which destroy
    the process group) while the interpreter is whole, flush, then leave with os._exit.

    Measured here (torch 2.13, gloo, 2 CPU ranks on a loaded 2-core machine): about 1 run in 12 a
    rank aborted with "terminate called without an active exception" *after* the process group
    was destroyed, during interpreter finalisation (no Python frame left), so torchrun reported a
    finished job as failed. Nothing is left to do at that point but C++ static teardown, which
    os._exit skips.
    """
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def direct(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`run` in a world of one: the step's computation, called as it is."""
    return fn(*args, **kwargs)


class _StepModule(nn.Module):
    """The model as one module whose forward is whatever computation a training pass hands it:
    DDP averages the gradients of the backward that follows each of its forwards, and a step with
    several optimisers makes several passes over parts of one model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def data_parallel(model: nn.Module, ranks: Ranks) -> Callable[..., Any]:
    """`run(fn, *args)` for the model's training passes: under torchrun the forward of a
    DistributedDataParallel wrapper of `model` (built now, so rank 0's weights and buffers reach
    every rank), else `direct`. A pass returns only its loss's tensors, or detached ones."""
    if not ranks.enabled:
        return direct
    ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # find_unused_parameters: each pass reaches only the parameters of the part it trains
    return DistributedDataParallel(_StepModule(model), device_ids=ids, find_unused_parameters=True)


def state_digest(state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's names and bytes in name order: equal digests, equal weights."""
    state = state.state_dict() if isinstance(state, nn.Module) else state
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def derived_seed(*keys: int) -> int:
    """A 32-bit seed for torch from integer keys, e.g. (seed, rank, step)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class RankState:
    """What a checkpoint keeps of every rank, as train_state["sampler"], and how a rank resumes.

    World of one: the sampler's own state, as a single-process run always stored it. More ranks:
    {"world_size": N, "ranks": [{"sampler", "rng", "weights"} per rank]}, gathered from all ranks
    (so `state_dict` is a collective: every rank calls it, rank 0 writes it). `sampler` is anything
    with `rng` (a numpy Generator), state_dict and load_state_dict: WindowSampler, FramePairSampler.
    """

    def __init__(self, sampler, model: nn.Module, ranks: Ranks, seed: int):
        self.sampler, self.model, self.ranks, self.seed = sampler, model, ranks, seed
        self._saved: dict[str, Any] | None = None  # this rank's entry of the loaded checkpoint

    def state_dict(self) -> dict[str, Any]:
        if not self.ranks.enabled:
            return self.sampler.state_dict()
        self.ranks.broadcast(self.model, buffers_only=True)  # BatchNorm running stats: rank 0's
        mine = {"sampler": self.sampler.state_dict(), "rng": rng_state()}
        entries = self.ranks.gather({**mine, "weights": state_digest(self.model)})
        if differ := [r for r, e in enumerate(entries) if e["weights"] != entries[0]["weights"]]:
            raise VidlatError(
                f"ranks {differ} hold other weights than rank 0: every training pass of the model "
                "must run through the step context's run() so that DDP averages its gradients"
            )
        return {"world_size": self.ranks.world_size, "ranks": entries}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """This rank's sampler position when the checkpoint has this world size (else none)."""
        saved = state.get("world_size", 1) if "ranks" in state else 1
        if saved != self.ranks.world_size:
            return  # start() reseeds this rank's stream
        entry = state["ranks"][self.ranks.rank] if "ranks" in state else {"sampler": state}
        self.sampler.load_state_dict(entry["sampler"])
        self._saved = entry

    def start(self, resumed: bool, step: int) -> None:
        """After the checkpoint is loaded: give this rank its own RNG streams (module doc)."""
        if resumed and self._saved is None:
            self.sampler.rng = np.random.default_rng([self.seed, self.ranks.rank, step])
            torch.manual_seed(derived_seed(self.seed, self.ranks.rank, step))
        elif resumed and "rng" in self._saved:
            set_rng_state(self._saved["rng"])  # restore() set rank 0's
        elif not resumed and self.ranks.rank > 0:
            torch.manual_seed(derived_seed(self.seed, self.ranks.rank, 0))  # rank 0 keeps seed's


def open_log(out: Path, ranks: Ranks):
    """The run's metrics.jsonl opened for appending on rank 0; a sink (os.devnull) elsewhere."""
    return open(out / runs.METRICS if ranks.is_main else os.devnull, "a")


def start_run(
    ranks: Ranks, out: Path, resume: bool, model, optimizers, amp, state: RankState, meta, rule
) -> int:
    """runs.start_run on every rank (each loads the checkpoint), rank 0 first so that only one
    rank at a time touches metrics.jsonl; then each rank's own RNG streams. (The DDP wrapper that
    the driver builds next gives every rank rank 0's weights.)"""
    step = 0
    for main_turn in (True, False):
        if ranks.is_main == main_turn:
            step = runs.start_run(out, resume, model, optimizers, amp, state, meta, rule)
        ranks.barrier()
    state.start(resume, step)
    return step
