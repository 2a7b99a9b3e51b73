"""`evaluate` on a tiny trained pair: curves match independent computations, sampling, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

import vidlat.pipeline.evaluate as ev
from vidlat.errors import StoreError
from vidlat.pipeline.evaluate import EvaluateConfig, best_of_k, evaluate, split_samples
from vidlat.pipeline.metrics import per_step_metrics
from vidlat.pipeline.scores import capped_psnr, object_boxes
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.inference.rollout import context_frames, decode_latents, predict_frames
from vidlat.stages.load import load_run
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

PAST, FUTURE = 4, 4
FAST = {"device": "cpu", "probes": {"steps": 20, "hidden": 8}, "mig": {"samples": 10}}


@pytest.fixture(scope="module")
def pair(tiny_videos, tiny_ae, tmp_path_factory):
    """(ae, predictor, store, data) paths: the tiny DRNET, its store, a 4-step predictor."""
    root = tmp_path_factory.mktemp("eval")
    store = encode(tiny_videos, tiny_ae, root / "latents.zarr", EncodeConfig(device="cpu"))
    cfg = TrainPredictorConfig(hidden=8, layers=1, batch_size=4, past=PAST, future=FUTURE,
                               steps=4, device="cpu", val_every=2, log_every=1)  # fmt: skip
    pred = train_predictor(LatentStore.open(store), cfg, root / "predictor")
    return tiny_ae, pred, store, tiny_videos


@pytest.fixture(scope="module")
def result(pair, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    return evaluate(*pair, EvaluateConfig(**FAST), out), out


def test_writes_every_number_and_the_curves(result):
    res, out = result
    assert json.loads((out / "evaluation.json").read_text()) == res
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert (written["past"], written["future"]) == (PAST, FUTURE)  # the predictor's window
    assert all((out / f"{m}.png").stat().st_size > 1000 for m in ("mse", "psnr", "ssim"))
    pred = res["prediction"]
    assert (pred["split"], pred["past"], pred["future"], pred["samples"]) == ("test", 4, 4, 1)
    assert set(pred["curves"]) == {"prediction", "last_frame", "mean_frame", "reconstruction"}
    for curve in pred["curves"].values():  # the fair summary: capped PSNR, objects, object boxes
        assert {"psnr_of_mean_mse", "object_mse", "objects"} <= set(curve)
        assert max(curve["psnr"]) <= 60.0
    assert all(len(c["psnr"]) == FUTURE for c in pred["curves"].values())
    assert res["inputs"]["model"] == "drnet" and res["inputs"]["predictor_kind"] == "lstm-delta"
    assert {"shape", "background", "colour"} <= set(res["probes"]) and "mig" in res["mig"]


def test_curves_match_independent_computations(pair, result):
    ae, pred_dir, store_path, data = pair
    curves = result[0]["prediction"]["curves"]
    videos, store = open_videos(data), LatentStore.open(store_path)
    ids = np.sort(store.split["test"])
    frames = videos.read(ids)
    truth = frames[:, PAST : PAST + FUTURE]
    held = np.repeat(frames[:, PAST - 1 : PAST], FUTURE, axis=1)
    err = ((held / 255.0 - truth / 255.0) ** 2).mean(axis=(2, 3, 4))  # (n, F) per-frame MSE
    assert curves["last_frame"]["psnr"] == pytest.approx(capped_psnr(err).mean(0))
    assert curves["last_frame"]["mse"] == pytest.approx(per_step_metrics(held, truth)["mse"])
    # the MSE inside the true sprites' boxes, by hand, over the videos that hold one
    pos, size, present = (videos.read_factor(f, ids) for f in ("position", "size", "present"))
    boxes = object_boxes(pos[:, PAST : PAST + FUTURE], size, present, *truth.shape[2:4])
    inside = boxes[..., None].repeat(3, -1)
    sq = (held / 255.0 - truth / 255.0) ** 2
    per_video = (sq * inside).sum(axis=(2, 3, 4)) / inside.sum(axis=(2, 3, 4)).clip(min=1)
    keep = present.any(1)
    assert curves["last_frame"]["object_mse"] == pytest.approx(per_video[keep].mean(0))
    model, _ = load_run(ae, "stage1")
    future = {n: torch.from_numpy(store.read(n, ids)[:, PAST : PAST + FUTURE]) for n in
              ("content", "pose")}  # fmt: skip
    # a model with skips decodes with the last observed frame: never a future one
    recon = decode_latents(model, future, 64, context_frames(model, frames[:, :PAST]))
    assert curves["reconstruction"]["ssim"] == pytest.approx(per_step_metrics(recon, truth)["ssim"])
    # generate's path encodes the observed pixels; evaluate reads them from the store: same frames
    predictor, _ = load_run(pred_dir, "predictor", select="best")  # evaluate's default
    generated, _ = predict_frames(model, predictor, frames[:, :PAST], FUTURE, torch.device("cpu"))
    expected = per_step_metrics(generated, truth)["mse"]
    assert curves["prediction"]["mse"] == pytest.approx(expected, rel=1e-3)


class Sampler:
    """A deterministic predictor made to sample: K rollouts with noise of growing size on poses."""

    def __init__(self, predictor, as_dict: bool):
        self.inner, self.fields, self.as_dict = predictor, predictor.fields, as_dict

    def rollout(self, past, future):
        return self.inner.rollout(past, future)

    def sample_rollout(self, past, future, samples):
        base = self.inner.rollout(past, future)
        draws = [{k: v + (0.3 * i * torch.randn_like(v) if k == "pose" else 0)
                  for k, v in base.items()} for i in range(samples)]  # fmt: skip
        if self.as_dict:  # {field: (B, K, F, *shape)}
            return {k: torch.stack([d[k] for d in draws], 1) for k in base}
        return draws


@pytest.mark.parametrize("as_dict", [True, False])
def test_sampling_predictors_get_best_and_mean_of_k(pair, tmp_path, monkeypatch, as_dict):
    def load(path, kind, device="cpu", select="latest"):
        model, meta = load_run(path, kind, device, select=select)
        return (Sampler(model, as_dict) if kind == "predictor" else model), meta

    monkeypatch.setattr(ev, "load_run", load)
    cfg = EvaluateConfig(**FAST, samples=3, disentanglement=False)
    res = evaluate(*pair, cfg, tmp_path)
    pred = res["prediction"]
    assert pred["samples"] == 3 and "probes" not in res
    best, mean = (pred["curves"][k]["mean"] for k in ("best_of_k", "mean_over_k"))
    assert best["psnr"] >= mean["psnr"] and best["mse"] <= mean["mse"]


def test_best_of_k_picks_per_video_the_best_sample_by_its_mean():
    psnr = np.array([[[10, 30], [20, 21], [5, 5]], [[1, 1], [2, 2], [9, 0]]], float)  # (2, 3, 2)
    picked = best_of_k({"psnr": psnr, "mse": psnr.copy()})
    assert picked["psnr"].tolist() == [[20, 21], [9, 0]]  # highest mean PSNR
    assert picked["mse"].tolist() == [[5, 5], [1, 1]]  # lowest mean MSE
    samples = split_samples({"pose": torch.arange(12).reshape(2, 3, 2)}, 3)
    assert [s["pose"].tolist() for s in samples][1] == [[2, 3], [8, 9]]


def test_future_is_cut_to_the_frames_the_videos_hold(pair, tmp_path):
    cfg = EvaluateConfig(**FAST, future=50, videos=1, disentanglement=False)
    pred = evaluate(*pair, cfg, tmp_path)["prediction"]
    assert pred["future"] == 12 - PAST and len(pred["curves"]["prediction"]["ssim"]) == 8


def test_a_store_of_another_encoder_is_refused(pair, other_ae, tmp_path):
    _, pred, store, data = pair
    with pytest.raises(StoreError, match="encoded by encoder"):
        evaluate(other_ae, pred, store, data, EvaluateConfig(**FAST), tmp_path)
