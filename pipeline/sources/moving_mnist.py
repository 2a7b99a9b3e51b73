"""The main paper's Moving MNIST, built from local MNIST and CIFAR-10 files (nothing is downloaded).

Per video (main paper, sec. 4): 0..N MNIST digits (N = 2 there; count drawn uniformly) enlarged
to 42×42 move over one CIFAR-10 image enlarged to 128×128; each digit's colour changes over time and
its motion is reflected at the frame edges and at the other digits. Digits are blended over the
background with their grey level as opacity. Motion and colour come from the synthetic source's
helpers, so both sources move and bounce alike; ground-truth factors are saved beside the frames.

CIFAR-10's python batches are pickles: they are read with an unpickler that only rebuilds numpy
arrays, never plain `pickle.load`, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from vidlat.errors import DataError
from vidlat.pipeline.sources.configs import COLLIDE, MovingMnistConfig
from vidlat.pipeline.sources.synth import (
    Video,
    bounce_paths,
    hue_colours,
    pad_factors,
    start_motion,
    write_videos,
)
from vidlat.progress import progress_bar
from vidlat.store import places
from vidlat.store.videos import create_videos, make_split

CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

FACTOR_DOCS = {
    "shape_class": "(V, N) int32: the digit's MNIST label 0..9; -1 where the slot is empty",
    "size": "(V, N) float32: digit box side in pixels; 0 where empty",
    "present": "(V, N) bool: slot holds a digit (digits fill slots 0..n_objects-1)",
    "position": "(V, T, N, 2) float32: digit box centre (x, y) in pixels from the top-left "
    "corner; 0 where empty",
    "colour": "(V, T, N, 3) float32: digit RGB in [0, 1] at full ink; 0 where empty",
    "background_class": "(V,) int32: CIFAR-10 label 0..9 of the background image",
    "n_objects": "(V,) int32: number of digits, drawn uniformly from 0..N",
    "digit_index": "(V, N) int32: index of the digit in the MNIST file; -1 where empty",
    "background_index": "(V,) int32: index of the background among the CIFAR-10 images read",
}


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (gzip or not, told by the magic bytes 1f 8b) as uint8 array."""
    if not path.is_file():
        raise DataError(f"MNIST file {path} does not exist; pass the idx file you downloaded")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} is a damaged gzip file ({exc}); download it again") from None
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an MNIST idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(
            f"{path} holds {data.size} bytes of data; its header says {dims}: truncated?"
        )
    return data.reshape(dims)


def labels_path(cfg: MovingMnistConfig) -> Path:
    """The labels file: given, or beside the images (train-images-idx3 -> train-labels-idx1)."""
    if cfg.mnist_labels is not None:
        return cfg.mnist_labels
    name = cfg.mnist.name.replace("images-idx3", "labels-idx1")
    bare = name.removesuffix(".gz")
    names = [] if name == cfg.mnist.name else [name, bare, bare + ".gz"]
    for candidate in dict.fromkeys(names):  # gzipped or not, whichever is there
        if (cfg.mnist.parent / candidate).is_file():
            return cfg.mnist.parent / candidate
    raise DataError(
        f"no MNIST labels file found beside {cfg.mnist} (looked for {names or 'none'}); put it "
        "there or give `mnist_labels: PATH` in a --config file"
    )


def read_mnist(cfg: MovingMnistConfig) -> tuple[np.ndarray, np.ndarray]:
    """Digits (n, 28, 28) uint8 and their labels (n,) int32."""
    images, labels = read_idx(cfg.mnist), read_idx(labels_path(cfg))
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(
            f"{cfg.mnist} must be an images file (n, 28, 28) and its labels file (n,); got "
            f"{images.shape} and {labels.shape} (were the two swapped?)"
        )
    if len(images) != len(labels) or len(images) == 0:
        raise DataError(f"{cfg.mnist} holds {len(images)} digits but its labels file {len(labels)}")
    return images, labels.astype(np.int32)


# Only what a CIFAR-10 batch needs: numpy's array and scalar rebuilders, dtypes, and the codec that
# Python 3 protocol-2 pickles use for bytes. Anything else is refused before it is even looked up.
# numpy 1 pickles name numpy.core, numpy 2 numpy._core; the functions are taken from live objects so
# no deprecated module is imported.
_RECONSTRUCT, _SCALAR = np.array(0).__reduce__()[0], np.uint8(0).__reduce__()[0]
_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    **{(module, "_reconstruct"): _RECONSTRUCT for module in _CORE},
    **{(module, "scalar"): _SCALAR for module in _CORE},
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _SAFE_GLOBALS:
            raise DataError(
                f"{self.name} asks to load {module}.{name}, which a CIFAR-10 batch never holds; "
                "refusing to unpickle it. Use the official cifar-10-python batches"
            )
        return _SAFE_GLOBALS[(module, name)]


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (n, 32, 32, 3) uint8 and labels (n,) int32."""
    with path.open("rb") as fh:
        unpickler = _ArrayUnpickler(fh, encoding="bytes")
        unpickler.name = path.name
        try:
            batch = unpickler.load()
        except DataError:
            raise
        except Exception as exc:  # a damaged pickle fails in many ways; all mean "not a batch"
            raise DataError(f"{path} is not a readable CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (3072,)):
        raise DataError(f"{path}: 'data' must be uint8 (n, 3072) as in CIFAR-10; is it CIFAR-100?")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or (len(labels) and not 0 <= labels.min() <= labels.max() <= 9):
        raise DataError(f"{path}: 'labels' must be {len(data)} classes in 0..9")
    # Rows hold the red, green and blue 32×32 planes one after another.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def read_cifar(folder: Path, which: str) -> tuple[np.ndarray, np.ndarray]:
    """Every batch file of set `which` found in `folder`: images (n, 32, 32, 3), labels (n,)."""
    if not folder.is_dir():
        raise DataError(
            f"CIFAR-10 folder {folder} does not exist or is a file; give the cifar-10-batches-py "
            "folder (`tar xzf cifar-10-python.tar.gz` makes it)"
        )
    files = [folder / name for name in CIFAR_FILES[which] if (folder / name).is_file()]
    if not files:
        raise DataError(f"{folder} holds none of {CIFAR_FILES[which]}; is it cifar-10-batches-py?")
    parts = [read_cifar_batch(f) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def resize(image: np.ndarray, side: int) -> np.ndarray:
    """uint8 (h, w[, 3]) -> uint8 (side, side[, 3]), bilinear (Pillow)."""
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))


def blend(frames: np.ndarray, alpha: np.ndarray, corner: np.ndarray, colour: np.ndarray) -> None:
    """In place over frames (T, H, W, 3) float32: a digit of opacity alpha (d, d) in [0, 1] at
    top-left corners (T, 2) (x, y), coloured colour (T, 3) in [0, 255]; all frames at once."""
    d = alpha.shape[0]
    ys = corner[:, 1, None, None] + np.arange(d)[None, :, None]  # (T, d, 1)
    xs = corner[:, 0, None, None] + np.arange(d)[None, None, :]  # (T, 1, d)
    at = (np.arange(len(frames))[:, None, None], ys, xs)
    a = alpha[None, :, :, None]
    frames[at] = frames[at] * (1 - a) + colour[:, None, None, :] * a


def make_video(cfg: MovingMnistConfig, index: int, mnist, cifar) -> Video:
    """Video `index`: frames (T, S, S, 3) uint8 and factors; mnist/cifar are (images, labels)."""
    rng = np.random.default_rng([cfg.seed, index])
    n, d, size = int(rng.integers(0, cfg.objects + 1)), cfg.digit_size, cfg.size
    back = int(rng.integers(len(cifar[0])))
    picks = rng.integers(len(mnist[0]), size=n)
    radius, half = np.full(n, COLLIDE * d), np.full(n, d / 2)
    speed = (cfg.speed[0] * size, cfg.speed[1] * size)
    pos, vel, lo, hi = start_motion(rng, radius, half, size, speed)
    paths = bounce_paths(pos, vel, radius, lo, hi, cfg.frames)  # (T, n, 2)
    colours = hue_colours(rng, n, cfg.frames, cfg.hue_rate, saturation=(0.7, 1.0), value=(1.0, 1.0))
    frames = np.repeat(resize(cifar[0][back], size)[None].astype(np.float32), cfg.frames, axis=0)
    for k in range(n):
        alpha = resize(mnist[0][picks[k]], d).astype(np.float32) / 255
        corner = np.clip(np.rint(paths[:, k] - d / 2).astype(np.int64), 0, size - d)
        blend(frames, alpha, corner, 255 * colours[:, k].astype(np.float32))
    factors = pad_factors(
        cfg.objects,
        cfg.frames,
        shape_class=mnist[1][picks],
        size=np.full(n, float(d)),
        position=paths,
        colour=colours,
    )
    factors["digit_index"] = np.full(cfg.objects, -1, np.int32)
    factors["digit_index"][:n] = picks
    factors["background_class"] = np.int32(cifar[1][back])
    factors["background_index"] = np.int32(back)
    factors["n_objects"] = np.int32(n)
    return Video(np.rint(np.clip(frames, 0, 255)).astype(np.uint8), factors)


def make_moving_mnist(cfg: MovingMnistConfig, out: str | Path, overwrite: bool = False) -> Path:
    """Write Moving MNIST (V, T, S, S, 3) uint8 with its factors to `out`; returns `out`."""
    out = places.local_folder(out, "a video dataset")
    mnist, cifar = read_mnist(cfg), read_cifar(cfg.cifar, cfg.cifar_set)  # fail before creating
    step = cfg.videos_per_chunk
    shape = (cfg.videos, cfg.frames, cfg.size, cfg.size, 3)
    writer = create_videos(out, *shape, videos_per_chunk=step, overwrite=overwrite)
    with progress_bar("moving-mnist", total=cfg.videos, unit="videos") as bar:
        for start in range(0, cfg.videos, step):
            stop = min(start + step, cfg.videos)
            videos = [make_video(cfg, i, mnist, cifar) for i in range(start, stop)]
            write_videos(writer, start, videos, FACTOR_DOCS)
            bar.advance(stop - start)
    split = make_split(cfg.videos, cfg.seed)
    return writer.finish("moving-mnist", cfg.model_dump(mode="json"), split)
