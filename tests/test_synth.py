"""Synthetic sprites: deterministic bytes, chunk-free results, factors that agree with pixels."""

from __future__ import annotations

import numpy as np
import pytest

from vidlat.config import resolve_config
from vidlat.errors import ConfigError
from vidlat.pipeline.sources.synth import (
    BACKGROUNDS,
    SHAPES,
    SynthConfig,
    make_synth,
    make_video,
    sprite_masks,
)
from vidlat.store.videos import open_videos

TINY = {"videos": 10, "frames": 12, "size": 32, "objects": 3, "videos_per_chunk": 4}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return open_videos(make_synth(SynthConfig(**TINY), tmp_path_factory.mktemp("s") / "v.zarr"))


@pytest.fixture(scope="module")
def many():
    """Factors and frames of 80 videos with up to 4 sprites, made without a store."""
    cfg = SynthConfig(videos=80, frames=16, size=32, objects=4, object_size=(0.2, 0.3))
    return cfg, [make_video(cfg, i) for i in range(cfg.videos)]


def test_dataset_shape_factors_config_and_split(dataset):
    assert dataset.shape == (10, 12, 32, 32, 3) and dataset.source == "synth"
    assert set(dataset.factor_names()) == {
        "shape_class",
        "size",
        "present",
        "position",
        "colour",
        "background_class",
        "n_objects",
    }
    assert dataset.read_factor("position", slice(None)).shape == (10, 12, 3, 2)
    assert dataset.read_factor("colour", [0]).shape == (1, 12, 3, 3)
    saved = dataset.attrs["source_config"]  # the resolved config, kept in the group attributes
    assert saved["objects"] == 3 and saved["size"] == 32
    assert dataset.attrs["source_config"]["videos"] == 10
    assert sorted(np.concatenate(list(dataset.split.values())).tolist()) == list(range(10))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, dataset):
    again = open_videos(make_synth(SynthConfig(**TINY), tmp_path / "a.zarr"))
    other = open_videos(make_synth(SynthConfig(**TINY, seed=1), tmp_path / "b.zarr"))
    assert again.fingerprint == dataset.fingerprint
    assert other.fingerprint != dataset.fingerprint


def test_chunking_does_not_change_the_data(tmp_path):
    small = {**TINY, "videos": 6}
    a = open_videos(make_synth(SynthConfig(**{**small, "videos_per_chunk": 2}), tmp_path / "a"))
    b = open_videos(make_synth(SynthConfig(**{**small, "videos_per_chunk": 8}), tmp_path / "b"))
    np.testing.assert_array_equal(a.read(slice(None)), b.read(slice(None)))
    for name in a.factor_names():
        np.testing.assert_array_equal(
            a.read_factor(name, slice(None)), b.read_factor(name, slice(None))
        )
    assert a.array.chunks[0] == 2 and b.array.chunks[0] == 6


def test_presence_counts_and_classes_agree(many):
    cfg, videos = many
    for v in videos:
        f = v.factors
        n = int(f["n_objects"])
        assert f["present"].tolist() == [True] * n + [False] * (cfg.objects - n)
        assert ((f["shape_class"] >= 0) == f["present"]).all()
        assert (f["size"][f["present"]] >= 6).all() and (f["size"][~f["present"]] == 0).all()
    assert {int(v.factors["n_objects"]) for v in videos} == set(range(cfg.objects + 1))
    assert {int(v.factors["background_class"]) for v in videos} == set(range(len(BACKGROUNDS)))
    shapes = np.concatenate([v.factors["shape_class"] for v in videos])
    assert set(shapes[shapes >= 0].tolist()) == set(range(len(SHAPES)))


def test_sprite_pixels_carry_the_saved_colour_and_stand_out(many):
    cfg, videos = many
    for v in videos[:30]:
        f = v.factors
        for k in np.flatnonzero(f["present"]):
            side = int(f["size"][k])
            fill, outline = sprite_masks(int(f["shape_class"][k]), side)
            assert fill.sum() * 2 >= (fill | outline).sum()  # mostly colour, not outline
            for t in range(cfg.frames):
                x0, y0 = np.rint(f["position"][t, k] - side / 2).astype(int)
                patch = v.frames[t, y0 : y0 + side, x0 : x0 + side].astype(int)
                # Touching sprites may share a pixel or two: judge only pixels clear of the others.
                yy, xx = np.mgrid[y0 : y0 + side, x0 : x0 + side] + 0.5
                clear = np.ones_like(fill)
                for j in np.flatnonzero(f["present"]):
                    if j != k:
                        (x, y), r = f["position"][t, j], f["size"][j] / 2
                        clear &= np.hypot(xx - x, yy - y) > r + 2
                expect = np.rint(f["colour"][t, k] * 255)
                assert np.abs(patch[fill & clear] - expect).max(initial=0) <= 1
                assert (np.ptp(patch[fill & clear], axis=-1) > 120).all()  # saturated sprite
                assert (patch[outline & clear] < 40).all()  # dark outline


def test_background_is_muted_and_static_away_from_sprites(many):
    cfg, videos = many
    yy, xx = np.mgrid[0 : cfg.size, 0 : cfg.size] + 0.5
    for v in videos:
        far = np.ones((cfg.size, cfg.size), bool)
        for k in np.flatnonzero(v.factors["present"]):
            reach = v.factors["size"][k] * 0.75
            for x, y in v.factors["position"][:, k]:
                far &= np.hypot(xx - x, yy - y) > reach
        assert far.any()
        pixels = v.frames[:, far]  # (T, P, 3)
        assert (pixels == pixels[0]).all()
        assert np.ptp(pixels[0].astype(int), axis=-1).max() <= 70  # low saturation


def test_positions_stay_inside_and_sprites_do_not_overlap(many):
    cfg, videos = many
    collisions = 0
    for v in videos:
        f = v.factors
        n, pos = int(f["n_objects"]), f["position"]
        r = f["size"][:n] / 2
        assert (pos[:, :n] >= r[:, None] - 1e-4).all()
        assert (pos[:, :n] <= cfg.size - r[:, None] + 1e-4).all()
        for i in range(n):
            for j in range(i + 1, n):
                gap = np.hypot(*(pos[:, i] - pos[:, j]).T) - r[i] - r[j]
                assert gap.min() > -1.0, "sprites pass through each other"
                collisions += int((gap < 0.5).sum())
    assert collisions > 0  # the check above would be empty if sprites never met


def test_direction_changes_only_at_edges_and_at_other_sprites(many):
    cfg, videos = many
    step = (
        cfg.speed[1] * cfg.size * 2
    )  # the most a centre moves per frame (speeds add on collision)
    at_walls = 0
    for v in videos:
        f = v.factors
        n, pos = int(f["n_objects"]), f["position"]
        r = f["size"][:n] / 2
        for k in range(n):
            vel = np.diff(pos[:, k], axis=0)  # (T-1, 2)
            assert np.abs(vel).max() <= step + 1e-3
            for t, axis in zip(*np.nonzero(np.sign(vel[1:]) * np.sign(vel[:-1]) < 0), strict=True):
                p = pos[t + 1, k, axis]
                wall = min(p - r[k], cfg.size - r[k] - p) <= step
                gaps = [
                    np.hypot(*(pos[t + 1, k] - pos[t + 1, j])) - r[k] - r[j]
                    for j in range(n)
                    if j != k
                ]
                assert wall or min(gaps, default=np.inf) <= step, (t, axis)
                at_walls += int(wall)
    assert at_walls > 0


def test_colour_changes_smoothly_over_time(many):
    cfg, videos = many
    for v in videos:
        for k in np.flatnonzero(v.factors["present"]):
            colour = v.factors["colour"][:, k]
            assert ((colour >= 0) & (colour <= 1)).all()
            assert np.abs(colour[-1] - colour[0]).max() > 0.02
            assert np.abs(np.diff(colour, axis=0)).max() <= 6 * cfg.hue_rate[1] + 1e-6


def test_zero_objects_gives_a_static_texture(tmp_path):
    data = open_videos(
        make_synth(SynthConfig(**{**TINY, "objects": 0, "videos": 3}), tmp_path / "v")
    )
    frames = data.read(slice(None))
    assert (frames == frames[:, :1]).all()
    assert data.read_factor("position", [0]).shape == (1, 12, 0, 2)


def test_config_refuses_crowded_or_inverted_settings():
    with pytest.raises(ConfigError, match="too little room"):
        resolve_config(SynthConfig, objects=8, object_size=[0.3, 0.5])
    with pytest.raises(ConfigError, match="speed"):
        resolve_config(SynthConfig, speed=[0.1, 0.05])
    with pytest.raises(ConfigError, match="videos"):
        resolve_config(SynthConfig, videos=0)
