"""The contract commands train-ae, encode, train-predictor, generate: options → config → call.

Each command imports the pipeline (and so torch) inside its body: building the app, `--help` and
tab completion read only the registries' names (pipeline/choices.py), `COMMAND --help` the
torch-free configs (pipeline/configs.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vidlat.cli.options import (
    ConfigFile,
    Context,
    Overwrite,
    Quiet,
    Select,
    Sets,
    apply_quiet,
    resolve,
    say,
)
from vidlat.pipeline.choices import PREDICTORS, STAGE1_MODELS

ModelName = Literal[tuple(STAGE1_MODELS)]  # the registry is the list of choices
PredictorKind = Literal[tuple(PREDICTORS)]
Device = Annotated[
    Literal["auto", "cpu", "cuda"] | None,
    typer.Option("--device", help="auto = CUDA when present, else CPU."),
]
Steps = Annotated[int | None, typer.Option("--steps", help="Optimiser steps.", min=0)]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Batch size.", min=1)]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads of torch on the CPU. Default: 1 for train-predictor and "
        "train-generator (their small LSTM/MLP steps run several times faster than on 2), one "
        "per core for train-ae.",
    ),
]
Past = Annotated[int | None, typer.Option("--past", help="Observed frames P.", min=1)]
Future = Annotated[int | None, typer.Option("--future", help="Predicted frames F.", min=1)]


def train_ae_cmd(
    *,
    data: Annotated[Path, typer.Option("--data", help="Video dataset from `vidlat data`.")],
    model: Annotated[
        ModelName | None, typer.Option("--model", help="Stage-1 model (default drnet).")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Run folder for checkpoints, metrics, samples.")
    ],
    steps: Steps = None,
    batch_size: BatchSize = None,
    device: Device = None,
    amp: Annotated[
        Literal["bf16", "fp16", "off"] | None,
        typer.Option("--amp", help="Mixed precision on CUDA (default off)."),
    ] = None,
    seed: Seed = None,
    threads: Threads = None,
    resume: Resume = False,
    sets: Sets = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Stage 1: train a frame autoencoder whose latents split into content and pose.

    Example: [bold]vidlat train-ae --data runs/videos.zarr --model drnet --out runs/ae[/bold]
    """
    from vidlat.pipeline.commands import train_ae

    apply_quiet(quiet)
    cfg = resolve(
        "train-ae",
        config,
        sets,
        model=model,
        steps=steps,
        batch_size=batch_size,
        device=device,
        amp=amp,
        seed=seed,
        threads=threads,
    )
    path = train_ae(data, cfg, out, resume=resume)
    say(f"stage-1 run in {path}; next: vidlat encode --data {data} --ae {path} --out STORE")


def encode_cmd(
    *,
    data: Annotated[Path, typer.Option("--data", help="Video dataset from `vidlat data`.")],
    ae: Annotated[Path, typer.Option("--ae", help="Stage-1 run folder from `vidlat train-ae`.")],
    out: Annotated[
        str,
        typer.Option("--out", help="Latent store to write: a folder or an fsspec URL (s3://...)."),
    ],
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="threads, processes, or a dask.distributed address."),
    ] = None,
    batch_size: BatchSize = None,
    device: Device = None,
    dtype: Annotated[
        Literal["float32", "float16"] | None, typer.Option("--dtype", help="Stored latent dtype.")
    ] = None,
    overwrite: Overwrite = False,
    sets: Sets = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Encode every frame once into the latent store; rerun to finish an interrupted encode.

    Example: [bold]vidlat encode --data runs/videos.zarr --ae runs/ae --out runs/latents.zarr[/bold]
    """
    from vidlat.pipeline.commands import encode

    apply_quiet(quiet)
    cfg = resolve(
        "encode",
        config,
        sets,
        scheduler=scheduler,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    path = encode(data, ae, out, cfg, overwrite=overwrite)
    typer.echo(f"latent store {path}; see it with: vidlat inspect {path}")


def train_predictor_cmd(
    *,
    latents: Annotated[
        str | None,
        typer.Option("--latents", help="Latent store from `vidlat encode` (folder or URL)."),
    ] = None,
    source: Annotated[
        Literal["store", "online"] | None,
        typer.Option(
            "--source",
            help="store (default): train on --latents. online: re-encode --data through the "
            "frozen --ae every step (DRNET's way; the slower baseline `vidlat bench` measures).",
        ),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="With --source online: the video dataset.")
    ] = None,
    ae: Annotated[
        Path | None, typer.Option("--ae", help="With --source online: the stage-1 run folder.")
    ] = None,
    kind: Annotated[
        PredictorKind | None, typer.Option("--kind", help="Predictor (default lstm-delta).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder for checkpoints and metrics.")],
    past: Past = None,
    future: Future = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    device: Device = None,
    seed: Seed = None,
    threads: Threads = None,
    resume: Resume = False,
    sets: Sets = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Stage 2: train an LSTM on the latent store alone (no pixels, no encoder).

    Example: [bold]vidlat train-predictor --latents runs/latents.zarr --out runs/pred[/bold]

    Baseline, DRNET's way (the frozen encoder re-encodes pixel windows every step; slower):
    [bold]vidlat train-predictor --source online --data runs/videos.zarr --ae runs/ae
    --out runs/pred-online[/bold]
    """
    from vidlat.pipeline.commands import train_predictor

    apply_quiet(quiet)
    cfg = resolve(
        "train-predictor",
        config,
        sets,
        kind=kind,
        past=past,
        future=future,
        steps=steps,
        batch_size=batch_size,
        device=device,
        seed=seed,
        source=source,
        threads=threads,
    )
    path = train_predictor(cfg, out, resume, latents=latents, data=data, ae=ae)
    say(f"predictor run in {path}")


def generate_cmd(
    *,
    ae: Annotated[Path, typer.Option("--ae", help="Stage-1 run folder.")],
    predictor: Annotated[
        Path | None, typer.Option("--predictor", help="Predictor run folder.")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A video dataset; a .npy/.npz of new videos; video files: .gif, .mp4/.avi/.mov/"
            ".webm (vidlat\\[video]), a folder or quoted glob of PNG/JPEG frames or video files.",
        ),
    ] = None,
    videos: Annotated[
        str | None,
        typer.Option(
            "--video-ids",
            "--videos",
            help="Indices 'A:B' or 'i,j,k' of the videos (clips) of --data to continue "
            "(default: 8 test-split videos of a dataset, every video of other inputs). "
            "--videos is the older name.",
        ),
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames",
            help="--data as video files: frames per clip (default: past + future).",
            min=1,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option("--stride", help="--data as video files: keep every N-th frame.", min=1),
    ] = None,
    past: Past = None,
    future: Future = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="Futures per video (a stochastic predictor: svg).", min=1),
    ] = None,
    generator: Annotated[
        Path | None, typer.Option("--generator", help="AVLAE run from `vidlat train-generator`.")
    ] = None,
    unconditional: Annotated[
        int | None,
        typer.Option("--unconditional", help="Sample N new videos with --generator.", min=1),
    ] = None,
    fix: Annotated[
        Literal["appearance", "motion"] | None,
        typer.Option("--fix", help="With --unconditional: hold one code, vary the other."),
    ] = None,
    seed: Seed = None,
    interpolate: Annotated[
        list[str] | None,
        typer.Option(
            "--interpolate",
            help="Latent field to interpolate between two frames, holding the others (repeat, "
            "or 'all'): interpolate.png. Needs --ae and --data only.",
        ),
    ] = None,
    between: Annotated[
        str | None,
        typer.Option("--between", help="With --interpolate: frames 'V:T,V:T' (video:frame)."),
    ] = None,
    interpolate_steps: Annotated[
        int | None,
        typer.Option("--interpolate-steps", help="With --interpolate: frames per row.", min=2),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    npy: Annotated[bool | None, typer.Option("--npy", help="Also write predicted.npy.")] = None,
    select: Select = None,
    context: Context = None,
    mp4: Annotated[
        bool | None,
        typer.Option("--mp4/--no-mp4", help="Also write gifs/NNN.mp4 (when PyAV is installed)."),
    ] = None,
    device: Device = None,
    sets: Sets = None,
    config: ConfigFile = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an earlier generate output at --out (only that, once the new one is "
            "complete).",
        ),
    ] = False,
) -> None:
    """Decode predicted latents into future frames: predicted.zarr, GIFs, grid.png, metrics.json.
    With --generator and --unconditional N: N new videos from AVLAE instead. With --interpolate
    FIELD: the main paper's Figure 4 (and, given --predictor, the frames as well).

    Example: [bold]vidlat generate --ae runs/ae --predictor runs/pred --data runs/videos.zarr
    --video-ids 0:8 --out runs/gen[/bold]
    """
    from vidlat.pipeline.generate import run_generate

    cfg = resolve("generate", config, sets, videos=videos,
                         past=past, future=future, npy=npy, device=device, samples=samples,
                         seed=seed, interpolate=interpolate or None,
                         between=between, interpolate_steps=interpolate_steps, frames=frames,
                         stride=stride, mp4=mp4, select=select, context=context)  # fmt: skip
    lines = run_generate(cfg, out, ae, predictor, data, generator, unconditional, fix, overwrite)
    for line in lines:
        typer.echo(line)
