"""Video files in: GIF, folders and globs of PNG/JPEG frames, and (PyAV) mp4/avi/mov/webm, imported
as clips with --size, --frames and --stride; mp4 written back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vidlat.errors import ConfigError, DataError
from vidlat.pipeline.sources import video_files
from vidlat.pipeline.sources.imported import ImportConfig, import_videos
from vidlat.pipeline.sources.video_files import load_video_files
from vidlat.stages.common.images import save_mp4
from vidlat.store.videos import open_videos


def moving_square(t: int = 12, size: int = 32) -> np.ndarray:
    """(T, size, size, 3) uint8: a white square moving right over a dark-blue background, frame t
    also coded as a grey level of the top-left 8x8 corner (luma survives 4:2:0 codecs), so order and
    stride can be checked."""
    frames = np.zeros((t, size, size, 3), np.uint8)
    frames[..., 2] = 80
    for i in range(t):
        x = 2 + i * (size - 12) // max(t - 1, 1)
        frames[i, 10:20, x : x + 10] = 255
        frames[i, :8, :8] = 20 * i
    return frames


def save_gif(path, frames):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100, loop=0)
    return path


def frame_codes(frames: np.ndarray) -> list[int]:
    """The frame numbers coded in the top-left corner, read back (lossy codecs: rounded)."""
    return [int(round(f[2:6, 2:6].mean() / 20)) for f in frames]


def run_import(tmp_path, src, **cfg) -> np.ndarray:
    path = import_videos(ImportConfig(src=src, **cfg), tmp_path / "out.zarr", overwrite=True)
    return open_videos(path).read(slice(None))


def test_gif_is_imported_exactly_and_cut_into_clips(tmp_path):
    frames = moving_square()
    gif = save_gif(tmp_path / "clip.gif", frames)
    whole = run_import(tmp_path, gif)
    assert whole.shape == (1, 12, 32, 32, 3)
    assert frame_codes(whole[0]) == list(range(12))
    assert np.abs(whole[0].astype(int) - frames).max() <= 8  # GIF palette only
    clips = run_import(tmp_path, gif, frames=3, stride=2)  # frames 0,2,..,10 -> 2 clips of 3
    assert clips.shape == (2, 3, 32, 32, 3)
    assert [frame_codes(c) for c in clips] == [[0, 2, 4], [6, 8, 10]]
    attrs = open_videos(tmp_path / "out.zarr").attrs["source_config"]
    assert attrs["clips"] == ["clip.gif@0", "clip.gif@6"] and attrs["stride"] == 2
    assert run_import(tmp_path, gif, size=16).shape == (1, 12, 16, 16, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_folder_and_glob_of_frames_are_one_video(tmp_path, ext):
    frames = moving_square(8)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):  # names sort as the frame order
        Image.fromarray(f).save(folder / f"frame_{i:04d}{ext}", quality=95)
    from_folder = run_import(tmp_path, folder)
    assert from_folder.shape == (1, 8, 32, 32, 3)
    assert frame_codes(from_folder[0]) == list(range(8))
    err = np.abs(from_folder[0].astype(int) - frames)
    assert err.max() == 0 if ext == ".png" else err.mean() < 4  # JPEG rings at the square's edges
    from_glob = run_import(tmp_path, tmp_path / "frames" / f"frame_000[0-3]{ext}")
    np.testing.assert_array_equal(from_glob[0], from_folder[0, :4])


def test_glob_of_gifs_gives_one_video_each_and_unequal_lengths_need_frames(tmp_path):
    save_gif(tmp_path / "a.gif", moving_square(12))
    save_gif(tmp_path / "b.gif", moving_square(9))
    with pytest.raises(DataError, match="--frames N"):
        run_import(tmp_path, tmp_path / "*.gif")
    got = run_import(tmp_path, tmp_path / "*.gif", frames=4)  # 3 clips of a, 2 of b
    assert got.shape == (5, 4, 32, 32, 3)
    labels = open_videos(tmp_path / "out.zarr").attrs["source_config"]["clips"]
    assert labels == ["a.gif@0", "a.gif@4", "a.gif@8", "b.gif@0", "b.gif@4"]


def test_bad_video_inputs_are_named(tmp_path):
    save_gif(tmp_path / "wide.gif", np.zeros((4, 16, 24, 3), np.uint8))
    with pytest.raises(DataError, match="16×24 frames.*--size S"):
        run_import(tmp_path, tmp_path / "wide.gif")
    save_gif(tmp_path / "short.gif", moving_square(4))
    with pytest.raises(DataError, match="a clip of 5 needs more"):
        run_import(tmp_path, tmp_path / "short.gif", frames=5)
    with pytest.raises(DataError, match="matches no video files"):
        run_import(tmp_path, tmp_path / "*.mp5")
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 8, 8, 3), np.uint8))
    with pytest.raises(ConfigError, match="cut clips from video files"):
        run_import(tmp_path, tmp_path / "a.npy", frames=2)


def test_missing_pyav_names_the_extra(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_av(name, *args, **kw):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_av)
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(DataError, match=r"vidlat\[video\]"):
        video_files.read_pyav(tmp_path / "clip.mp4")


def write_with_pyav(path, frames, codec: str, pix_fmt: str, fps: int = 10):
    av = pytest.importorskip("av", reason="PyAV (vidlat[video], in the dev extra) writes the clip")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "0"}  # lossless, so pixel values can be compared
        else:
            stream.bit_rate = 4_000_000  # tiny frames: the default rate smears the corner code
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize(
    "ext, codec, pix_fmt",
    [
        (".mp4", "libx264", "yuv444p"),
        (".avi", "mjpeg", "yuvj444p"),
        (".mov", "mpeg4", "yuv420p"),
        (".webm", "libvpx", "yuv420p"),
    ],
)
def test_pyav_containers_are_read_in_order(tmp_path, ext, codec, pix_fmt):
    frames = moving_square(10)
    path = write_with_pyav(tmp_path / f"clip{ext}", frames, codec, pix_fmt)
    got, labels = load_video_files(path, frames=5, stride=1)
    assert got.shape == (2, 5, 32, 32, 3) and labels == [f"clip{ext}@0", f"clip{ext}@5"]
    assert frame_codes(got.reshape(10, 32, 32, 3)) == list(range(10))
    # the white square is where it was (lossy codecs blur its edges)
    err = np.abs(got.reshape(10, 32, 32, 3).astype(int) - frames).mean()
    assert err < (1 if codec == "libx264" else 12), err
    imported = run_import(tmp_path, path, size=16, frames=5)
    assert imported.shape == (2, 5, 16, 16, 3)


def test_save_mp4_round_trips(tmp_path):
    pytest.importorskip("av", reason="PyAV (vidlat[video], in the dev extra) writes mp4")
    frames = moving_square(6, size=33)  # odd: padded to even for yuv420p
    path = save_mp4(tmp_path / "out.mp4", frames, fps=8)
    back = video_files.read_pyav(path)
    assert back.shape == (6, 34, 34, 3)
    assert frame_codes(back) == list(range(6))


def test_cli_data_import_of_a_gif(tmp_path):
    from typer.testing import CliRunner

    from vidlat.cli.app import app

    gif = save_gif(tmp_path / "clip.gif", moving_square(12))
    out = tmp_path / "v.zarr"
    args = ["data", "import", str(gif), "--out", str(out), "--frames", "4", "--stride", "3"]
    result = CliRunner().invoke(app, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    videos = open_videos(out)
    assert videos.shape == (1, 4, 32, 32, 3)
    assert frame_codes(videos.read([0])[0]) == [0, 3, 6, 9]
