"""The commands evaluate, run and report: options → config → a pipeline call (imported inside
each command, so `--help` never imports torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from vidlat.cli.options import ConfigFile, Context, Quiet, Select, Sets, apply_quiet, resolve
from vidlat.errors import ConfigError


def _layout(run_dir: Path | None, given: dict[str, Path | None]) -> dict[str, Path]:
    """Inputs of evaluate: explicit flags win, a run folder fills the rest; ConfigError if any is
    still missing."""
    from vidlat.pipeline.run import LAYOUT

    defaults = {"ae": "ae", "predictor": "predictor", "latents": "latents", "data": "data",
                "out": "evaluation"}  # fmt: skip
    paths = dict(given)
    if run_dir is not None:
        for key, layout_key in defaults.items():
            if paths[key] is None:
                paths[key] = run_dir / LAYOUT[layout_key]
    missing = [f"--{k}" for k, v in paths.items() if v is None]
    if missing:
        raise ConfigError(
            f"evaluate needs a RUN_DIR or all of --ae --predictor --latents --data --out; "
            f"missing {' '.join(missing)}"
        )
    return paths  # type: ignore[return-value]


def evaluate_cmd(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A folder made by `vidlat run` (ae/, predictor/, latents.zarr, ...)."),
    ] = None,
    *,
    ae: Annotated[Path | None, typer.Option("--ae", help="Stage-1 run folder.")] = None,
    predictor: Annotated[
        Path | None, typer.Option("--predictor", help="Predictor run folder.")
    ] = None,
    latents: Annotated[
        Path | None, typer.Option("--latents", help="Latent store the predictor was trained on.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="The video dataset the store was encoded from.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default RUN_DIR/evaluation).")
    ] = None,
    videos: Annotated[
        int | None,
        typer.Option(
            "--test-videos",
            "--videos",
            help="How many test-split videos the prediction metrics use (a count, not indices; "
            "--videos is the older name).",
            min=1,
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option("--samples", help="K futures per video for sampling predictors.", min=1),
    ] = None,
    past: Annotated[int | None, typer.Option("--past", help="Observed frames P.", min=1)] = None,
    future: Annotated[
        int | None, typer.Option("--future", help="Predicted frames F.", min=1)
    ] = None,
    disentanglement: Annotated[
        bool | None,
        typer.Option(
            "--disentanglement/--no-disentanglement",
            help="Probes and MIG when the store holds ground-truth factors.",
        ),
    ] = None,
    device: Annotated[
        Literal["auto", "cpu", "cuda"] | None,
        typer.Option("--device", help="auto = CUDA when present, else CPU."),
    ] = None,
    select: Select = None,
    context: Context = None,
    sets: Sets = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Measure a trained run: per-step MSE, PSNR, SSIM on the test split, and disentanglement.

    Disentanglement (data with ground-truth factors): the main paper's Table 1 probes and MIG.
    For a slot model (hierarchical) also how its slots find the sprites and how clean its
    background layer is.
    Writes OUT/evaluation.json (every number), OUT/{mse,psnr,ssim}.png and OUT/config.yaml.
    With RUN_DIR and no --config, the evaluate section of RUN_DIR/run_config.yaml is used.

    Example: [bold]vidlat evaluate runs/quick[/bold]

    Example: [bold]vidlat evaluate --ae A --predictor P --latents L --data V --out E[/bold]
    """
    from vidlat.pipeline.evaluate import RESULT, evaluate
    from vidlat.pipeline.run import RESOLVED

    apply_quiet(quiet)
    given = {"ae": ae, "predictor": predictor, "latents": latents, "data": data, "out": out}
    paths = _layout(run_dir, given)
    if config is None and run_dir is not None and (run_dir / RESOLVED).is_file():
        config = run_dir / RESOLVED
    cfg = resolve(
        "evaluate",
        config,
        sets,
        videos=videos,
        samples=samples,
        past=past,
        future=future,
        disentanglement=disentanglement,
        device=device,
        select=select,
        context=context,
    )
    result = evaluate(
        paths["ae"], paths["predictor"], paths["latents"], paths["data"], cfg, paths["out"]
    )
    pred = result["prediction"]
    mean = pred["curves"]["prediction"]["mean"]
    typer.echo(
        f"{pred['videos']} {pred['split']} videos, {pred['past']} observed + {pred['future']} "
        f"predicted: MSE {mean['mse']:.4f}  PSNR {mean['psnr']:.2f} dB  SSIM {mean['ssim']:.3f}"
    )
    if "probes" in result:
        p, mig = result["probes"], result["mig"]["mig"]
        typer.echo(
            f"probes (z, z_c/z, z_p/z): shape {_triple(p['shape'])}  background "
            f"{_triple(p['background'])}  colour MSE {_triple(p['colour'])};  MIG {mig:.3f}"
        )
    if "decomposition" in result:
        d, b = result["decomposition"]["slots"], result["decomposition"].get("background", {})
        line = (
            f"slots: recall {d['recall']:.2f} (chance {d['chance_recall']:.2f})  precision "
            f"{d['precision']:.2f} (chance {d['chance_precision']:.2f})  count accuracy "
            f"{d['count_accuracy']:.2f} (constant guess {d['chance_count_accuracy']:.2f})"
        )
        if b:
            line += f";  background SSIM on object-free videos {b['ssim_object_free']:.3f}"
        if "sprites_left" in b:
            line += f", sprites left in it {b['sprites_left']:.2f}"
        typer.echo(line)
    typer.echo(f"wrote {paths['out'] / RESULT} and {paths['out']}/{{mse,psnr,ssim}}.png")


def _triple(task: dict) -> str:
    parts = [task.get(k) for k in ("z", "z_c/z", "z_p/z")]
    return "/".join("–" if v is None else f"{v:.3g}" for v in parts)


def run_cmd(
    *,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            help="Whole-pipeline YAML: source, data, train_ae, encode, train_predictor, "
            "generate, evaluate sections (see configs/).",
            dir_okay=False,
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default runs/<config name>).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run data → train-ae → encode → train-predictor → generate → evaluate into one folder.

    A stage whose output exists and matches its config and inputs is skipped.
    An interrupted training run resumes from its last checkpoint; an interrupted encode finishes.
    A changed section reruns that stage and what depends on it; RUN_DIR/run.log says why.

    Example: [bold]vidlat run --config configs/quick.yaml --out runs/quick[/bold]
    """
    from vidlat.pipeline.evaluate import RESULT
    from vidlat.pipeline.run import LAYOUT, run_all

    apply_quiet(quiet)
    out = out or Path("runs") / config.stem
    run_all(config, out, on_stage=lambda name, action, why: typer.echo(f"{name}: {action} ({why})"))
    typer.echo(f"done: {out}; see {out / LAYOUT['evaluation'] / RESULT}")


def report_cmd(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders (or evaluation folders / evaluation.json files)."),
    ],
    *,
    out: Annotated[
        Path, typer.Option("--out", help="Markdown file; curve PNGs are written beside it.")
    ] = Path("report.md"),
) -> None:
    """Compare evaluated runs side by side in Markdown: prediction, Table 1 probes, MIG.

    Each metric's per-step curves of all runs go into one PNG beside the Markdown file.

    Example: [bold]vidlat report runs/synth runs/synth_drnet --out docs/report.md[/bold]
    """
    from vidlat.pipeline.report import report

    path = report(runs, out)
    typer.echo(f"wrote {path}")
