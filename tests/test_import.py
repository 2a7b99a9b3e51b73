"""The user's arrays: each layout, dtype and container is stored right; each bad input is named."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from vidlat.errors import DataError
from vidlat.pipeline.sources.imported import ArraySource, ImportConfig, import_videos, load_array
from vidlat.store.videos import create_videos, open_videos

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 4, 8, 8, 3), dtype=np.uint8)  # (V, T, H, W, C)


def run_import(tmp_path, array=None, name="src.npy", **cfg) -> np.ndarray:
    src = tmp_path / name
    if array is not None:
        np.save(src, array)
    path = import_videos(ImportConfig(src=src, videos_per_chunk=2, **cfg), tmp_path / "out.zarr")
    data = open_videos(path)
    assert data.source == "import" and data.array.chunks[0] == 2
    return data.read(slice(None))


def test_uint8_rgb_is_kept_byte_for_byte(tmp_path):
    np.testing.assert_array_equal(run_import(tmp_path, RGB), RGB)
    data = open_videos(tmp_path / "out.zarr")
    assert data.attrs["source_config"]["source_shape"] == [5, 4, 8, 8, 3]
    assert sorted(np.concatenate(list(data.split.values())).tolist()) == list(range(5))
    # the resolved config lives in the group attributes: a foreign file would make Zarr readers warn
    assert data.attrs["source_config"]["layout"] == "vthwc"
    assert not (tmp_path / "out.zarr" / "config.yaml").exists()


def test_tvhw_grey_like_mnist_test_seq(tmp_path):
    seq = RNG.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)  # (T, V, H, W)
    got = run_import(tmp_path, seq, layout="tvhw")
    assert got.shape == (3, 6, 8, 8, 1)
    np.testing.assert_array_equal(got[..., 0], seq.transpose(1, 0, 2, 3))


def test_npy_is_read_through_a_memory_map(tmp_path):
    np.save(tmp_path / "a.npy", RGB)
    source = ArraySource(tmp_path / "a.npy")
    assert isinstance(source.raw, np.memmap) and source.shape == (5, 4, 8, 8, 3)
    np.testing.assert_array_equal(source.read(1, 3), RGB[1:3])


def test_floats_in_unit_range_and_small_ints_become_uint8(tmp_path):
    floats = RNG.random((3, 2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(
        run_import(tmp_path, floats), np.rint(floats * 255).astype(np.uint8)
    )
    np.testing.assert_array_equal(load_array(_saved(tmp_path, RGB.astype(np.int64))), RGB)
    grey = np.zeros((2, 2, 8, 8, 1), np.float64)
    grey[..., 0, 0, 0] = 1.0
    assert load_array(_saved(tmp_path, grey)).max() == 255


def _saved(tmp_path, array, name="x.npy"):
    np.save(tmp_path / name, array)
    return tmp_path / name


def test_npz_single_array_or_by_key(tmp_path):
    np.savez(tmp_path / "one.npz", RGB)
    np.testing.assert_array_equal(run_import(tmp_path, name="one.npz"), RGB)
    np.savez_compressed(tmp_path / "two.npz", clips=RGB, labels=np.arange(5))
    with pytest.raises(DataError, match=r"\['clips', 'labels'\].*key: NAME"):
        load_array(tmp_path / "two.npz")
    np.testing.assert_array_equal(load_array(tmp_path / "two.npz", key="clips"), RGB)
    with pytest.raises(DataError, match="no array 'frames'"):
        load_array(tmp_path / "two.npz", key="frames")


def test_zarr_array_group_and_vidlat_dataset(tmp_path):
    zarr.create_array(tmp_path / "arr.zarr", data=RGB)
    np.testing.assert_array_equal(load_array(tmp_path / "arr.zarr"), RGB)
    group = zarr.open_group(tmp_path / "grp.zarr", mode="w")
    group.create_array("videos", data=RGB)
    group.create_array("other", data=np.zeros(3))
    np.testing.assert_array_equal(load_array(tmp_path / "grp.zarr"), RGB)
    writer = create_videos(tmp_path / "ds.zarr", *RGB.shape)
    writer.write(0, RGB)
    writer.finish("test", {})
    np.testing.assert_array_equal(run_import(tmp_path, name="ds.zarr"), RGB)


def test_resize_to_a_square_size(tmp_path):
    flat = np.full((2, 3, 16, 12, 3), 77, np.uint8)  # not square: needs a size
    with pytest.raises(DataError, match=r"16×12 frames.*--size S"):
        run_import(tmp_path, flat)
    got = run_import(tmp_path, flat, name="f.npy", size=8)
    assert got.shape == (2, 3, 8, 8, 3) and (got == 77).all()
    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (1, 1, 16, 1))[..., None]  # (1,1,16,16,1)
    small = load_array(_saved(tmp_path, ramp), size=8)[0, 0, :, :, 0]
    assert small.shape == (8, 8) and (np.diff(small[0].astype(int)) > 0).all()  # still a ramp


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 8, 8), np.uint8), "shape \\(4, 8, 8\\)"),
        (np.zeros((2, 2, 8, 8, 3, 1), np.uint8), "rank|shape"),
        (np.zeros((0, 2, 8, 8), np.uint8), "empty"),
        (np.zeros((2, 2, 8, 8, 4), np.uint8), "4 channels"),
        (np.zeros((2, 2, 3, 8, 8), np.uint8), "channels first"),
        (np.full((2, 2, 8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.full((2, 2, 8, 8), np.inf, np.float64), "NaN or infinite"),
        (np.full((2, 2, 8, 8), 255.0, np.float32), "divide 0..255 pixel values by 255"),
        (np.full((2, 2, 8, 8), -1, np.int16), "-1..-1; pixels must be 0..255"),
        (np.full((2, 2, 8, 8), 300, np.uint16), "must be 0..255"),
        (np.zeros((2, 2, 8, 8), bool), "dtype bool"),
    ],
)
def test_bad_arrays_are_named_and_leave_nothing_behind(tmp_path, array, message):
    with pytest.raises(DataError, match=message):
        run_import(tmp_path, array)
    assert not (tmp_path / "out.zarr").exists()


def test_bad_values_found_late_remove_the_half_written_dataset(tmp_path):
    floats = np.zeros((6, 2, 8, 8), np.float32)
    floats[5] = 2.0  # only the last chunk is bad
    with pytest.raises(DataError, match="videos 4..5"):
        run_import(tmp_path, floats)
    assert not (tmp_path / "out.zarr").exists()


def test_missing_or_unknown_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_array(tmp_path / "nope.npy")
    (tmp_path / "clip.mp4").write_bytes(b"\x00")
    with pytest.raises(DataError, match="not a .npy, .npz or Zarr"):
        load_array(tmp_path / "clip.mp4")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read"):
        load_array(tmp_path / "broken.npy")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot read"):
        load_array(tmp_path / "empty")
