"""Synthetic videos: coloured sprites bouncing over procedural textures, with ground-truth factors.

Built like the main paper's Moving MNIST without any download. Per video: 0..N sprites (count drawn
uniformly), each of a shape class and a side length; a sprite's hue turns smoothly at its own rate;
sprites bounce off the frame edges and off each other (equal-mass elastic collision of bounding
circles); the background is one of several texture classes with random parameters, static in time.
Backgrounds use a muted palette and sprites saturated colours with a dark outline, so sprites stand
out.

Every video is drawn from its own generator seeded by (seed, video index), so a chunk can be made on
its own and the bytes do not depend on the chunk size. The motion and colour helpers here are shared
with the Moving MNIST source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidlat.errors import ConfigError
from vidlat.pipeline.sources.configs import SynthConfig
from vidlat.progress import progress_bar
from vidlat.store import places
from vidlat.store.videos import VideoWriter, create_videos, make_split

SHAPES = ("square", "disc", "triangle", "plus", "ring")
BACKGROUNDS = ("stripes", "checkerboard", "blobs", "gradient", "dots")
OUTLINE = 16  # uint8 grey of the sprite outline: darker than any background (value >= 0.3)

FACTOR_DOCS = {
    "shape_class": f"(V, N) int32: index into {SHAPES}; -1 where the slot is empty",
    "size": "(V, N) float32: sprite side length in pixels; 0 where empty",
    "present": "(V, N) bool: slot holds an object (objects fill slots 0..n_objects-1)",
    "position": "(V, T, N, 2) float32: sprite centre (x, y) in pixels from the top-left corner; 0 "
    "where empty",
    "colour": "(V, T, N, 3) float32: sprite fill RGB in [0, 1]; 0 where empty",
    "background_class": f"(V,) int32: index into {BACKGROUNDS}",
    "n_objects": "(V,) int32: number of objects, drawn uniformly from 0..N",
}


@dataclass
class Video:
    """One generated video: uint8 frames (T, H, W, C) and its factors (per-video arrays)."""

    frames: np.ndarray
    factors: dict[str, np.ndarray]


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (any equal shapes) -> RGB (..., 3) in [0, 1]; hue wraps around."""
    k = (np.array([5.0, 3.0, 1.0]) + (np.asarray(h)[..., None] % 1.0) * 6) % 6
    ramp = np.clip(np.minimum(k, 4 - k), 0, 1)
    return np.asarray(v)[..., None] * (1 - np.asarray(s)[..., None] * ramp)


def hue_colours(
    rng: np.random.Generator,
    n: int,
    n_frames: int,
    rate: tuple[float, float],
    saturation: tuple[float, float] = (0.75, 1.0),
    value: tuple[float, float] = (0.85, 1.0),
) -> np.ndarray:
    """Colours (T, n, 3) in [0, 1]: each object's hue turns at a constant random rate."""
    hue0 = rng.random(n)
    turn = rng.uniform(*rate, size=n) * rng.choice([-1.0, 1.0], size=n)
    sat, val = rng.uniform(*saturation, size=n), rng.uniform(*value, size=n)
    hue = hue0[None, :] + turn[None, :] * np.arange(n_frames)[:, None]  # (T, n)
    return hsv_to_rgb(hue, np.broadcast_to(sat, hue.shape), np.broadcast_to(val, hue.shape))


def place(
    rng: np.random.Generator, radius: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Non-overlapping centres (n, 2) with lo <= centre <= hi (each (n, 2)); ConfigError if none.

    Objects are placed one after another; when one finds no room beside those already placed, the
    whole placement starts again, since an early object may be what blocks the later ones.
    """
    pos = np.zeros((len(radius), 2))
    for _ in range(100):
        for i in range(len(radius)):
            for _ in range(100):
                pos[i] = rng.uniform(lo[i], hi[i])
                if all(np.hypot(*(pos[i] - pos[j])) >= radius[i] + radius[j] for j in range(i)):
                    break
            else:
                break  # object i found no room: restart with all objects
        else:
            return pos
    raise ConfigError("could not place the objects without overlap; use fewer or smaller ones")


def _collide(pos: np.ndarray, vel: np.ndarray, radius: np.ndarray) -> None:
    """In place: overlapping approaching pairs swap velocity components along the contact normal
    (elastic, equal masses), and every overlapping pair is pushed apart to touching."""
    gap = pos[None, :, :] - pos[:, None, :]  # (n, n, 2): j - i
    dist = np.hypot(gap[..., 0], gap[..., 1])
    touching = np.triu(dist < radius[:, None] + radius[None, :], k=1)
    for i, j in np.argwhere(touching):
        normal = gap[i, j] / dist[i, j] if dist[i, j] > 1e-9 else np.array([1.0, 0.0])
        closing = float((vel[j] - vel[i]) @ normal)
        if closing < 0:
            vel[i] += closing * normal
            vel[j] -= closing * normal
        push = (radius[i] + radius[j] - dist[i, j]) / 2
        pos[i] -= push * normal
        pos[j] += push * normal


def _walls(pos: np.ndarray, vel: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """In place: reflect centres that left [lo, hi] (each (n, 2)); turn their velocity inwards."""
    below, above = pos < lo, pos > hi
    pos[below] = 2 * lo[below] - pos[below]
    vel[below] = np.abs(vel[below])
    pos[above] = 2 * hi[above] - pos[above]
    vel[above] = -np.abs(vel[above])
    np.clip(pos, lo, hi, out=pos)  # a step longer than the free range would still leave it


def bounce_paths(
    pos: np.ndarray,
    vel: np.ndarray,
    radius: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    n_frames: int,
) -> np.ndarray:
    """Centres (T, n, 2) from start centres and velocities (n, 2) (pixels, pixels per frame).

    Objects are circles of `radius` (n,) that bounce off each other; centres stay in [lo, hi]
    (each (n, 2)). Collisions and walls are resolved a few times per step, so that a wall cannot
    push one object into another unnoticed.
    """
    pos, vel = pos.astype(np.float64), vel.astype(np.float64)
    out = np.empty((n_frames, len(pos), 2))
    out[0] = pos
    for t in range(1, n_frames):
        pos += vel
        for _ in range(3):
            _collide(pos, vel, radius)
            _walls(pos, vel, lo, hi)
        out[t] = pos
    return out


def start_motion(
    rng: np.random.Generator, radius: np.ndarray, half: np.ndarray, extent: float, speed: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Start centres and velocities (n, 2) plus the centre bounds lo, hi (n, 2) of a square frame.

    radius: collision circles (n,); half: half-extent kept inside the frame (n,); speed: (low,
    high) in pixels per frame.
    """
    lo = np.repeat(half[:, None], 2, axis=1)
    hi = extent - lo
    pos = place(rng, radius, lo, hi)
    angle = rng.uniform(0, 2 * np.pi, size=len(radius))
    direction = np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (n, 2)
    vel = rng.uniform(*speed, size=len(radius))[:, None] * direction
    return pos, vel, lo, hi


def shape_mask(shape_class: int, side: int) -> np.ndarray:
    """Bool (side, side) mask of a shape drawn inside the unit circle of its box."""
    c = (np.arange(side) + 0.5) / side * 2 - 1
    u, v = np.meshgrid(c, c)  # u: x to the right, v: y downwards
    r, au, av = np.hypot(u, v), np.abs(u), np.abs(v)
    name = SHAPES[shape_class]
    if name == "square":
        return np.maximum(au, av) <= 0.7
    if name == "disc":
        return r <= 1
    if name == "triangle":  # apex up at (0, -1), base at v = 0.5 (an inscribed triangle)
        return (v <= 0.5) & (au <= (v + 1) / 1.5 * 0.866)
    if name == "plus":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    return (r >= 0.45) & (r <= 1)  # ring


def sprite_masks(shape_class: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(fill, outline) bool masks (side, side): the outline is the shape's one-pixel border, left
    out where it would cover more than half of the shape (thin or tiny sprites)."""
    mask = np.pad(shape_mask(shape_class, side), 1)
    inner = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    if inner.sum() * 2 < mask.sum():  # thin or tiny: an outline would eat the colour, so none
        return mask[1:-1, 1:-1], np.zeros_like(inner)
    return inner, mask[1:-1, 1:-1] & ~inner


def paint(frames: np.ndarray, mask: np.ndarray, corner: np.ndarray, colour: np.ndarray) -> None:
    """In place: set `mask` (s, s) pixels of frames (T, H, W, C) at top-left corners (T, 2) (x, y)
    to colour (T, C) or (C,) uint8, for all frames at once."""
    dy, dx = np.nonzero(mask)
    ys = corner[:, 1, None] + dy[None, :]  # (T, P)
    xs = corner[:, 0, None] + dx[None, :]
    colour = np.broadcast_to(colour, (len(frames), frames.shape[-1]))
    frames[np.arange(len(frames))[:, None], ys, xs] = colour[:, None, :]


def render_background(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    """A static texture (size, size, 3) uint8 of class BACKGROUNDS[kind], in a muted palette."""
    c = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(c, c)
    name = BACKGROUNDS[kind]
    if name == "stripes":
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(2, 6), rng.uniform(0, 2 * np.pi)
        across = x * np.cos(angle) + y * np.sin(angle)  # distance along the stripes' normal
        pattern = np.sin(2 * np.pi * freq * across + phase) > 0
    elif name == "checkerboard":
        cells, (ox, oy) = rng.integers(3, 9), rng.random(2)
        pattern = (np.floor(x * cells + ox) + np.floor(y * cells + oy)) % 2
    elif name == "blobs":  # smooth noise: a sum of random Gaussian bumps
        cx, cy, width = rng.random(6), rng.random(6), rng.uniform(0.08, 0.2, 6)
        d2 = (x[..., None] - cx) ** 2 + (y[..., None] - cy) ** 2
        pattern = np.exp(-d2 / (2 * width**2)).sum(-1)
        pattern = pattern / pattern.max()
    elif name == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(angle) + y * np.sin(angle)
        pattern = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-9)
    else:  # dots on a jittered square grid
        cells, (ox, oy), radius = rng.integers(4, 9), rng.random(2), rng.uniform(0.2, 0.35)
        fx, fy = (x * cells + ox) % 1 - 0.5, (y * cells + oy) % 1 - 0.5
        pattern = np.hypot(fx, fy) < radius
    value = rng.uniform(0.3, 0.65)
    values = np.array([value, value + rng.choice([-1, 1]) * rng.uniform(0.15, 0.25)])
    colours = hsv_to_rgb(rng.random(2), rng.uniform(0.1, 0.35, 2), np.clip(values, 0.3, 0.75))
    pattern = np.asarray(pattern, dtype=np.float64)[..., None]
    return np.rint(255 * (colours[0] * (1 - pattern) + colours[1] * pattern)).astype(np.uint8)


# Each factor's dimension names after `video` (the dataset's own `time` axis is shared).
FACTOR_DIMS = {
    "shape_class": ("object",),
    "size": ("object",),
    "present": ("object",),
    "position": ("time", "object", "xy"),
    "colour": ("time", "object", "rgb"),
    "background_class": (),
    "n_objects": (),
    "digit_index": ("object",),  # Moving MNIST's own two
    "background_index": (),
}


def pad_factors(n_max: int, n_frames: int, **per_object: np.ndarray) -> dict[str, np.ndarray]:
    """Per-video factors with the object axis padded from n to n_max (empty: -1 / 0 / False)."""
    n = len(per_object["size"])
    out = {
        "shape_class": np.full(n_max, -1, np.int32),
        "size": np.zeros(n_max, np.float32),
        "present": np.arange(n_max) < n,
        "position": np.zeros((n_frames, n_max, 2), np.float32),
        "colour": np.zeros((n_frames, n_max, 3), np.float32),
    }
    for name, value in per_object.items():
        if out[name].ndim == 1:  # per video (N,)
            out[name][:n] = value
        else:  # per frame (T, N, ...)
            out[name][:, :n] = value
    return out


def _scene(cfg: SynthConfig, index: int) -> tuple[np.random.Generator, int, int, np.ndarray]:
    """The first draws of video `index`: its generator, sprite count, background class and
    background (S, S, 3) uint8."""
    rng = np.random.default_rng([cfg.seed, index])
    n = int(rng.integers(0, cfg.objects + 1))
    kind = int(rng.integers(len(BACKGROUNDS)))
    return rng, n, kind, render_background(rng, kind, cfg.size)


def background_of(cfg: SynthConfig, index: int) -> np.ndarray:
    """Video `index`'s static background without its sprites, (S, S, 3) uint8: the ground truth
    of a background layer."""
    return _scene(cfg, index)[3]


def make_video(cfg: SynthConfig, index: int) -> Video:
    """Video `index` of the dataset: frames (T, S, S, 3) uint8 and its factors."""
    rng, n, kind, background = _scene(cfg, index)
    size = cfg.size
    lo_side, hi_side = (max(4, round(f * size)) for f in cfg.object_size)
    sides = rng.integers(lo_side, hi_side + 1, size=n)
    classes = rng.integers(len(SHAPES), size=n)
    speed = (cfg.speed[0] * size, cfg.speed[1] * size)
    pos, vel, lo, hi = start_motion(rng, sides / 2, sides / 2, size, speed)
    paths = bounce_paths(pos, vel, sides / 2, lo, hi, cfg.frames)  # (T, n, 2)
    colours = hue_colours(rng, n, cfg.frames, cfg.hue_rate)  # (T, n, 3)
    frames = np.repeat(background[None], cfg.frames, axis=0)
    for k in range(n):
        corner = np.clip(np.rint(paths[:, k] - sides[k] / 2).astype(np.int64), 0, size - sides[k])
        fill, outline = sprite_masks(int(classes[k]), int(sides[k]))
        paint(frames, fill, corner, np.rint(colours[:, k] * 255).astype(np.uint8))
        paint(frames, outline, corner, np.full(3, OUTLINE, np.uint8))
    factors = pad_factors(
        cfg.objects,
        cfg.frames,
        shape_class=classes,
        size=sides.astype(float),
        position=paths,
        colour=colours,
    )
    factors["background_class"] = np.int32(kind)
    factors["n_objects"] = np.int32(n)
    return Video(frames, factors)


def write_videos(
    writer: VideoWriter, start: int, videos: list[Video], docs: dict[str, str]
) -> None:
    """Write a run of whole videos and each factor of `docs` from `start` on."""
    writer.write(start, np.stack([v.frames for v in videos]))
    for name, doc in docs.items():
        values = np.stack([v.factors[name] for v in videos])
        writer.write_factor(name, start, values, doc, dims=FACTOR_DIMS.get(name))


def make_synth(cfg: SynthConfig, out: str | Path, overwrite: bool = False) -> Path:
    """Write the synthetic dataset (V, T, S, S, 3) with its factors to `out`; returns `out`."""
    out = places.local_folder(out, "a video dataset")
    step = cfg.videos_per_chunk
    shape = (cfg.videos, cfg.frames, cfg.size, cfg.size, 3)
    writer = create_videos(out, *shape, videos_per_chunk=step, overwrite=overwrite)
    with progress_bar("synth", total=cfg.videos, unit="videos") as bar:
        for start in range(0, cfg.videos, step):
            stop = min(start + step, cfg.videos)
            videos = [make_video(cfg, i) for i in range(start, stop)]
            write_videos(writer, start, videos, FACTOR_DOCS)
            bar.advance(stop - start)
    return writer.finish("synth", cfg.model_dump(mode="json"), make_split(cfg.videos, cfg.seed))
