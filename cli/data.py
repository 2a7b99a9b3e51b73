"""`vidlat data ...`: make or import videos as a uint8 (V, T, H, W, C) Zarr dataset.

Each command imports its source (Zarr, Pillow) inside its body, so `--help` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vidlat.cli.help import VidlatCommand
from vidlat.cli.options import ConfigFile, Overwrite, Quiet, Sets, apply_quiet, resolve

app = typer.Typer(
    help="Make or import videos: synthetic sprites, Moving MNIST from local files, your arrays.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

Out = Annotated[  # a str, so that an fsspec URL reaches the check that refuses it whole
    str, typer.Option("--out", help="Output dataset folder (a Zarr group), e.g. videos.zarr.")
]
Videos = Annotated[
    int | None, typer.Option("--videos", help="How many videos V to make (a count).", min=1)
]
Frames = Annotated[int | None, typer.Option("--frames", help="Frames per video T.", min=2)]
Seed = Annotated[
    int | None, typer.Option("--seed", help="Random seed; the same seed gives the same bytes.")
]


def _done(path: Path) -> None:
    typer.echo(f"wrote {path}  (see it with: vidlat inspect {path})")


@app.command("synth", cls=VidlatCommand)
def synth(
    *,
    out: Out,
    videos: Videos = None,
    frames: Frames = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Frame height = width in pixels.")
    ] = None,
    objects: Annotated[
        int | None, typer.Option("--objects", help="Most objects per video (each has 0..N).", min=0)
    ] = None,
    seed: Seed = None,
    sets: Sets = None,
    config: ConfigFile = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Moving sprites over textured backgrounds, with ground-truth factors saved beside the frames.

    Example: [bold]vidlat data synth --out runs/videos.zarr --videos 256 --size 64[/bold]
    """
    from vidlat.pipeline.sources.synth import make_synth

    apply_quiet(quiet)
    cfg = resolve(
        "data synth",
        config,
        sets,
        videos=videos,
        frames=frames,
        size=size,
        objects=objects,
        seed=seed,
    )
    _done(make_synth(cfg, out, overwrite=overwrite))


@app.command("moving-mnist", cls=VidlatCommand)
def moving_mnist(
    *,
    mnist: Annotated[
        Path | None, typer.Option("--mnist", help="MNIST idx images file (gzip or not).")
    ] = None,
    mnist_labels: Annotated[
        Path | None,
        typer.Option(
            "--mnist-labels", help="MNIST idx labels file (default: found beside --mnist)."
        ),
    ] = None,
    cifar: Annotated[
        Path | None,
        typer.Option("--cifar", help="CIFAR-10 python folder (data_batch_1..5, test_batch)."),
    ] = None,
    out: Out,
    videos: Videos = None,
    frames: Frames = None,
    seed: Seed = None,
    sets: Sets = None,
    config: ConfigFile = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """The main paper's Moving MNIST: 0–2 coloured digits (42×42) over CIFAR-10 images (128×128),
    built from MNIST and CIFAR-10 files you already have (nothing is downloaded).

    Example: [bold]vidlat data moving-mnist --mnist train-images-idx3-ubyte.gz
    --cifar cifar-10-batches-py --out runs/mmnist.zarr --videos 10000[/bold]
    """
    from vidlat.pipeline.sources.moving_mnist import make_moving_mnist

    apply_quiet(quiet)
    cfg = resolve(
        "data moving-mnist",
        config,
        sets,
        mnist=mnist,
        mnist_labels=mnist_labels,
        cifar=cifar,
        videos=videos,
        frames=frames,
        seed=seed,
    )
    _done(make_moving_mnist(cfg, out, overwrite=overwrite))


@app.command("import", cls=VidlatCommand)
def import_(
    src: Annotated[
        Path,
        typer.Argument(
            help="A .npy, .npz or Zarr array of videos; a .gif, .mp4, .avi, .mov or .webm file "
            "(PyAV: vidlat\\[video]); a folder or quoted glob of PNG/JPEG frames or video files."
        ),
    ],
    *,
    out: Out,
    layout: Annotated[
        Literal["vthwc", "tvhw"] | None,
        typer.Option(
            "--layout", help="Axis order: vthwc = (V, T, H, W[, C]); tvhw = mnist_test_seq.npy."
        ),
    ] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Resize frames to S×S (default: keep).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(
            "--frames", help="Video files: frames per clip, cut one after another from each video."
        ),
    ] = None,
    stride: Annotated[
        int | None, typer.Option("--stride", help="Video files: keep every N-th frame.")
    ] = None,
    sets: Sets = None,
    config: ConfigFile = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Your own videos: arrays (uint8 or floats in [0, 1], grey or RGB) or video files.

    Examples: [bold]vidlat data import mnist_test_seq.npy --layout tvhw --out runs/mm.zarr[/bold]
    and [bold]vidlat data import 'clips/*.mp4' --size 64 --frames 32 --stride 2
    --out runs/clips.zarr[/bold]
    """
    from vidlat.pipeline.sources.imported import import_videos

    apply_quiet(quiet)
    cfg = resolve(
        "data import",
        config,
        sets,
        src=src,
        layout=layout,
        size=size,
        frames=frames,
        stride=stride,
    )
    _done(import_videos(cfg, out, overwrite=overwrite))
