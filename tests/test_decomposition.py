"""Slot-vs-sprite decomposition scores (issue 11) on hand-made windows and objects, and the
background layer's scores against the synthetic generator's redrawn background."""

from __future__ import annotations

import numpy as np
import pytest

from vidlat.errors import DataError
from vidlat.pipeline.layers import background_scores
from vidlat.pipeline.scores import object_boxes
from vidlat.pipeline.sources.synth import SynthConfig, background_of, make_video
from vidlat.stages.stage1.hierarchical.decomposition import decomposition_scores, slot_centres

SIDE = 32


def to_where(xy_pixels) -> np.ndarray:
    """Pixel centres (..., 2) -> z_where (..., 4) with a fixed size."""
    xy = np.asarray(xy_pixels, np.float64) / SIDE * 2 - 1
    return np.concatenate([xy, np.full(xy.shape, 0.3)], -1)


# 1 video, 2 frames, 3 slots, 2 objects (both present)
OBJECTS = np.array([[[[8, 8], [24, 24]], [[10, 8], [24, 20]]]], np.float64)  # (1, 2, 2, 2)
PRESENT = np.array([[True, True]])


def test_centres_map_back_to_pixels():
    np.testing.assert_allclose(
        slot_centres(to_where([[8, 8], [31.5, 0.5]]), SIDE), [[8, 8], [31.5, 0.5]]
    )


def test_scores_of_hand_made_slots():
    slots = [[[8, 8], [24, 24], [16, 16]], [[10, 8], [24, 20], [16, 16]]]  # slot 2: between them
    where = to_where(np.array([slots]))  # (1, 2, 3, 4)
    presence = np.array([[[0.9, 0.8, 0.9], [0.9, 0.8, 0.1]]])  # slot 2 present in frame 0 only
    s = decomposition_scores(where, presence, OBJECTS, PRESENT, SIDE)
    assert s["recall"] == 1.0  # every object of both frames has a slot on it
    assert s["precision"] == pytest.approx(4 / 5)  # 5 present slots, 4 on an object
    assert s["count_accuracy"] == 0.5  # frame 0 counts 3 for 2 objects, frame 1 counts 2
    assert s["identity_switches"] == 0.0
    # slot 0 moved 2 px in x (std 1 px), slot 1 4 px in y (std 2 px), slot 2 stayed
    assert s["centre_spread"] == pytest.approx(((1 + 0) / 2 + (0 + 2) / 2 + 0) / 3 / SIDE)
    assert s["present_slots_per_frame"] == 2.5 and s["objects_per_frame"] == 2.0
    assert s["chance_count_accuracy"] == 1.0  # the count is always 2: a constant guess is right
    assert 0 <= s["chance_recall"] < 1 and 0 <= s["chance_precision"] < 1


def test_a_slot_that_changes_object_is_a_switch_and_far_slots_miss():
    slots = [[[8, 8], [24, 24], [0, 31]], [[24, 20], [10, 8], [0, 31]]]  # slots 0 and 1 swap
    where = to_where(np.array([slots]))
    presence = np.array([[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])
    s = decomposition_scores(where, presence, OBJECTS, PRESENT, SIDE)
    assert s["identity_switches"] == 1.0 and s["recall"] == 1.0 and s["precision"] == 1.0
    far = to_where(np.array([[[[16, 0]] * 3] * 2]))  # every slot far from both objects
    s = decomposition_scores(far, np.ones((1, 2, 3)), OBJECTS, PRESENT, SIDE)
    assert s["recall"] == 0.0 and s["precision"] == 0.0 and np.isnan(s["identity_switches"])
    assert s["centre_spread"] == 0.0  # windows that ignore the image


def test_chance_of_random_windows_is_low_for_small_radii_and_absent_objects_do_not_count():
    rng = np.random.default_rng(0)
    where = rng.uniform(-1, 1, (50, 4, 3, 4))
    objects = rng.uniform(0, SIDE, (50, 4, 2, 2))
    present = np.zeros((50, 2), bool)
    present[:25, 0] = True  # half the videos hold one object, the rest none
    s = decomposition_scores(where, np.ones((50, 4, 3)), objects, present, SIDE)
    # a disc of radius 0.1 side covers pi/100 of the frame: 3 random slots hit ~9 % of objects
    assert 0.03 < s["chance_recall"] < 0.2 and s["objects_per_frame"] == 0.5
    assert s["chance_count_accuracy"] == 0.5


def test_shapes_are_checked():
    with pytest.raises(DataError, match="z_where"):
        decomposition_scores(np.zeros((1, 2, 3, 2)), np.zeros((1, 2, 3)), OBJECTS, PRESENT, SIDE)


def test_background_scores_on_hand_made_layers():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)  # video 0 empty, 1 has a sprite
    frames = np.repeat(truth[:, None], 3, axis=1).copy()  # (V, T, H, W, C)
    boxes = np.zeros((2, 3, 16, 16), bool)
    boxes[1, :, 4:8, 4:8] = True
    frames[1][boxes[1]] = 255  # a white sprite in video 1
    present = np.array([[False], [True]])
    clean = background_scores(np.repeat(truth[:, None], 3, axis=1), frames, present, truth, boxes)
    assert clean["object_free_videos"] == 1 and clean["ssim_object_free"] == pytest.approx(1.0)
    assert clean["mse_in_boxes"] == 0.0 and clean["sprites_left"] == 0.0
    assert clean["frame_mse_in_boxes"] > 0 and clean["ssim_true_background"] == pytest.approx(1.0)
    copied = background_scores(frames, frames, present, truth, boxes)  # a layer with the sprite
    assert copied["sprites_left"] == pytest.approx(1.0)
    grey = background_scores(np.full_like(frames, 128), frames, present)
    assert grey["ssim_object_free"] < 0.2 and "sprites_left" not in grey


def test_synth_background_is_redrawn_without_sprites():
    cfg = SynthConfig(videos=12, frames=4, size=32, objects=1, seed=3)
    for i in range(12):
        video = make_video(cfg, i)
        background = background_of(cfg, i)
        if video.factors["present"].any():
            assert (video.frames != background).any()
        else:
            assert (video.frames == background).all()
        boxes = object_boxes(video.factors["position"][None], video.factors["size"][None],
                             video.factors["present"][None], 32, 32)[0]  # fmt: skip
        outside = ~boxes[..., None].repeat(3, -1)  # every pixel outside the sprite box is bare
        assert (
            video.frames[outside] == np.broadcast_to(background, video.frames.shape)[outside]
        ).all()
