"""`vidlat report`: several evaluated runs side by side in one Markdown file, curves in one plot.

Each run is a run folder (holding evaluation/evaluation.json), an evaluation folder, or the JSON
itself. The report has a prediction table (mean over the future steps, with the last-frame and
reconstruction references), the main paper's Table 1 (probe scores from z and the ratios z_c/z,
z_p/z), MIPAE's MIG, and one PNG per metric with each run's per-step prediction curve, written
beside the Markdown file as <stem>_<metric>.png.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from vidlat.errors import DataError
from vidlat.pipeline.evaluate import RESULT, UNITS
from vidlat.pipeline.plots import line_plot

EVALUATION = "evaluation"


def find_result(path: Path) -> Path:
    """The evaluation.json of a run folder, an evaluation folder, or the file itself."""
    path = Path(path)
    for candidate in (path, path / RESULT, path / EVALUATION / RESULT):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{path} holds no {RESULT}; run `vidlat evaluate {path}` (or `vidlat run`) first"
    )


def load_results(paths: Sequence[Path]) -> dict[str, dict]:
    """{label: evaluation dict}; the label is the run folder's name, made unique if repeated."""
    out: dict[str, dict] = {}
    for path in paths:
        file = find_result(path)
        folder = file.parent.parent if file.parent.name == EVALUATION else file.parent
        label, n = folder.name or str(folder), 2
        while label in out:
            label, n = f"{folder.name} ({n})", n + 1
        out[label] = json.loads(file.read_text())
    return out


def fmt(value, digits: int = 3) -> str:
    """A table cell: 3 decimals (3 significant digits below 0.01), "–" for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def prediction_section(results: dict[str, dict]) -> list[str]:
    """Mean over future steps of each curve: prediction, best-of-K, references."""
    rows = []
    for label, res in results.items():
        pred, ins = res["prediction"], res["inputs"]
        curves = pred["curves"]
        best = curves.get("best_of_k", {}).get("mean", {})
        rows.append([label, ins["model"], ins["predictor_kind"],
                     f"{pred['past']}+{pred['future']}", pred["videos"],
                     *(curves["prediction"]["mean"][m] for m in UNITS),
                     best.get("psnr"), best.get("ssim"),
                     curves["last_frame"]["mean"]["psnr"], curves["last_frame"]["mean"]["ssim"],
                     curves["reconstruction"]["mean"]["psnr"],
                     curves["reconstruction"]["mean"]["ssim"]])  # fmt: skip
    header = ["run", "stage 1", "predictor", "past+future", "test videos", "MSE", "PSNR", "SSIM",
              "best-of-K PSNR", "best-of-K SSIM", "last-frame PSNR", "last-frame SSIM",
              "recon. PSNR", "recon. SSIM"]  # fmt: skip
    return [
        "## Prediction quality (mean over the future steps)",
        "",
        *table(header, rows),
        "",
        "Last-frame: the last observed frame repeated. Recon.: the decoded true future latents, "
        "the stage-1 ceiling of any predictor. Best-of-K: predictors that sample only.",
        "",
    ]


def probe_section(results: dict[str, dict]) -> list[str]:
    """Table 1 of the main paper: z score and ratios for the three tasks."""
    tasks = (("shape", "shape acc."), ("background", "background acc."), ("colour", "colour MSE"))
    header = ["run"]
    for _, name in tasks:
        header += [f"{name} chance", f"{name} z", "z_c/z", "z_p/z"]
    rows = []
    for label, res in results.items():
        probes = res.get("probes")
        if probes:
            row = [label]
            for task, _ in tasks:
                row += [probes[task].get(k) for k in ("chance", "z", "z_c/z", "z_p/z")]
            rows.append(row)
    if not rows:
        return []
    return [
        "## Disentanglement: probes (main paper, Table 1 protocol)",
        "",
        *table(header, rows),
        "",
        "A 3-layer MLP per task and latent group, trained on train-split frames, scored on the "
        "test split. Accuracy tasks: z_c/z near 1 and z_p/z low is good. Colour MSE: z_c/z large "
        "and z_p/z near 1 is good. Chance: the commonest train class (accuracy), or always "
        "predicting the train mean (MSE).",
        "",
    ]


def mig_section(results: dict[str, dict]) -> list[str]:
    """MIPAE eq. 8 with its terms (normalised by H(f), averaged over factors)."""
    rows = []
    for label, res in results.items():
        mig = res.get("mig")
        if mig:
            terms = {}
            for kind in ("content", "pose"):
                f = mig[kind].values()
                terms[kind] = [sum(x[k] / x["H"] for x in f if x["H"] > 0) / len(f)
                               for k in ("I_own", "I_other")]  # fmt: skip
            rows.append([label, *terms["content"], *terms["pose"], mig["mig"],
                         mig["per_dimension"]["mig"]])  # fmt: skip
    if not rows:
        return []
    header = ["run", "I(f_c;z_c)/H", "I(f_c;z_p)/H", "I(f_p;z_p)/H", "I(f_p;z_c)/H", "MIG (eq. 8)",
              "per-dim MIG"]  # fmt: skip
    return ["## Disentanglement: MIG (MIPAE eq. 8)", "", *table(header, rows), ""]


def report(run_dirs: Sequence[str | Path], out_md: str | Path) -> Path:
    """Write the Markdown report of `run_dirs` to `out_md` and its curve PNGs beside it."""
    if not run_dirs:
        raise DataError("give at least one run folder to report on")
    results = load_results([Path(p) for p in run_dirs])
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# vidlat report", "", "Runs: " + ", ".join(f"`{p}`" for p in run_dirs), ""]
    lines += prediction_section(results) + probe_section(results) + mig_section(results)
    lines += ["## Per-step curves", ""]
    for metric, label in UNITS.items():
        series = {run: res["prediction"]["curves"]["prediction"][metric]
                  for run, res in results.items()}  # fmt: skip
        png = line_plot(out_md.parent / f"{out_md.stem}_{metric}.png", series,
                        title=f"{label} per future step", ylabel=label)  # fmt: skip
        lines += [f"![{label}]({png.name})", ""]
    out_md.write_text("\n".join(lines))
    return out_md
