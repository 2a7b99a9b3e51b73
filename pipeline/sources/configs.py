"""The data sources' configs (`vidlat data synth`, `moving-mnist`, `import`), torch- and Zarr-free
so `--help` and `vidlat config show` read their defaults without importing the sources."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vidlat.config import Config

Layout = Literal["vthwc", "tvhw"]
# A digit's ink fills about 20 of MNIST's 28 pixels, so collisions use a circle of 0.36 of the box.
COLLIDE = 0.36


class SynthConfig(Config):
    """Size, count and motion of the synthetic sprite videos."""

    videos: int = Field(1000, ge=1, description="number of videos V")
    frames: int = Field(32, ge=2, description="frames per video T")
    size: int = Field(64, ge=16, le=1024, description="frame height = width in pixels")
    objects: int = Field(
        2, ge=0, le=8, description="most sprites per video N; each video has 0..N, drawn uniformly"
    )
    object_size: tuple[float, float] = Field(
        (0.15, 0.3), description="smallest and largest sprite side, as fractions of the frame size"
    )
    speed: tuple[float, float] = Field(
        (0.02, 0.06), description="slowest and fastest sprite speed, in frame sizes per frame"
    )
    hue_rate: tuple[float, float] = Field(
        (0.01, 0.05), description="slowest and fastest hue turn, in turns per frame (random sign)"
    )
    seed: int = Field(0, description="random seed; the same seed gives the same bytes")
    videos_per_chunk: int = Field(8, ge=1, description="videos per Zarr chunk (and per write)")

    @model_validator(mode="after")
    def _ranges(self) -> SynthConfig:
        for name in ("object_size", "speed", "hue_rate"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}"
                )
        if self.object_size[0] * self.size < 4 or self.object_size[1] > 0.5:
            raise ValueError(
                "object_size must give sprites of at least 4 pixels and at most half a frame"
            )
        # Sprites are placed without overlap; past ~40% of the frame that placement can fail.
        if self.objects * math.pi * (self.object_size[1] / 2) ** 2 > 0.4:
            raise ValueError("objects x object_size leave too little room; lower either")
        return self


class MovingMnistConfig(Config):
    """Sources, sizes and motion of Moving MNIST over CIFAR-10 (main paper, sec. 4)."""

    mnist: Path = Field(description="MNIST idx images file, e.g. train-images-idx3-ubyte[.gz]")
    mnist_labels: Path | None = Field(
        None,
        description="MNIST idx labels file; default: beside `mnist`, named with labels-idx1 in "
        "place of images-idx3",
    )
    cifar: Path = Field(description="CIFAR-10 python folder holding data_batch_1..5 and test_batch")
    cifar_set: Literal["train", "test"] = Field(
        "train", description="backgrounds from data_batch_1..5 (train) or test_batch (test)"
    )
    videos: int = Field(1000, ge=1, description="number of videos V")
    frames: int = Field(32, ge=2, description="frames per video T")
    size: int = Field(128, ge=16, le=1024, description="frame height = width in pixels")
    digit_size: int = Field(42, ge=4, description="digit box side in pixels")
    objects: int = Field(2, ge=0, le=6, description="most digits per video N; each has 0..N")
    speed: tuple[float, float] = Field(
        (0.015, 0.04), description="slowest and fastest digit speed, in frame sizes per frame"
    )
    hue_rate: tuple[float, float] = Field(
        (0.01, 0.05), description="slowest and fastest hue turn, in turns per frame (random sign)"
    )
    seed: int = Field(0, description="random seed; the same seed gives the same bytes")
    videos_per_chunk: int = Field(8, ge=1, description="videos per Zarr chunk (and per write)")

    @model_validator(mode="after")
    def _room(self) -> MovingMnistConfig:
        if 2 * self.digit_size > self.size:
            raise ValueError(
                f"digit_size {self.digit_size} must be at most half of size {self.size}"
            )
        for name in ("speed", "hue_rate"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}"
                )
        if self.objects * math.pi * (COLLIDE * self.digit_size / self.size) ** 2 > 0.4:
            raise ValueError("objects x digit_size leave too little room; lower either")
        return self


class ImportConfig(Config):
    """Where the user's videos are, their axis order, and an optional square resize."""

    src: Path = Field(
        description="a .npy or .npz file, a Zarr array (or a group holding `videos`), a video "
        "file (.gif; .mp4/.avi/.mov/.webm with vidlat[video]), or a folder or glob of PNG/JPEG "
        "frames or of video files"
    )
    layout: Layout = Field(
        "vthwc", description="axis order: vthwc = (V, T, H, W[, C]); tvhw = (T, V, H, W[, C])"
    )
    size: int | None = Field(
        None, ge=8, le=4096, description="resize frames to size×size pixels (default: keep)"
    )
    key: str | None = Field(
        None, description="which array of a .npz, or of a Zarr group, holds the videos"
    )
    frames: int | None = Field(
        None,
        ge=1,
        description="video files: frames per clip, consecutive clips cut from each video "
        "(default: each video whole, all equally long)",
    )
    stride: int = Field(1, ge=1, description="video files: keep every stride-th frame")
    videos_per_chunk: int = Field(8, ge=1, description="videos per Zarr chunk (and per read)")
    seed: int = Field(0, description="seed of the train/val/test split")
