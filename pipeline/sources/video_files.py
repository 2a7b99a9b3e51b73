"""Videos held as files: .gif and folders or globs of PNG/JPEG frames (Pillow), .mp4/.avi/.mov/.webm
(PyAV, the optional extra `vidlat[video]`), cut into clips (V, T, H, W, 3) uint8.

A source is one path or glob pattern:
- a video file (.gif, .mp4, .avi, .mov, .webm, .mkv): one video;
- a folder or glob of PNG/JPEG frames (sorted by name): one video;
- a folder or glob of video files (sorted by name): one video each.
Each video is subsampled by `stride` (every stride-th frame), then cut into consecutive clips of
`frames` frames (a shorter tail is dropped); without `frames`, each video is one clip and all must
be equally long. Frames become RGB; `size` resizes them to size×size (bilinear), and non-square
frames need it. Clips are decoded into memory: cut long films into files first if they do not fit.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from vidlat.errors import DataError

GIF = (".gif",)
FRAME_IMAGES = (".png", ".jpg", ".jpeg")
PYAV_VIDEOS = (".mp4", ".avi", ".mov", ".webm", ".mkv")
VIDEO_FILES = GIF + PYAV_VIDEOS
MISSING_PYAV = (
    "reading {path} needs PyAV, the optional extra vidlat[video]: pip install 'vidlat[video]' "
    "(or pip install av); .gif files and folders of PNG/JPEG frames need nothing more"
)


def _is_glob(path: str | Path) -> bool:
    return any(ch in str(path) for ch in "*?[")


def is_video_source(path: str | Path) -> bool:
    """Whether `path` names video files or frames (else it is an array: .npy, .npz, Zarr)."""
    path = Path(path)
    if _is_glob(path):
        return True
    if path.suffix.lower() in VIDEO_FILES:
        return True
    if path.is_dir() and not (path / "zarr.json").exists() and not (path / ".zarray").exists():
        return any(p.suffix.lower() in FRAME_IMAGES + VIDEO_FILES for p in path.iterdir())
    return False


def _members(path: Path) -> list[Path]:
    """The files a folder or glob names, sorted; DataError when there are none."""
    if _is_glob(path):
        files = [Path(p) for p in sorted(glob.glob(str(path))) if Path(p).is_file()]
    else:
        files = sorted(p for p in path.iterdir() if p.is_file())
    files = [p for p in files if p.suffix.lower() in FRAME_IMAGES + VIDEO_FILES]
    if not files:
        raise DataError(
            f"{path} matches no video files ({', '.join(VIDEO_FILES)}) or frames "
            f"({', '.join(FRAME_IMAGES)})"
        )
    return files


def read_gif(path: Path) -> np.ndarray:
    """Every frame of a GIF as RGB uint8 (T, H, W, 3)."""
    try:
        with Image.open(path) as image:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)])
    except OSError as exc:
        raise DataError(f"cannot read {path} as a GIF: {exc}") from None


def read_pyav(path: Path) -> np.ndarray:
    """Every frame of the first video stream of a file PyAV (FFmpeg) decodes: (T, H, W, 3)."""
    try:
        import av
    except ImportError:
        raise DataError(MISSING_PYAV.format(path=path)) from None
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.FFmpegError, IndexError) as exc:
        raise DataError(f"cannot decode {path}: {exc}") from None
    if not frames:
        raise DataError(f"{path} holds no video frames")
    return np.stack(frames)


def read_frames(files: list[Path]) -> np.ndarray:
    """PNG/JPEG files, in the order given, as one RGB video (T, H, W, 3)."""
    frames = []
    for f in files:
        try:
            with Image.open(f) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as exc:
            raise DataError(f"cannot read frame {f}: {exc}") from None
    if len({fr.shape for fr in frames}) > 1:
        raise DataError(f"the frames of {files[0].parent} differ in size; give frames of one size")
    return np.stack(frames)


def read_video(path: Path) -> np.ndarray:
    """One video file as RGB uint8 (T, H, W, 3)."""
    if path.suffix.lower() in GIF:
        return read_gif(path)
    return read_pyav(path)


def read_source(path: str | Path) -> tuple[list[np.ndarray], list[str]]:
    """The videos (each (T, H, W, 3) uint8) a path or glob names, and a name for each."""
    path = Path(path)
    if not _is_glob(path) and not path.exists():
        raise DataError(f"{path} does not exist")
    if path.is_file():
        return [read_video(path)], [path.name]
    files = _members(path)
    images = [f for f in files if f.suffix.lower() in FRAME_IMAGES]
    if images and len(images) < len(files):
        raise DataError(f"{path} mixes frame images and video files; give one kind")
    if images:
        return [read_frames(images)], [path.name]
    return [read_video(f) for f in files], [f.name for f in files]


def resize_video(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (T, H, W, 3) -> (T, size, size, 3), bilinear (Pillow)."""
    if frames.shape[1:3] == (size, size):
        return frames
    resample = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), resample)) for f in frames])


def cut_clips(
    video: np.ndarray, name: str, frames: int | None, stride: int
) -> tuple[list[np.ndarray], list[str]]:
    """Every `stride`-th frame, cut into consecutive clips of `frames` (all of it when None)."""
    video = video[::stride]
    if frames is None:
        return [video], [name]
    n = len(video) // frames
    if n == 0:
        raise DataError(
            f"{name} has {len(video)} frames at stride {stride}; a clip of {frames} needs more "
            "(lower --frames or --stride)"
        )
    clips = [video[i * frames : (i + 1) * frames] for i in range(n)]
    return clips, [f"{name}@{i * frames * stride}" for i in range(n)]


def load_video_files(
    path: str | Path, *, size: int | None = None, frames: int | None = None, stride: int = 1
) -> tuple[np.ndarray, list[str]]:
    """Clips of the videos at `path` (module docstring) as uint8 (V, T, S, S, 3), and their names
    ('file@first frame')."""
    if stride < 1 or (frames is not None and frames < 1):
        raise DataError(f"--stride ({stride}) and --frames ({frames}) must be at least 1")
    videos, names = read_source(path)
    clips, labels = [], []
    for video, name in zip(videos, names, strict=True):
        h, w = video.shape[1:3]
        if h != w and size is None:
            raise DataError(
                f"{name} has {h}×{w} frames; vidlat's models take square frames: pass --size S "
                "to resize them to S×S"
            )
        video = resize_video(video, size) if size is not None else video
        more, more_labels = cut_clips(video, name, frames, stride)
        clips += more
        labels += more_labels
    shapes = {c.shape for c in clips}
    if len(shapes) > 1:
        raise DataError(
            f"the videos of {path} differ in shape {sorted(shapes)}; pass --frames N to cut clips "
            "of one length (and --size S for one frame size)"
        )
    return np.stack(clips), labels
