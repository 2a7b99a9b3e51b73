"""Table-1 probes (and MIG through the store) on a store whose latents hold planted factors."""

from __future__ import annotations

import numpy as np
import pytest

from vidlat.pipeline.mig import MigConfig, run_mig
from vidlat.pipeline.probes import ProbeConfig, factor_targets, latent_groups, ratios, run_probes
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.videos import make_split
from vidlat.store.writer import create_store

V, T, N = 200, 4, 2
FAST = ProbeConfig(hidden=32, steps=300, lr=3e-3, batch_size=128)


def planted_factors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Synthetic-source factors: 0..2 objects of 5 shapes, 5 backgrounds, colours per frame."""
    n = rng.integers(0, N + 1, V)
    present = np.arange(N)[None, :] < n[:, None]  # (V, N)
    shape = np.where(present, rng.integers(0, 5, (V, N)), -1).astype(np.int32)
    colour = rng.random((V, T, N, 3)).astype(np.float32) * present[:, None, :, None]
    return {"present": present, "shape_class": shape, "colour": colour,
            "background_class": rng.integers(0, 5, V).astype(np.int32)}  # fmt: skip


def write_planted(path, factors, content: np.ndarray, pose: np.ndarray) -> LatentStore:
    """A complete store with content (V, T, 3) and pose (V, T, 3) fields plus factor_* aux."""
    specs = [FieldSpec("content", "content", (content.shape[-1],)),
             FieldSpec("pose", "pose", (pose.shape[-1],))]  # fmt: skip
    specs += [FieldSpec(f"factor_{k}", "aux", v.shape[1:], str(v.dtype), per_frame=False)
              for k, v in factors.items()]  # fmt: skip
    attrs = {"split": make_split(V), "encoder": {"hash": "x"}, "source": {"fingerprint": "y"}}
    writer = create_store(path, specs, V, T, videos_per_chunk=50, attrs=attrs)
    data = {"content": content, "pose": pose} | {f"factor_{k}": v for k, v in factors.items()}
    for i in range(writer.n_chunks):
        a, b = writer.chunk_range(i)
        writer.write_chunk(i, {k: v[a:b] for k, v in data.items()})
    writer.mark_complete()
    return LatentStore.open(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Background and shapes planted in content, summed colour in pose (plus a little noise)."""
    rng = np.random.default_rng(0)
    factors = planted_factors(rng)
    targets = factor_targets_from(factors)
    noise = lambda *s: 0.02 * rng.normal(size=s)  # noqa: E731
    per_video = np.stack([targets["background"], *targets["shape"].T], -1)  # (V, 3)
    content = np.repeat(per_video[:, None], T, axis=1) + noise(V, T, 3)
    pose = factors["colour"].sum(2) + noise(V, T, 3)
    return write_planted(tmp_path_factory.mktemp("planted") / "l.zarr", factors, content, pose)


def factor_targets_from(factors) -> dict[str, np.ndarray]:
    """Per-video background class (V,) and the sorted shape classes (V, N), 9 for an empty slot:
    a code from which the multiset can be read."""
    shapes = np.sort(np.where(factors["present"], factors["shape_class"], 9), axis=1)
    return {"background": factors["background_class"].astype(float), "shape": shapes.astype(float)}


def test_groups_are_found_by_role(planted):
    assert latent_groups(planted) == {"z": ["content", "pose"], "content": ["content"],
                                      "pose": ["pose"]}  # fmt: skip


def test_shape_multiset_ignores_slot_order_and_sum_adds_classes(tmp_path):
    factors = planted_factors(np.random.default_rng(1))
    factors["present"][:4] = [[True, True], [True, True], [False, False], [True, False]]
    factors["shape_class"][:4] = [[2, 1], [1, 2], [-1, -1], [3, -1]]
    z = np.zeros((V, T, 2), np.float32)
    store = write_planted(tmp_path / "s.zarr", factors, z, z)
    vids, frames = np.arange(4), np.zeros(4, np.int64)
    multiset = factor_targets(store, vids, frames)["shape"]
    assert list(multiset) == [(1, 2), (1, 2), (), (3,)]
    assert factor_targets(store, vids, frames, "sum")["shape"].tolist() == [3, 3, 0, 3]
    colour = factor_targets(store, vids, frames)["colour"]
    assert np.allclose(colour[3], factors["colour"][3, 0, 0])  # only the present object


def test_probe_reads_a_factor_from_the_field_that_holds_it(planted):
    result = run_probes(planted, FAST)
    bg, colour = result["background"], result["colour"]
    assert bg["content"] > 0.9 and bg["z"] > 0.9
    assert bg["pose"] < max(bg["chance"] + 0.2, 0.45)  # colour says nothing of the background
    assert bg["z_c/z"] == pytest.approx(bg["content"] / bg["z"])
    assert bg["z_p/z"] == pytest.approx(bg["pose"] / bg["z"]) and bg["z_p/z"] < 0.5
    assert result["shape"]["content"] > 0.7 and result["shape"]["classes"] > 5
    assert colour["metric"] == "mse" and colour["r2"]["pose"] > 0.8
    assert colour["content"] > 5 * colour["pose"] and colour["z_c/z"] > 5
    # content knows how many objects there are, hence part of their summed colour, not the rest
    assert colour["r2"]["content"] < 0.7 < colour["r2"]["pose"]
    assert result["frames"]["train"] == len(planted.split["train"]) * T


def test_ratios_handle_missing_groups():
    assert ratios({"z": 0.8, "content": 0.4, "pose": None}) == {"z_c/z": 0.5, "z_p/z": None}
    assert ratios({"z": 0.0, "content": 0.4, "pose": 0.1}) == {"z_c/z": None, "z_p/z": None}


def test_mig_of_the_store_sees_the_planted_split(planted):
    result = run_mig(planted, MigConfig(samples=V, bins=4))
    assert result["samples"] == V
    assert set(result["content"]) == {"shape", "background"}
    assert set(result["pose"]) == {"colour_r", "colour_g", "colour_b"}  # no position factor here
    assert result["mig"] > 0.5
    assert result["content"]["background"]["I_own"] > 5 * result["content"]["background"]["I_other"]
