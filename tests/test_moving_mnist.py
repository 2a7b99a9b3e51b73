"""Moving MNIST from local idx and CIFAR-10 files: the paper's recipe, safe unpickling, errors."""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from vidlat.errors import DataError
from vidlat.pipeline.sources.moving_mnist import (
    COLLIDE,
    MovingMnistConfig,
    make_moving_mnist,
    read_cifar_batch,
    resize,
)
from vidlat.store.videos import open_videos

N_DIGITS, N_CIFAR = 10, 6


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(f">4B{array.ndim}I", 0, 0, 8, array.ndim, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_digits() -> np.ndarray:
    """(10, 28, 28): a solid bar of ink through the middle, of a width that depends on the index."""
    digits = np.zeros((N_DIGITS, 28, 28), np.uint8)
    for i in range(N_DIGITS):
        digits[i, 6:22, 9 - i % 3 : 19 + i % 3] = 255
    return digits


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    digits, labels = fake_digits(), (np.arange(N_DIGITS) * 7) % 10
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(digits)))
    (root / "plain-images-idx3-ubyte").write_bytes(idx_bytes(digits))
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    (root / "plain-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    (root / "cifar").mkdir()
    rng = np.random.default_rng(0)
    batch = {
        b"data": rng.integers(0, 256, (N_CIFAR, 3072), dtype=np.uint8),
        b"labels": [3, 1, 4, 1, 5, 9],
    }
    # Protocol 2 as the real files; they were written by numpy 1, which names numpy.core.
    raw = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    (root / "cifar" / "data_batch_1").write_bytes(raw)
    return root


def config(files, **extra) -> MovingMnistConfig:
    base = {"mnist": files / "train-images-idx3-ubyte.gz", "cifar": files / "cifar", "videos": 12}
    base |= {"frames": 10, "size": 32, "digit_size": 12, "videos_per_chunk": 4}
    return MovingMnistConfig(**{**base, **extra})


@pytest.fixture(scope="module")
def dataset(files, tmp_path_factory):
    return open_videos(make_moving_mnist(config(files), tmp_path_factory.mktemp("m") / "v.zarr"))


def test_defaults_follow_the_paper(files):
    cfg = MovingMnistConfig(mnist=files / "x", cifar=files)
    assert (cfg.size, cfg.digit_size, cfg.objects) == (128, 42, 2)


def test_factors_name_the_digits_and_backgrounds(dataset, files):
    assert dataset.shape == (12, 10, 32, 32, 3) and dataset.source == "moving-mnist"
    present = dataset.read_factor("present", slice(None))
    index = dataset.read_factor("digit_index", slice(None))
    label = dataset.read_factor("shape_class", slice(None))
    assert (present == (index >= 0)).all() and (
        present.sum(1) == dataset.read_factor("n_objects", slice(None))
    ).all()
    assert (label[present] == (index[present] * 7) % 10).all() and (label[~present] == -1).all()
    back = dataset.read_factor("background_index", slice(None))
    assert (
        dataset.read_factor("background_class", slice(None)) == np.array([3, 1, 4, 1, 5, 9])[back]
    ).all()
    assert set(present.sum(1).tolist()) == {0, 1, 2}
    assert (dataset.read_factor("size", slice(None))[present] == 12).all()


def test_pixels_agree_with_factors(dataset, files):
    cifar, _ = read_cifar_batch(files / "cifar" / "data_batch_1")
    frames = dataset.read(slice(None))
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    checked = 0
    for v in range(dataset.n_videos):
        pos = dataset.read_factor("position", [v])[0]  # (T, N, 2)
        colour = dataset.read_factor("colour", [v])[0]
        present = dataset.read_factor("present", [v])[0]
        background = resize(cifar[dataset.read_factor("background_index", [v])[0]], 32)
        far = np.ones((32, 32), bool)
        for k in np.flatnonzero(present):
            assert ((pos[:, k] >= 6 - 1e-4) & (pos[:, k] <= 26 + 1e-4)).all()
            assert np.abs(colour[-1, k] - colour[0, k]).max() > 0.02  # colour changes
            for x, y in pos[:, k]:
                far &= np.maximum(np.abs(xx - x), np.abs(yy - y)) > 7
            for t in range(dataset.n_frames):
                others = [j for j in np.flatnonzero(present) if j != k]
                if any(np.abs(pos[t, k] - pos[t, j]).max() < 12 for j in others):
                    continue  # boxes overlap: the later digit may cover this one's centre
                cx, cy = np.rint(pos[t, k] - 6).astype(int) + 6  # the box's middle pixel: full ink
                assert np.abs(frames[v, t, cy, cx] - np.rint(colour[t, k] * 255)).max() <= 2
                checked += 1
        assert (frames[v][:, far] == background[far]).all()  # the static, resized CIFAR image
        checked += int(far.sum() > 0)
    assert checked > 50


def test_digits_bounce_off_each_other(files):
    cfg = config(files, videos=40, objects=2, frames=24)
    from vidlat.pipeline.sources.moving_mnist import make_video, read_cifar, read_mnist

    mnist, cifar = read_mnist(cfg), read_cifar(cfg.cifar, "train")
    closest = []
    for i in range(cfg.videos):
        f = make_video(cfg, i, mnist, cifar).factors
        if f["n_objects"] == 2:
            gap = np.hypot(*(f["position"][:, 0] - f["position"][:, 1]).T) - 2 * COLLIDE * 12
            closest.append(gap.min())
    assert min(closest) > -1.0 and min(closest) < 0.5  # they meet and do not pass through


def test_deterministic_and_independent_of_chunking(dataset, files, tmp_path):
    again = open_videos(make_moving_mnist(config(files, videos_per_chunk=5), tmp_path / "a.zarr"))
    other = open_videos(make_moving_mnist(config(files, seed=1), tmp_path / "b.zarr"))
    plain = config(files, mnist=files / "plain-images-idx3-ubyte", videos=3)
    plain = open_videos(make_moving_mnist(plain, tmp_path / "c.zarr"))
    assert again.fingerprint == dataset.fingerprint and again.array.chunks[0] == 5
    assert other.fingerprint != dataset.fingerprint
    np.testing.assert_array_equal(plain.read(slice(None)), dataset.read(slice(0, 3)))  # gzip or not


def test_cifar_pickle_that_would_run_code_is_refused(files, tmp_path):
    target = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.mkdir, (str(target),)

    (tmp_path / "cifar").mkdir()
    with open(tmp_path / "cifar" / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(DataError, match="refusing to unpickle"):
        make_moving_mnist(config(files, cifar=tmp_path / "cifar"), tmp_path / "v.zarr")
    assert not target.exists() and not (tmp_path / "v.zarr").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mnist": "missing-images-idx3-ubyte"}, "does not exist"),
        ({"mnist": "other-images-idx3-ubyte"}, "no MNIST labels file"),
        ({"mnist": "bad-images-idx3-ubyte", "mnist_labels": "train-labels-idx1-ubyte"}, "magic"),
        (
            {"mnist": "cut-images-idx3-ubyte", "mnist_labels": "train-labels-idx1-ubyte"},
            "truncated",
        ),
        (
            {"mnist": "train-labels-idx1-ubyte", "mnist_labels": "train-labels-idx1-ubyte"},
            "swapped",
        ),
        ({"cifar": "nowhere"}, "cifar-10-batches-py"),
        ({"cifar": "."}, "holds none of"),
        ({"cifar": "tiny"}, "uint8 \\(n, 3072\\)"),
    ],
)
def test_bad_sources_are_named(files, tmp_path, change, message):
    (files / "other-images-idx3-ubyte").write_bytes(idx_bytes(fake_digits()))
    (files / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(16))
    (files / "cut-images-idx3-ubyte").write_bytes(idx_bytes(fake_digits())[:-5])
    (files / "tiny").mkdir(exist_ok=True)
    with open(files / "tiny" / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, fh, protocol=2)
    cfg = config(files, **{k: files / v for k, v in change.items()})
    with pytest.raises(DataError, match=message):
        make_moving_mnist(cfg, tmp_path / "v.zarr")
    assert not (tmp_path / "v.zarr").exists()  # sources are read before the dataset is created
