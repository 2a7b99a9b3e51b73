"""`vidlat run`: every stage from one config file into one run folder, skipping what is done.

Layout of RUN_DIR:
  videos.zarr/   data             ae/          train-ae      latents.zarr/  encode
  predictor/     train-predictor  generated/   generate      evaluation/    evaluate
  run.json       what each stage was last started from (its inputs), run.log one line per decision

The config file holds one section per stage (data, train_ae, encode, train_predictor, generate,
evaluate) and a top-level `source` (synth, moving-mnist, import) naming the data section's kind;
every other command reads its own section of the same file.

A stage is skipped when its output is complete, the config stored in the output equals this run's
resolved section (the dataset's source_config, config.yaml of a run folder, the store's
encode_config) with what the stage fills in itself (a model's settings, a default lr, past and
future read from the predictor; a config.yaml written before these were recorded may leave them
as given), and the identities of its inputs (dataset fingerprint, encoder and predictor weight
hashes, store provenance) equal those recorded in run.json when it last ran. A training stage
whose folder holds a checkpoint short of its steps, with the same inputs and the same config apart
from `steps`, is resumed; an interrupted encode is finished; anything else is redone from scratch
(its old output removed, but only an output run.json records: one it did not make is refused).
A stage whose inputs changed reruns, and so does everything downstream.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from vidlat.config import (
    Config,
    format_validation_error,
    read_config_file,
    recorded,
    write_resolved,
)
from vidlat.errors import ConfigError, VidlatError
from vidlat.pipeline.configs import EvaluateConfig, GenerateConfig
from vidlat.pipeline.evaluate import RESULT, evaluate, resolve_window
from vidlat.pipeline.generate import generate, used_window
from vidlat.pipeline.sources.imported import ImportConfig, import_videos
from vidlat.pipeline.sources.moving_mnist import MovingMnistConfig, make_moving_mnist
from vidlat.pipeline.sources.synth import SynthConfig, make_synth
from vidlat.stages.common.checkpoint import (
    STATE_FILE,
    has_checkpoint,
    latest_dir,
    parse_state,
    weights_hash,
)
from vidlat.stages.common.runs import run_lock
from vidlat.stages.inference.configs import EncodeConfig
from vidlat.stages.inference.encode import encode
from vidlat.stages.training import train_ae as ae_trainer
from vidlat.stages.training import train_predictor as predictor_trainer
from vidlat.stages.training.configs import TrainAEConfig, TrainPredictorConfig
from vidlat.store import places
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

LAYOUT = {"data": "videos.zarr", "ae": "ae", "latents": "latents.zarr", "predictor": "predictor",
          "generated": "generated", "evaluation": "evaluation"}  # fmt: skip
LEDGER, LOG, RESOLVED = "run.json", "run.log", "run_config.yaml"
SOURCES = {
    "synth": (SynthConfig, make_synth),
    "moving-mnist": (MovingMnistConfig, make_moving_mnist),
    "import": (ImportConfig, import_videos),
}


class RunConfig(Config):
    """A whole-pipeline config: the data source and one section per stage."""

    source: Literal[tuple(SOURCES)] = Field(  # type: ignore[valid-type]
        "synth", description="kind of the data section: synth, moving-mnist or import"
    )
    data: dict[str, Any] = Field(default_factory=dict, description="the source's settings")
    train_ae: TrainAEConfig = Field(default_factory=TrainAEConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    train_predictor: TrainPredictorConfig = Field(default_factory=TrainPredictorConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)

    @model_validator(mode="after")
    def _data(self) -> RunConfig:
        self.data_config()  # a bad data section fails on load, not after hours of training
        return self

    def data_config(self) -> Config:
        """The data section validated as the config of `source`."""
        cls = SOURCES[self.source][0]
        try:
            return cls.model_validate(self.data)
        except ValidationError as exc:
            raise ValueError(format_validation_error(cls, exc, "the data section")) from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a whole-pipeline config file; ConfigError names each bad key."""
    data = read_config_file(path)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(RunConfig, exc, str(path))) from None


def plain(config: Config) -> dict[str, Any]:
    """A config as plain JSON data (tuples as lists, paths as strings), as written to disk."""
    return json.loads(config.model_dump_json())


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def train_step(folder: Path) -> int | None:
    """Step of the latest checkpoint of a run folder, None without one."""
    if not has_checkpoint(folder):
        return None
    state = latest_dir(folder) / STATE_FILE
    return parse_state(state, state.read_text()).step


@dataclass
class Stage:
    """One step of the pipeline: where it writes, its config, what it reads, how to run it.

    run(resume) does the work; inputs() gives the identities of what it reads; complete() says
    whether its output is whole; stored() gives the config recorded in its output (by default the
    config.yaml of its folder); expected() the config a run records there, defaults the stage fills
    in itself included (by default the config as it is); kind says how an unfinished output is
    resumed.
    """

    name: str
    output: Path
    config: Config
    kind: Literal["once", "train", "encode"]
    run: Callable[[bool], Any]
    inputs: Callable[[], dict[str, Any]]
    complete: Callable[[], bool]
    stored: Callable[[], Any] | None = None
    expected: Callable[[], dict[str, Any]] | None = None

    def stored_config(self) -> Any:
        return self.stored() if self.stored else read_yaml(self.output / "config.yaml")

    def configs(self) -> list[dict[str, Any]]:
        """What a stored config may equal: the recorded form, then the config as given (how a
        config.yaml written before the stages recorded their own defaults reads)."""
        given = plain(self.config)
        return [self.expected(), given] if self.expected else [given]


def _dataset_config(path: Path) -> Any:
    """The source config a complete dataset records, None when there is none."""
    try:
        return open_videos(path).attrs.get("source_config")
    except VidlatError:
        return None


def _store_attrs(path: Path) -> dict:
    try:
        return LatentStore.open(path, require_complete=False).attrs
    except VidlatError:
        return {}


def store_identity(path: Path) -> dict[str, Any]:
    """What a latent store was made from: encoder hash, data fingerprint, encode config."""
    attrs = _store_attrs(path)
    return {"encoder": (attrs.get("encoder") or {}).get("hash"),
            "source": (attrs.get("source") or {}).get("fingerprint"),
            "encode_config": attrs.get("encode_config")}  # fmt: skip


def stages(cfg: RunConfig, run_dir: Path) -> list[Stage]:
    """The six stages of `cfg` writing into `run_dir`, in order."""
    p = {key: run_dir / name for key, name in LAYOUT.items()}
    data_cfg, make_data = cfg.data_config(), SOURCES[cfg.source][1]

    # Identities of what a stage reads, computed when the stage is reached.
    def videos() -> dict:
        return {"data": open_videos(p["data"]).fingerprint}

    def ae() -> dict:
        return videos() | {"ae": weights_hash(p["ae"])}

    def pair() -> dict:
        return ae() | {"predictor": weights_hash(p["predictor"])}

    def latents() -> dict:
        return {"latents": store_identity(p["latents"])}

    def trained(folder: Path, steps: int) -> Callable[[], bool]:
        return lambda: train_step(folder) == steps

    # What the training and prediction stages record beyond their section (see Stage.expected).
    def predictor_meta() -> dict:
        state = latest_dir(p["predictor"]) / STATE_FILE  # best and latest share the window
        return parse_state(state, state.read_text()).meta

    def eval_window() -> dict:
        n_frames = LatentStore.open(p["latents"]).n_frames
        window = resolve_window(cfg.evaluate, predictor_meta(), n_frames)
        return dict(zip(("past", "future"), window, strict=True))

    def used(config: Config, values: Callable[[], dict]) -> Callable[[], dict]:
        return lambda: recorded(config, values())

    return [
        Stage("data", p["data"], data_cfg, "once",
              run=lambda _: make_data(data_cfg, p["data"], overwrite=True), inputs=dict,
              complete=lambda: _dataset_config(p["data"]) is not None,
              stored=lambda: _dataset_config(p["data"])),
        Stage("train_ae", p["ae"], cfg.train_ae, "train",
              run=lambda resume: ae_trainer.train_ae(open_videos(p["data"]), cfg.train_ae, p["ae"],
                                                     resume),
              inputs=videos, complete=trained(p["ae"], cfg.train_ae.steps),
              expected=used(cfg.train_ae, lambda: ae_trainer.used_settings(cfg.train_ae))),
        Stage("encode", p["latents"], cfg.encode, "encode",
              run=lambda resume: encode(p["data"], p["ae"], p["latents"], cfg.encode,
                                        overwrite=not resume),
              inputs=ae, complete=lambda: bool(_store_attrs(p["latents"]).get("complete")),
              stored=lambda: _store_attrs(p["latents"]).get("encode_config")),
        Stage("train_predictor", p["predictor"], cfg.train_predictor, "train",
              run=lambda resume: predictor_trainer.train_predictor(
                  LatentStore.open(p["latents"]), cfg.train_predictor, p["predictor"], resume),
              inputs=latents, complete=trained(p["predictor"], cfg.train_predictor.steps),
              expected=used(cfg.train_predictor,
                            lambda: predictor_trainer.used_settings(cfg.train_predictor))),
        Stage("generate", p["generated"], cfg.generate, "once",
              run=lambda _: generate(p["ae"], p["predictor"], p["data"], cfg.generate,
                                     p["generated"]),
              inputs=pair, complete=lambda: (p["generated"] / "metrics.json").is_file(),
              expected=used(cfg.generate, lambda: used_window(cfg.generate, predictor_meta()))),
        Stage("evaluate", p["evaluation"], cfg.evaluate, "once",
              run=lambda _: evaluate(p["ae"], p["predictor"], p["latents"], p["data"],
                                     cfg.evaluate, p["evaluation"]),
              inputs=lambda: pair() | latents(),
              complete=lambda: (p["evaluation"] / RESULT).is_file(),
              expected=used(cfg.evaluate, eval_window)),
    ]  # fmt: skip


def _contains(stored: Any, config: dict) -> bool:
    """The stored config holds every resolved field with the same value (extras allowed, as the
    import source records the raw array's shape beside its config)."""
    return isinstance(stored, dict) and all(stored.get(k) == v for k, v in config.items())


def decide(stage: Stage, ran: dict | None) -> tuple[str, str]:
    """("skip" | "resume" | "run", reason) for `stage` given its entry of run.json."""
    same_inputs = ran is not None and ran == stage.inputs()
    if not same_inputs:
        return "run", "first run" if ran is None else "its inputs changed"
    stored = stage.stored_config()
    if stored is None:
        return "run", "no output yet"
    configs = stage.configs()  # computed once the inputs are known to be there

    def holds(but: str | None = None) -> bool:
        return any(_contains(stored, {k: v for k, v in c.items() if k != but}) for c in configs)

    if holds() and stage.complete():
        return "skip", "up to date"
    steps = configs[0].get("steps")
    if stage.kind == "train" and isinstance(stored, dict):
        done = train_step(stage.output)
        if done is not None and done <= steps and holds(but="steps"):
            return "resume", f"checkpoint at step {done} of {steps}"
    if stage.kind == "encode" and holds():
        return "resume", "the store is incomplete"
    if holds():
        return "run", "its output is incomplete"
    return "run", "its config changed"


def _clear(path: Path) -> None:
    """Remove a stage's old output folder before redoing it (zarr outputs are overwritten)."""
    if path.is_dir() and path.suffix != ".zarr":
        shutil.rmtree(path)


def _refuse_unrecorded(stage: Stage, ledger: dict) -> None:
    """ConfigError when a stage would replace an output that run.json does not record: vidlat run
    never deletes what it did not make (a folder copied in, another command's output)."""
    out = stage.output
    if stage.name not in ledger and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"{out} exists but {out.parent / LEDGER} does not record it, so vidlat run will not "
            "replace it; move it away, or give another --out"
        )


def run_all(
    config_file: str | Path,
    out: str | Path,
    on_stage: Callable[[str, str, str], None] | None = None,
) -> list[tuple[str, str, str]]:
    """Run every stage of `config_file` into `out`, skipping done ones; [(stage, action, reason)].

    `on_stage(stage, action, reason)` is called before each stage runs (for the CLI's messages).
    """
    cfg = load_run_config(config_file)
    out = Path(out)
    places.check_writable(out)
    with run_lock(out):  # one `vidlat run` per run folder
        return _run_stages(cfg, out, on_stage)


def _run_stages(cfg: RunConfig, out: Path, on_stage) -> list[tuple[str, str, str]]:
    out.mkdir(parents=True, exist_ok=True)
    write_resolved(cfg.model_copy(update={"data": plain(cfg.data_config())}), out, RESOLVED)
    ledger_path = out / LEDGER
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    actions = []
    for stage in stages(cfg, out):
        action, reason = decide(stage, ledger.get(stage.name))
        if on_stage is not None:
            on_stage(stage.name, action, reason)
        with open(out / LOG, "a") as log:
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {stage.name} {action}: {reason}\n")
        actions.append((stage.name, action, reason))
        if action == "skip":
            continue
        if action == "run":
            _refuse_unrecorded(stage, ledger)
            _clear(stage.output)
        ledger[stage.name] = stage.inputs()  # recorded first, so a crash can resume
        ledger_path.write_text(json.dumps(ledger, indent=1))
        stage.run(action == "resume")
    return actions
