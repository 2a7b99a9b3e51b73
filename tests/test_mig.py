"""MIG and its estimators on arrays with known answers: copies, noise, swapped groups."""

from __future__ import annotations

import numpy as np
import pytest

from vidlat.pipeline.mig import (
    discrete_mi,
    entropy,
    equal_frequency_bins,
    mig_eq8,
    mig_per_dimension,
    mutual_information,
    pairwise_distances,
    standardise,
)

N = 800


@pytest.fixture(scope="module")
def factors():
    """Two content factors (4 and 3 classes), one pose factor (a binned continuous value)."""
    rng = np.random.default_rng(0)
    shape, background = rng.integers(0, 4, N), rng.integers(0, 3, N)
    pose_value = rng.random(N)
    return {
        "content": {"shape": shape, "background": background},
        "pose": {"colour": equal_frequency_bins(pose_value, 5)},
        "pose_value": pose_value,
        "rng": rng,
    }


def test_entropy_of_uniform_labels_is_log_k():
    labels = np.repeat(np.arange(4), 500)
    assert entropy(labels) == pytest.approx(np.log(4), abs=0.01)
    assert entropy(np.zeros(100, np.int64)) == pytest.approx(0.0, abs=1e-9)


def test_equal_frequency_bins_split_evenly_and_keep_ties():
    values = np.random.default_rng(1).normal(size=1000)
    counts = np.bincount(equal_frequency_bins(values, 10))
    assert len(counts) == 10 and counts.min() >= 95 and counts.max() <= 105
    assert equal_frequency_bins(np.array([0.0, 0, 0, 1, 1, 2]), 20).tolist() == [0, 0, 0, 1, 1, 2]


def test_ross_estimate_is_entropy_for_a_copy_and_zero_for_noise(factors):
    labels = factors["content"]["shape"]
    copy = pairwise_distances(standardise(labels[:, None] + 0.01 * factors["rng"].normal(size=N)))
    noise = pairwise_distances(standardise(factors["rng"].normal(size=(N, 3))))
    assert mutual_information(labels, copy) == pytest.approx(entropy(labels), abs=0.05)
    assert mutual_information(labels, noise) < 0.05


def test_mig_is_one_for_copies_zero_for_noise_minus_one_when_swapped(factors):
    rng = factors["rng"]
    c, p = factors["content"], factors["pose"]
    z_c = np.stack([c["shape"], c["background"]], 1) + 0.01 * rng.normal(size=(N, 2))
    z_p = factors["pose_value"][:, None] + 0.0 * rng.normal(size=(N, 1))
    good = mig_eq8(c, p, z_c, z_p)
    assert good["mig"] > 0.9
    assert good["content"]["shape"]["I_own"] == pytest.approx(np.log(4), abs=0.1)
    assert good["content"]["shape"]["I_other"] < 0.05
    noise = mig_eq8(c, p, rng.normal(size=(N, 2)), rng.normal(size=(N, 1)))
    assert abs(noise["mig"]) < 0.05
    assert mig_eq8(c, p, z_p, z_c)["mig"] < -0.9  # content in z_p, pose in z_c


def test_per_dimension_mig_rewards_one_dimension_per_factor(factors):
    rng = factors["rng"]
    both = factors["content"] | factors["pose"]
    copies = np.stack([both["shape"], both["background"], factors["pose_value"]], 1)
    z = np.concatenate([copies, rng.normal(size=(N, 2))], 1)
    assert mig_per_dimension(both, z)["mig"] > 0.9
    assert mig_per_dimension(both, rng.normal(size=(N, 5)))["mig"] < 0.1
    mixed = np.concatenate([copies, copies], 1)  # every factor in two dimensions: no gap
    assert mig_per_dimension(both, mixed)["mig"] < 0.05


def test_discrete_mi_of_identical_labels_is_their_plug_in_entropy():
    labels = np.repeat(np.arange(3), [100, 200, 300])
    p = np.array([1, 2, 3]) / 6
    assert discrete_mi(labels, labels) == pytest.approx(-(p * np.log(p)).sum())
