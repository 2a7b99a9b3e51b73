"""Checkpoints as data: safetensors weights and optimiser tensors plus a JSON state; never pickles.

Layout of a run folder OUT:
  OUT/checkpoints/step_000100/model.safetensors   every module's tensors, keys "<module>.<param>"
  OUT/checkpoints/step_000100/optim.safetensors   optimiser tensors, keys "<optim>/<param id>/<key>"
  OUT/checkpoints/step_000100/state.json          step, meta, optimiser param groups and scalars,
                                                   train_state (RNG, sampler, loss scaler)
  OUT/checkpoints/latest                           text: the name of the newest complete step folder
  OUT/checkpoints/best                             optional text: the step folder the run chose as
                                                   its best (stage 2: lowest val future error)
A step folder is written under a temporary name and renamed when complete; `latest` is then replaced
with os.replace. A crash at any point leaves `latest` naming the previous complete checkpoint.
`best` is replaced the same way (mark_best), and pruning never deletes the folder it names.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vidlat.errors import CheckpointError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
BEST = "best"
SELECT = (BEST, LATEST)  # what a reader may ask for; best falls back to latest when unmarked
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
STATE_FILE = "state.json"
TMP_PREFIX = ".tmp-"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")  # later versions may add keys; missing ones fail


class OptimizerState(_Loose):
    """The JSON half of one optimiser's state (its tensors are in optim.safetensors)."""

    param_groups: list[dict[str, Any]]
    scalars: dict[str, dict[str, Any]] = Field(default_factory=dict)


class CheckpointState(_Loose):
    """state.json, validated on load: a missing or malformed field is one CheckpointError."""

    step: StrictInt = Field(ge=0)
    meta: dict[str, Any] = Field(default_factory=dict)
    optimizers: dict[str, OptimizerState] = Field(default_factory=dict)
    train_state: dict[str, Any] = Field(default_factory=dict)


def validation_problem(exc: ValidationError) -> str:
    """'field a.b: message' for the first few problems of a pydantic error."""
    parts = [
        f"field {'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in exc.errors()[:3]
    ]
    return "; ".join(parts)


def parse_state(path: Path, text: str) -> CheckpointState:
    """state.json's text, validated; CheckpointError naming the file and the field."""
    try:
        data = json.loads(text)  # Python's parser: NaN and Infinity as json.dumps wrote them
    except ValueError as exc:
        raise CheckpointError(f"{path} is not JSON ({exc}); the checkpoint is damaged") from None
    try:
        return CheckpointState.model_validate(data)
    except ValidationError as exc:
        raise CheckpointError(
            f"{path} is damaged or hand-edited ({validation_problem(exc)}); use another "
            "checkpoint (point checkpoints/latest at an older step folder) or train again"
        ) from None


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """module.load_state_dict(state), with a mismatch named by its first few tensors (not torch's
    whole list). Modules may rename old keys while loading, so torch decides what fits."""
    try:
        module.load_state_dict(state)
    except RuntimeError:
        pass
    else:
        return
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = [
        f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shaped", shapes))
        if keys
    ]
    raise CheckpointError(
        f"weights in {path} do not fit their model: {'; '.join(problems) or 'see the names'}; "
        "the checkpoint belongs to another model or settings (give the run folder it was "
        "trained in)"
    )


@dataclass
class Checkpoint:
    """One loaded checkpoint. model_state keys are prefixed "<module>.", as saved."""

    step: int
    path: Path
    model_state: dict[str, torch.Tensor]
    optim_state: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    train_state: dict[str, Any] = field(default_factory=dict)

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        """The state dict of module `name` with its prefix removed (for load_state_dict)."""
        prefix = f"{name}."
        state = {k[len(prefix) :]: v for k, v in self.model_state.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{self.path} holds no weights of module {name!r}")
        return state


def step_name(step: int) -> str:
    return f"step_{step:06d}"


def has_checkpoint(out_dir: str | Path) -> bool:
    return (Path(out_dir) / CHECKPOINTS / LATEST).is_file()


def latest_dir(out_dir: str | Path, select: str = LATEST) -> Path:
    """The step folder `latest` names (select "best": the one `best` names, or `latest` when the
    run marked none); CheckpointError when there is none."""
    if select not in SELECT:
        raise CheckpointError(f"checkpoint selection {select!r} is not one of {', '.join(SELECT)}")
    root = Path(out_dir) / CHECKPOINTS
    pointer = root / (BEST if select == BEST and (root / BEST).is_file() else LATEST)
    if not pointer.is_file():
        raise CheckpointError(
            f"{out_dir} holds no checkpoint ({pointer} is missing); give the --out folder of a "
            "training run, or train one first"
        )
    folder = root / pointer.read_text().strip()
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{pointer} names {folder}, which is incomplete or missing")
    return folder


def _tensors(module: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = module.state_dict() if isinstance(module, nn.Module) else module
    # clone: safetensors refuses tensors that share storage, and the file must hold owned copies
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _flatten_optimizer(name: str, opt: torch.optim.Optimizer, tensors: dict) -> dict[str, Any]:
    """Move an optimiser's tensors into `tensors` ("<name>/<id>/<key>"); return the JSON rest."""
    state = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{pid}/{key}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(name: str, info: dict[str, Any], tensors: dict) -> dict[str, Any]:
    """Rebuild a state dict for Optimizer.load_state_dict from the two halves."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        opt_name, pid, entry = key.split("/", 2)
        if opt_name == name:
            state.setdefault(int(pid), {})[entry] = value
    for pid, entries in info["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in info["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a rename never publishes unwritten bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms; durability is best effort there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(folder: Path, step: int, modules, optimizers, meta, train_state) -> None:
    weights: dict[str, torch.Tensor] = {}
    for mod_name, module in modules.items():
        weights.update({f"{mod_name}.{k}": v for k, v in _tensors(module).items()})
    # one metadata key only: safetensors writes metadata in hash order, and the weights hash must
    # depend on the weights alone
    save_file(weights, folder / MODEL_FILE, metadata={"format": "pt"})
    opt_tensors: dict[str, torch.Tensor] = {}
    opt_info = {n: _flatten_optimizer(n, o, opt_tensors) for n, o in optimizers.items()}
    save_file(opt_tensors, folder / OPTIM_FILE, metadata={"format": "pt"})
    state = {"step": step, "meta": meta, "optimizers": opt_info, "train_state": train_state}
    try:
        text = json.dumps(state, indent=1)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint meta/state is not JSON data: {exc}") from None
    (folder / STATE_FILE).write_text(text)
    for name in (MODEL_FILE, OPTIM_FILE, STATE_FILE):
        _fsync(folder / name)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _keep_umask(folder: Path) -> None:
    """mkdtemp makes folders 0700 whatever the umask; give the step folder and its files the
    modes the user's umask asks for, so a colleague can read a run when the umask allows."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for file in folder.iterdir():
        os.chmod(file, 0o666 & ~mask)


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
    optimizers: Mapping[str, torch.optim.Optimizer],
    meta: dict[str, Any],
    keep: int = 2,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint `step` atomically, point `latest` at it, keep the newest `keep`.

    Returns the step folder."""
    root = Path(out_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(TMP_PREFIX + "*"):  # left by a crash mid-save: never complete
        shutil.rmtree(stale, ignore_errors=True)
    final = root / step_name(step)
    if final.exists() and has_checkpoint(out_dir) and latest_dir(out_dir) == final:
        raise CheckpointError(f"{final} is already the latest checkpoint; it is never overwritten")
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    _write_files(tmp, step, modules, optimizers, meta, train_state or {})
    _keep_umask(tmp)
    if final.exists():  # left past `latest` by a crash between rename and pointer update
        shutil.rmtree(final)
    os.rename(tmp, final)
    _write_pointer(root, LATEST, final)
    _prune(root, keep, final)
    return final


def _write_pointer(root: Path, name: str, folder: Path) -> None:
    tmp = root / (TMP_PREFIX + name)
    tmp.write_text(folder.name + "\n")
    _fsync(tmp)
    os.replace(tmp, root / name)
    _fsync(root)


def mark_best(out_dir: str | Path, step: int) -> Path:
    """Point `best` at the complete checkpoint of `step` (atomically); returns its folder."""
    root = Path(out_dir) / CHECKPOINTS
    folder = root / step_name(step)
    if not (folder / STATE_FILE).is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint; save it before marking it")
    _write_pointer(root, BEST, folder)
    return folder


def _prune(root: Path, keep: int, latest: Path) -> None:
    """Delete all but the newest `keep` step folders (never the one `latest` or `best` names)."""
    best = root / BEST
    spared = {latest, root / best.read_text().strip()} if best.is_file() else {latest}
    folders = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for old in folders[: -max(keep, 1)]:
        if old not in spared:
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out_dir: str | Path, *, optimizers: bool = True, select: str = LATEST
) -> Checkpoint:
    """Load the latest (or `select`ed, see latest_dir) checkpoint of a run folder onto the CPU
    (optimiser state only if asked)."""
    folder = latest_dir(out_dir, select)
    try:
        text = (folder / STATE_FILE).read_text()
        weights = load_file(folder / MODEL_FILE, device="cpu")
        opt_tensors = load_file(folder / OPTIM_FILE, device="cpu") if optimizers else {}
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"checkpoint {folder} is unreadable: {exc}") from None
    state = parse_state(folder / STATE_FILE, text)
    opt_state = {}
    if optimizers:
        opt_state = {
            n: _unflatten_optimizer(n, info.model_dump(), opt_tensors)
            for n, info in state.optimizers.items()
        }
    return Checkpoint(
        step=state.step,
        path=folder,
        model_state=weights,
        optim_state=opt_state,
        meta=state.meta,
        train_state=state.train_state,
    )


def weights_hash(out_dir: str | Path, select: str = LATEST) -> str:
    """SHA-256 hex of the latest (or `select`ed) model.safetensors of a run folder: the "encoder
    hash" of a stage-1 run."""
    digest = hashlib.sha256()
    with open(latest_dir(out_dir, select) / MODEL_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
