"""The user's own videos (.npy, .npz, a Zarr array, or video files) checked and stored as a uint8
video dataset. Video files (.gif, .mp4, ..., folders or globs of PNG/JPEG frames) are read by
sources/video_files.py and cut into clips of --frames at --stride.

Accepted: (V, T, H, W[, C]) (`vthwc`), or (T, V, H, W[, C]) (`tvhw`, the layout of the common
mnist_test_seq.npy); grey (no channel axis or C = 1) or RGB (C = 3); uint8 kept, other integers
in 0..255 cast, floats in [0, 1] scaled to 0..255. Frames must be square unless a size S is given,
which resizes every frame to S×S (bilinear, Pillow). The source is read a chunk of videos at a time
(a .npy through a memory map), so a large file is never held in memory twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from PIL import Image

from vidlat.errors import ConfigError, DataError
from vidlat.pipeline.sources.configs import ImportConfig, Layout
from vidlat.pipeline.sources.video_files import is_video_source, load_video_files
from vidlat.progress import progress_bar
from vidlat.store import places
from vidlat.store.videos import create_videos, make_split


def _pick(path: Path, names: list[str], key: str | None) -> str:
    """The member to read: `key`, else the only one; DataError otherwise."""
    if key is not None and key not in names:
        raise DataError(f"{path} has no array {key!r}; it holds {names}")
    if key is not None:
        return key
    if len(names) == 1:
        return names[0]
    raise DataError(
        f"{path} holds {len(names)} arrays {names}; say which one has the videos with "
        "`key: NAME` in a --config file"
    )


def open_array(path: Path, key: str | None = None) -> Any:
    """The raw array (np.memmap, np.ndarray or zarr.Array) of a .npy, .npz or Zarr path."""
    if not path.exists():
        raise DataError(f"{path} does not exist; give a .npy or .npz file or a Zarr array folder")
    try:
        if path.suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return npz[_pick(path, list(npz.files), key)]
        if path.is_dir():
            node = zarr.open(store=str(path), mode="r")
            if isinstance(node, zarr.Array):
                return node
            if key is None and isinstance(node.get("videos"), zarr.Array):
                return node["videos"]  # a get, not a listing: vidlat datasets hold a config.yaml
            return node[_pick(path, sorted(node.array_keys()), key)]
    except DataError:
        raise
    except Exception as exc:  # numpy and zarr raise many types for an unreadable file
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    raise DataError(f"{path} is not a .npy, .npz or Zarr folder; convert it to one of those")


def video_shape(shape: tuple[int, ...], layout: Layout, path: Path, size: int | None):
    """(V, T, H, W, C) of a raw array shape in `layout`, after the checks on rank, sizes, C."""
    if len(shape) not in (4, 5):
        raise DataError(
            f"{path} has shape {shape}; videos must be (V, T, H, W[, C]), or (T, V, H, W[, C]) "
            "with --layout tvhw (as mnist_test_seq.npy)"
        )
    if 0 in shape:
        raise DataError(f"{path} is empty (shape {shape}); it must hold at least one frame")
    v, t = (shape[1], shape[0]) if layout == "tvhw" else shape[:2]
    h, w, c = *shape[2:4], (shape[4] if len(shape) == 5 else 1)
    if c not in (1, 3):
        hint = " (channels first? move them last)" if shape[2] in (1, 3) else ""
        raise DataError(f"{path} has {c} channels{hint}; give grey (C = 1 or none) or RGB (C = 3)")
    if h != w and size is None:
        raise DataError(
            f"{path} has {h}×{w} frames; vidlat's models take square frames: pass --size S to "
            "resize them to S×S, or crop them first"
        )
    return v, t, h, w, c


def to_uint8(raw: np.ndarray, path: Path, where: str) -> np.ndarray:
    """uint8 of the same shape: uint8 kept, ints in 0..255 cast, floats in [0, 1] scaled by 255."""
    kind = raw.dtype.kind
    if raw.dtype == np.uint8:
        return np.asarray(raw)
    if kind in "iu":
        lo, hi = int(raw.min()), int(raw.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{path}: integer values in {where} span {lo}..{hi}; pixels must be 0..255"
            )
        return raw.astype(np.uint8)
    if kind == "f":
        raw = raw.astype(np.float32, copy=False)
        if not np.isfinite(raw).all():
            raise DataError(f"{path}: {where} holds NaN or infinite values; clean them first")
        lo, hi = float(raw.min()), float(raw.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"{path}: float values in {where} span {lo:g}..{hi:g}; floats must be in [0, 1] "
                "(divide 0..255 pixel values by 255, or save them as uint8)"
            )
        return np.rint(raw * 255).astype(np.uint8)
    raise DataError(
        f"{path} has dtype {raw.dtype}; give uint8, integers 0..255 or floats in [0, 1]"
    )


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (v, T, H, W, C) -> (v, T, size, size, C), each frame bilinear (Pillow)."""
    v, t, _, _, c = frames.shape
    out = np.empty((v, t, size, size, c), np.uint8)
    for i in range(v):
        for j in range(t):
            image = Image.fromarray(frames[i, j, ..., 0] if c == 1 else frames[i, j])
            small = image.resize((size, size), Image.Resampling.BILINEAR)
            out[i, j] = np.asarray(small).reshape(size, size, c)
    return out


class ArraySource:
    """A user's array read a run of videos at a time as uint8 (v, T, H', W', C)."""

    def __init__(
        self,
        path: str | Path,
        layout: Layout = "vthwc",
        key: str | None = None,
        size: int | None = None,
    ):
        self.path, self.layout, self.size = Path(path), layout, size
        self.raw = open_array(self.path, key)
        self.raw_shape = tuple(int(d) for d in self.raw.shape)
        v, t, h, w, c = video_shape(self.raw_shape, layout, self.path, size)
        self.shape = (v, t, size or h, size or w, c)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Videos start..stop-1 as uint8 (v, T, H', W', C), checked, cast and resized."""
        # np.array copies the run out of a memory map, so what is returned owns its memory.
        if self.layout == "tvhw":
            raw = np.moveaxis(np.array(self.raw[:, start:stop]), 1, 0)
        else:
            raw = np.array(self.raw[start:stop])
        frames = to_uint8(raw, self.path, f"videos {start}..{stop - 1}")
        frames = frames.reshape(*frames.shape[:4], self.shape[-1])  # grey gets its channel axis
        return resize_frames(frames, self.size) if self.size is not None else frames


class FileSource:
    """Clips of video files, decoded once into memory, read like an ArraySource."""

    def __init__(self, path: Path, size: int | None, frames: int | None, stride: int):
        self.path = path
        self.raw, self.labels = load_video_files(path, size=size, frames=frames, stride=stride)
        self.raw_shape = tuple(int(d) for d in self.raw.shape)
        self.shape = self.raw_shape

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.raw[start:stop]


def open_source(cfg: ImportConfig) -> ArraySource | FileSource:
    """The reader for cfg.src: video files, or an array in cfg.layout."""
    if is_video_source(cfg.src):
        return FileSource(cfg.src, cfg.size, cfg.frames, cfg.stride)
    if cfg.frames is not None or cfg.stride != 1:
        raise ConfigError(
            f"--frames and --stride cut clips from video files; {cfg.src} is an array: slice it "
            "before importing"
        )
    return ArraySource(cfg.src, cfg.layout, cfg.key, cfg.size)


def load_array(
    path: str | Path, layout: Layout = "vthwc", key: str | None = None, size: int | None = None
) -> np.ndarray:
    """A whole user array (e.g. new videos for `vidlat generate`) as uint8 (V, T, H, W, C)."""
    source = ArraySource(path, layout, key, size)
    return source.read(0, source.shape[0])


def import_videos(cfg: ImportConfig, out: str | Path, overwrite: bool = False) -> Path:
    """Copy the user's videos into a dataset at `out`, a chunk of videos at a time; returns out."""
    out = places.local_folder(out, "a video dataset")
    places.refuse_overlap(out, {"source": cfg.src})  # `import S.zarr --out S.zarr` would zero it
    source = open_source(cfg)  # shape errors before creating
    n, step = source.shape[0], cfg.videos_per_chunk
    writer = create_videos(out, *source.shape, videos_per_chunk=step, overwrite=overwrite)
    try:
        with progress_bar("import", total=n, unit="videos") as bar:
            for start in range(0, n, step):
                stop = min(start + step, n)
                writer.write(start, source.read(start, stop))
                bar.advance(stop - start)
    except BaseException:
        writer.abort()  # bad values found part-way: no half dataset, an old one kept intact
        raise
    source_config = cfg.model_dump(mode="json") | {
        "source_shape": list(source.raw_shape),
        "source_dtype": str(source.raw.dtype),
    }
    if isinstance(source, FileSource):
        source_config["clips"] = source.labels  # which file and first frame each video came from
    return writer.finish("import", source_config, make_split(n, cfg.seed))
