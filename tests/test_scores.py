"""The fair evaluation (issue 14): capped PSNR, object boxes and their MSE, references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vidlat.pipeline.scores import (
    PSNR_CAP,
    capped_psnr,
    object_boxes,
    references,
    region_mse,
    summarise,
)


def test_capped_psnr():
    assert capped_psnr(np.array([0.0]))[0] == PSNR_CAP == 60.0  # identical frames: the cap
    assert capped_psnr(np.array([0.01]))[0] == pytest.approx(20.0)
    assert capped_psnr(np.array([1e-7]))[0] == 60.0  # 70 dB, capped


def test_an_object_box_by_hand():
    # one 4x4 sprite centred at (x=5, y=3) in an 8x10 (H x W) frame; a second slot empty
    position = np.array([[[[5.0, 3.0], [1.0, 1.0]]]])  # (B=1, F=1, N=2, 2)
    mask = object_boxes(position, np.array([[4.0, 2.0]]), np.array([[True, False]]), 8, 10)
    expect = np.zeros((8, 10), bool)
    expect[1:5, 3:7] = True  # pixel centres 1.5..4.5 (y) and 3.5..6.5 (x) lie within 2 of it
    np.testing.assert_array_equal(mask[0, 0], expect)


def test_region_mse_by_hand_and_empty_regions():
    truth = np.zeros((2, 1, 4, 4, 3), np.uint8)
    pred = truth.copy()
    pred[0, 0, 0, 0] = 255  # one wrong pixel (all channels) inside the box of video 0
    pred[0, 0, 3, 3] = 255  # and one outside it
    mask = np.zeros((2, 1, 4, 4), bool)
    mask[0, 0, :2, :2] = True  # a 2x2 box in video 0, none in video 1
    out = region_mse(pred, truth, mask)
    assert out[0, 0] == pytest.approx(1 / 4) and math.isnan(out[1, 0])


def test_references_and_summary():
    past = np.stack([np.full((2, 2, 1), v, np.uint8) for v in (10, 20, 40)])[None]  # (1, 3, ...)
    ref = references(past, future=2)
    assert (ref["copy_last"] == 40).all() and ref["copy_last"].shape == (1, 2, 2, 2, 1)
    assert (ref["mean_frame"] == 23).all()  # round(70 / 3)
    values = {
        "mse": np.array([[0.0, 0.01], [0.01, 0.01]]),
        "ssim": np.array([[1.0, 0.5], [0.5, 0.5]]),
        "object_mse": np.array([[np.nan, np.nan], [0.04, 0.02]]),
    }
    s = summarise(values, holds_object=np.array([False, True]))
    assert s["psnr"] == pytest.approx([40.0, 20.0])  # (60 + 20) / 2, then 20
    assert s["psnr_of_mean_mse"][0] == pytest.approx(10 * math.log10(1 / 0.005))
    assert s["object_mse"] == pytest.approx([0.04, 0.02])  # the video without objects left out
    assert s["objects"] == {"videos": 1, "mse": 0.01, "psnr": pytest.approx(20.0),
                            "psnr_of_mean_mse": pytest.approx(20.0), "ssim": 0.5}  # fmt: skip
    assert s["mean"]["object_mse"] == pytest.approx(0.03)
