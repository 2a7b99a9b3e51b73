"""`report`: evaluation results side by side in Markdown, every run's curves in one plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vidlat.errors import DataError
from vidlat.pipeline.plots import line_plot, nice_ticks
from vidlat.pipeline.report import report


def curve(psnr: list[float]) -> dict:
    return {"mse": [10 ** (-p / 10) for p in psnr], "psnr": psnr, "ssim": [p / 40 for p in psnr],
            "mean": {"mse": 10 ** (-sum(psnr) / len(psnr) / 10), "psnr": sum(psnr) / len(psnr),
                     "ssim": sum(psnr) / len(psnr) / 40}}  # fmt: skip


def probes(shape_z: float) -> dict:
    acc = {"metric": "accuracy", "chance": 0.3, "z": shape_z, "content": shape_z, "pose": 0.2,
           "z_c/z": 1.0, "z_p/z": 0.2 / shape_z}  # fmt: skip
    mse = {"metric": "mse", "z": 0.01, "content": 0.1, "pose": 0.01, "z_c/z": 10.0, "z_p/z": 1.0}
    return {"shape": acc, "background": acc, "colour": mse}


def evaluation(model: str, psnr: list[float], with_factors: bool = True) -> dict:
    curves = {"prediction": curve(psnr), "last_frame": curve([p - 3 for p in psnr]),
              "reconstruction": curve([30.0] * len(psnr))}  # fmt: skip
    result = {
        "inputs": {"model": model, "predictor_kind": "lstm-delta"},
        "prediction": {"split": "test", "videos": 5, "past": 4, "future": len(psnr),
                       "samples": 1, "curves": curves},
    }  # fmt: skip
    if with_factors:
        term = {"H": 1.0, "I_own": 0.8, "I_other": 0.1}
        result["probes"] = probes(0.9)
        result["mig"] = {"mig": 0.7, "content": {"shape": term}, "pose": {"colour_r": term},
                         "per_dimension": {"mig": 0.1}}  # fmt: skip
    return result


@pytest.fixture
def runs(tmp_path):
    """Three run folders: two with factors, one without (imported videos)."""
    made = []
    for name, model, psnr, factors in (("hier", "hierarchical", [25.0, 23.0, 21.0], True),
                                       ("drnet", "drnet", [22.0, 20.0, 18.0], True),
                                       ("plain", "mipae", [20.0, 19.0, 18.0], False)):  # fmt: skip
        folder = tmp_path / name / "evaluation"
        folder.mkdir(parents=True)
        (folder / "evaluation.json").write_text(json.dumps(evaluation(model, psnr, factors)))
        made.append(tmp_path / name)
    return made


def test_report_tables_and_curves(runs, tmp_path):
    out = report(runs, tmp_path / "docs" / "results.md")
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| hier |")]
    assert len(rows) == 3  # prediction, probes, MIG
    assert "| hier | hierarchical | lstm-delta | 4+3 | 5 | " in text
    assert "| 23.000 | 0.575 |" in rows[0]  # mean PSNR and SSIM of the prediction
    assert "| hier | 0.300 | 0.900 | 1.000 | 0.222 |" in rows[1]  # shape: chance, z, z_c/z, z_p/z
    assert "| 0.800 | 0.100 | 0.800 | 0.100 | 0.700 | 0.100 |" in rows[2]
    assert "| plain | mipae |" in text and "| plain | 0." not in text.split("## Disent")[1]
    for metric in ("mse", "psnr", "ssim"):
        png = out.parent / f"results_{metric}.png"
        assert f"({png.name})" in text and Image.open(png).size == (640, 400)


def test_report_accepts_evaluation_folders_and_files_and_names_repeats(runs, tmp_path):
    paths = [runs[0], runs[0] / "evaluation", runs[0] / "evaluation" / "evaluation.json"]
    text = report(paths, tmp_path / "r.md").read_text()
    assert "| hier |" in text and "| hier (2) |" in text and "| hier (3) |" in text


def test_report_of_a_run_never_evaluated_says_what_to_do(tmp_path):
    with pytest.raises(DataError, match="vidlat evaluate"):
        report([tmp_path], tmp_path / "r.md")


def test_plots_draw_each_series_in_its_colour(tmp_path):
    path = line_plot(tmp_path / "p.png", {"a": [1.0, 2.0, 3.0], "b": [3.0, float("nan"), 1.0]},
                     title="t", ylabel="y")  # fmt: skip
    pixels = set(map(tuple, np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).tolist()))
    assert (31, 119, 180) in pixels and (255, 127, 14) in pixels
    assert nice_ticks(0.05, 0.3, 6) == [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    assert nice_ticks(1, 4, 8, integer=True) == [1, 2, 3, 4]
    with pytest.raises(DataError, match="nothing to plot"):
        line_plot(tmp_path / "q.png", {"a": [float("nan")]}, title="empty")
