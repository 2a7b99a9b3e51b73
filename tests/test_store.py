"""Latent store writer and reader: round trip, resume, refusals, plain Zarr v3, two writers."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import zarr

from vidlat.errors import DataError, StoreError
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.writer import create_store, open_writer

V, T, VPC = 11, 5, 3  # 4 chunks, the last one holding 2 videos
FIELDS = [
    FieldSpec("pose", "pose", (2, 3)),  # (V, T, N=2, D=3)
    FieldSpec("content", "content", (4,)),  # (V, T, 4)
    FieldSpec("style", "content", (2,), per_frame=False),  # (V, 2)
    FieldSpec("perm", "aux", (2,), dtype="int64"),  # (V, T, 2) slot permutation
    FieldSpec("shape_class", "aux", (2,), dtype="int32", per_frame=False),  # (V, 2) factor
    FieldSpec("ambiguous", "aux", ()),  # (V, T) float flag in the store dtype; NaN allowed
]
ATTRS = {
    "encoder": {"hash": "ab" * 32, "model": "drnet", "config": {"content_dim": 4}},
    "source": {"path": "videos.zarr", "fingerprint": "cd" * 32},
    "split": {"train": np.arange(0, 8), "val": [8, 9], "test": [10]},
    "slots": 2,
}


def full_data(n_videos: int = V) -> dict[str, np.ndarray]:
    """Every field for videos 0..n-1, values that differ across video, frame, slot and component."""
    v = np.arange(n_videos)[:, None]
    t = np.arange(T)[None, :]
    base = (v * 100 + t).astype(np.float64)  # (V, T)
    return {
        "pose": base[..., None, None] + np.arange(2)[:, None] * 0.5 + np.arange(3) * 0.125,
        "content": -base[..., None] - np.arange(4) * 0.25,
        "style": v * 2.0 + np.arange(2) * 0.5,
        "perm": np.stack([(v + t) % 2, (v + t + 1) % 2], axis=-1).astype(np.int64),
        "shape_class": (v * 3 + np.arange(2)).astype(np.int32),
        "ambiguous": (base % 3) * 0.5,
    }


def chunk_data(writer, i: int) -> dict[str, np.ndarray]:
    start, stop = writer.chunk_range(i)
    return {name: a[start:stop] for name, a in full_data().items()}


def make_store(path: Path, dtype: str = "float32", chunks=None, complete: bool = True):
    writer = create_store(path, FIELDS, V, T, videos_per_chunk=VPC, dtype=dtype, attrs=ATTRS)
    for i in range(writer.n_chunks) if chunks is None else chunks:
        writer.write_chunk(i, chunk_data(writer, i))
    if complete:
        writer.mark_complete()
    return writer


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_every_field(tmp_path, dtype):
    writer = create_store(
        tmp_path / "s.zarr", FIELDS, V, T, videos_per_chunk=VPC, dtype=dtype, attrs=ATTRS
    )
    assert writer.n_chunks == 4 and writer.chunk_range(3) == (9, 11)
    for i in (2, 0, 3, 1):  # order does not matter
        writer.write_chunk(i, chunk_data(writer, i))
    writer.mark_complete()

    store = LatentStore.open(tmp_path / "s.zarr")
    expected = full_data()
    assert store.fields == {f.name: f for f in FIELDS}
    assert (store.n_videos, store.n_frames, store.videos_per_chunk, store.dtype) == (
        V,
        T,
        VPC,
        dtype,
    )
    assert store.complete and store.written.tolist() == [True] * 4
    for spec in FIELDS:
        got = store.read(spec.name, slice(None))
        want_dtype = np.dtype(spec.dtype or dtype)
        assert got.dtype == want_dtype, spec.name
        np.testing.assert_array_equal(
            got, expected[spec.name].astype(want_dtype), err_msg=spec.name
        )
    # Rows in the order asked, repeats included; a chunk is whole videos.
    np.testing.assert_array_equal(store.read("perm", [7, 0, 7]), expected["perm"][[7, 0, 7]])
    chunk = store.read_chunk(3)
    assert set(chunk) == {f.name for f in FIELDS} and chunk["style"].shape == (2, 2)
    np.testing.assert_array_equal(chunk["shape_class"], expected["shape_class"][9:11])
    assert store.fields_with_role("content") == ["content", "style"]
    assert store.fields_with_role("aux") == ["perm", "shape_class", "ambiguous"]


def test_provenance_attrs(tmp_path):
    store = LatentStore.open(make_store(tmp_path / "s.zarr").path)
    assert store.encoder_hash == "ab" * 32
    assert store.attrs["encoder"]["model"] == "drnet"
    assert store.attrs["encoder"]["config"] == {"content_dim": 4}
    assert store.attrs["source"] == {"path": "videos.zarr", "fingerprint": "cd" * 32}
    assert store.attrs["slots"] == 2 and store.attrs["kind"] == "latents"
    assert store.attrs["format_version"] == 1
    assert {k: v.tolist() for k, v in store.split.items()} == {
        "train": list(range(8)),
        "val": [8, 9],
        "test": [10],
    }
    assert store.split["train"].dtype == np.int64
    on_disk = sum(f.stat().st_size for f in (tmp_path / "s.zarr").rglob("*") if f.is_file())
    assert store.nbytes_stored() == on_disk > 0


def test_resume_equals_one_shot(tmp_path):
    make_store(tmp_path / "one.zarr")
    make_store(tmp_path / "part.zarr", chunks=[0, 2], complete=False)
    with pytest.raises(
        StoreError, match=r"was interrupted: 2 of 4 chunks written; re-run vidlat encode"
    ):
        LatentStore.open(tmp_path / "part.zarr")
    partial = LatentStore.open(tmp_path / "part.zarr", require_complete=False)
    assert not partial.complete and partial.written.tolist() == [True, False, True, False]

    writer = open_writer(tmp_path / "part.zarr")  # a new process would do exactly this
    assert writer.missing_chunks() == [1, 3]
    for i in writer.missing_chunks():
        writer.write_chunk(i, chunk_data(writer, i))
    writer.mark_complete()
    assert writer.attrs["complete"] is True

    one, part = LatentStore.open(tmp_path / "one.zarr"), LatentStore.open(tmp_path / "part.zarr")
    assert part.attrs == one.attrs
    for name in one.fields:
        np.testing.assert_array_equal(part.read(name, slice(None)), one.read(name, slice(None)))


def test_mark_complete_refuses_missing_chunks(tmp_path):
    writer = make_store(tmp_path / "s.zarr", chunks=[1], complete=False)
    with pytest.raises(StoreError, match=r"1 of 4 chunks written \(missing \[0, 2, 3\]\)"):
        writer.mark_complete()
    assert LatentStore.open(tmp_path / "s.zarr", require_complete=False).complete is False


def test_write_chunk_validates_fields(tmp_path):
    writer = make_store(tmp_path / "s.zarr", chunks=[], complete=False, dtype="float16")
    good = chunk_data(writer, 0)
    cases = [
        ({k: v for k, v in good.items() if k != "style"}, StoreError, "missing field 'style'"),
        (
            {**good, "pose": good["pose"][:, :-1]},
            StoreError,
            r"'pose' of chunk 0 is shaped \(3, 4, 2, 3\)",
        ),
        ({**good, "extra": good["style"]}, StoreError, r"\['extra'\]"),
        ({**good, "perm": good["perm"] + 0.5}, StoreError, "'perm' of chunk 0 is float64"),
        (
            {**good, "content": np.where(good["content"] == -101.5, np.nan, good["content"])},
            DataError,
            "'content' of chunk 0 has 1 non-finite",
        ),
        (
            {**good, "pose": good["pose"] * 1e6},
            DataError,
            "'pose' .* float16 overflowed",
        ),  # > 65504
    ]
    for data, error, message in cases:
        with pytest.raises(error, match=message):
            writer.write_chunk(0, data)
    with pytest.raises(StoreError, match="chunk 4 is out of range"):
        writer.write_chunk(4, good)
    assert writer.missing_chunks() == [0, 1, 2, 3]  # a refused chunk is not marked written
    flags = good["ambiguous"].copy()
    flags[0, 0] = np.nan  # aux values are not latents: NaN is allowed there
    writer.write_chunk(0, {**good, "ambiguous": flags})
    assert writer.missing_chunks() == [1, 2, 3]
    assert np.isnan(
        LatentStore.open(writer.path, require_complete=False).read("ambiguous", [0])[0, 0]
    )


def test_create_refuses_existing_path(tmp_path):
    make_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        create_store(tmp_path / "s.zarr", FIELDS, V, T)
    fresh = create_store(str(tmp_path / "s.zarr"), FIELDS[:1], 4, T, overwrite=True)
    store = LatentStore.open(fresh.path, require_complete=False)
    assert list(store.fields) == ["pose"] and store.n_videos == 4 and not store.written.any()
    assert not (tmp_path / "s.zarr" / "content").exists()  # the old arrays are gone

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(StoreError, match="not a Zarr store, so --overwrite will not delete it"):
        create_store(precious, FIELDS, V, T, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep"


def test_create_checks_arguments(tmp_path):
    with pytest.raises(StoreError, match="may not set"):
        create_store(tmp_path / "a.zarr", FIELDS, V, T, attrs={"n_videos": 3})
    with pytest.raises(StoreError, match=r"split 'val' names videos outside 0..10"):
        create_store(tmp_path / "b.zarr", FIELDS, V, T, attrs={"split": {"val": [3, 11]}})
    with pytest.raises(StoreError, match="unique"):
        create_store(tmp_path / "c.zarr", [FIELDS[0], FIELDS[0]], V, T)
    with pytest.raises(StoreError, match="dtype 'float64'"):
        create_store(tmp_path / "d.zarr", FIELDS, V, T, dtype="float64")
    assert not any(tmp_path.iterdir())  # nothing half-made is left behind


def test_open_refuses_what_is_not_a_complete_store(tmp_path):
    with pytest.raises(
        StoreError, match="does not exist; create the latent store with vidlat encode"
    ):
        LatentStore.open(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    with pytest.raises(StoreError, match="is not a Zarr group"):
        LatentStore.open(tmp_path / "plain")
    with pytest.raises(StoreError, match="is not a Zarr group"):
        open_writer(tmp_path / "plain")
    zarr.create_group(str(tmp_path / "other.zarr"), zarr_format=3)
    with pytest.raises(StoreError, match="not a vidlat latents store"):
        LatentStore.open(tmp_path / "other.zarr")
    videos = zarr.create_group(str(tmp_path / "videos.zarr"), zarr_format=3)
    videos.attrs["vidlat"] = {"kind": "videos", "format_version": 1}
    with pytest.raises(StoreError, match="holds vidlat 'videos', but a latents store is needed"):
        LatentStore.open(tmp_path / "videos.zarr")

    make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["vidlat"] = {**group.attrs["vidlat"], "format_version": 99}
    with pytest.raises(StoreError, match="format version 99"):
        LatentStore.open(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="format version 99"):
        open_writer(tmp_path / "s.zarr")


def test_store_is_plain_zarr_v3(tmp_path):
    make_store(tmp_path / "s.zarr", dtype="float16")
    # Only zarr from here on: no vidlat reader code.
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group.metadata.zarr_format == 3
    assert sorted(group.array_keys()) == sorted([f.name for f in FIELDS] + ["written"])
    expected = full_data()
    dtypes = {
        "pose": "float16",
        "content": "float16",
        "style": "float16",
        "perm": "int64",
        "shape_class": "int32",
        "ambiguous": "float16",
    }
    for name, want in expected.items():
        arr = group[name]
        assert arr.shape == want.shape and str(arr.dtype) == dtypes[name]
        assert arr.chunks == (VPC, *want.shape[1:])  # whole videos per chunk
        assert arr.compressors[0].cname.value == "zstd"
        np.testing.assert_array_equal(arr[:], want.astype(dtypes[name]))
    assert group["written"][:].tolist() == [True] * 4 and group["written"].chunks == (1,)
    block = group.attrs["vidlat"]
    assert block["complete"] is True and block["dtype"] == "float16"
    assert block["fields"][0] == {
        "name": "pose",
        "role": "pose",
        "shape": [2, 3],
        "dtype": None,
        "per_frame": True,
    }
    assert group["pose"].attrs["role"] == "pose"


def _write_chunks(path: str, chunks: list[int]) -> None:
    writer = open_writer(path)
    for i in chunks:
        writer.write_chunk(i, chunk_data(writer, i))


def test_two_processes_write_distinct_chunks(tmp_path):
    path = str(tmp_path / "s.zarr")
    make_store(tmp_path / "s.zarr", chunks=[], complete=False)
    ctx = mp.get_context("spawn")  # no zarr event-loop thread is inherited across fork
    workers = [ctx.Process(target=_write_chunks, args=(path, c)) for c in ([0, 2], [1, 3])]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    writer = open_writer(path)
    assert writer.missing_chunks() == []
    writer.mark_complete()
    store = LatentStore.open(path)
    for name, want in full_data().items():
        np.testing.assert_array_equal(
            store.read(name, slice(None)), want.astype(store.array(name).dtype)
        )
