"""xarray opens latent stores and video datasets (dimension_names, consolidated metadata) and
reads the values vidlat wrote."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import write_store

from vidlat.progress import set_quiet
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

xr = pytest.importorskip("xarray", reason="xarray (in the dev extra) is what this test exercises")


def open_zarr(path, **kw):
    """xarray.open_zarr, failing on its 'no consolidated metadata' warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*consolidated.*")
        return xr.open_zarr(path, consolidated=True, **kw)


def test_xarray_opens_an_encoded_store(tiny_videos, tiny_ae, tmp_path):
    set_quiet(True)
    path = encode(tiny_videos, tiny_ae, tmp_path / "lat.zarr", EncodeConfig(device="cpu"))
    store = LatentStore.open(path)
    ds = open_zarr(path)
    assert ds["content"].dims == ("video", "time", "content_feature")
    assert ds["pose"].dims == ("video", "time", "pose_feature")
    assert ds.sizes["video"] == store.n_videos and ds.sizes["time"] == store.n_frames
    for name in store.fields:
        np.testing.assert_array_equal(ds[name].values, store.read(name, np.arange(store.n_videos)))
    assert ds["written"].dims == ("chunk",) and bool(ds["written"].all())
    assert ds.attrs["vidlat"]["complete"] is True


def test_xarray_names_the_slot_axis_shared_by_per_slot_fields(tmp_path):
    rng = np.random.default_rng(0)
    v, t, n = 6, 5, 3
    fields = [
        FieldSpec("z_back", "content", (n,)),  # (V, T, 3): features that happen to number N
        FieldSpec("z_where", "where", (n, 4)),
        FieldSpec("z_pose", "pose", (n, 2)),
        FieldSpec("presence", "mask", (n,)),
        FieldSpec("perm", "aux", (n,), dtype="int32"),
        FieldSpec("factor_size", "aux", (2,), dtype="float32", per_frame=False),
    ]
    data = {
        "z_back": rng.random((v, t, n), np.float32),
        "z_where": rng.random((v, t, n, 4), np.float32),
        "z_pose": rng.random((v, t, n, 2), np.float32),
        "presence": rng.random((v, t, n), np.float32),
        "perm": np.tile(np.arange(n, dtype=np.int32), (v, t, 1)),
        "factor_size": rng.random((v, 2), np.float32),
    }
    write_store(tmp_path / "lat.zarr", fields, data, attrs={"slots": n})
    ds = open_zarr(tmp_path / "lat.zarr")
    assert ds["z_back"].dims == ("video", "time", "z_back_feature")
    assert ds["z_where"].dims == ("video", "time", "slot", "z_where_feature")
    assert ds["presence"].dims == ("video", "time", "slot")
    assert ds["perm"].dims == ("video", "time", "slot")
    assert ds["factor_size"].dims == ("video", "factor_size_feature")
    for name, values in data.items():
        np.testing.assert_array_equal(ds[name].values, values)


def test_xarray_opens_a_video_dataset_and_its_factors(tiny_videos):
    videos = open_videos(tiny_videos)
    ds = open_zarr(tiny_videos)
    assert ds["videos"].dims == ("video", "time", "height", "width", "channel")
    np.testing.assert_array_equal(ds["videos"].values, videos.read(slice(None)))
    factors = open_zarr(tiny_videos, group="factors")
    assert factors["position"].dims == ("video", "time", "object", "xy")
    assert factors["n_objects"].dims == ("video",)
    for name in videos.factor_names():
        np.testing.assert_array_equal(factors[name].values, videos.read_factor(name, slice(None)))
    tree = xr.open_datatree(tiny_videos, engine="zarr", consolidated=True)
    np.testing.assert_array_equal(tree["factors"]["colour"].values, factors["colour"].values)
    assert tree["videos"].shape == videos.shape
