"""Pictures of frames: a labelled grid as PNG and an animated GIF (Pillow), an mp4 (PyAV, the
optional extra vidlat[video]), captions above frames.

Frames are (N, H, W, C) with C in {1, 3} (or (N, H, W) for grey), uint8 or float in [0, 1], as NumPy
arrays or torch tensors (moved to the CPU here).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vidlat.errors import DataError

PAD = 2  # pixels between tiles and around the grid
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
MIN_PICTURE_PX = 128  # GIFs and grids show frames at least this high (nearest-neighbour)


def to_uint8(frames) -> np.ndarray:
    """Frames as uint8 (N, H, W, C): floats are clipped to [0, 1] and scaled by 255."""
    if hasattr(frames, "detach"):  # a torch tensor: no torch import needed for NumPy callers
        frames = frames.detach().float().cpu().numpy()
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[..., None]
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise DataError(
            f"frames of shape {frames.shape} are not (N, H, W, C) with C 1 or 3; "
            "move the channel axis last (x.permute(0, 2, 3, 1) for (N, C, H, W) tensors)"
        )
    if frames.dtype != np.uint8:
        frames = (np.clip(frames.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return frames


def upscaled(frames: np.ndarray, at_least: int = MIN_PICTURE_PX) -> np.ndarray:
    """Frames (..., H, W, C) repeated nearest-neighbour by the smallest integer factor that makes
    them at least `at_least` pixels high, so a 32 px frame is readable in a picture (pictures
    only; metrics and stores keep the model's size)."""
    scale = max(1, -(-at_least // frames.shape[-3]))
    return frames.repeat(scale, axis=-3).repeat(scale, axis=-2)


def _rgb(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def save_grid(
    path: str | Path, rows: Sequence, labels: Sequence[str] | None = None, pad: int = PAD
) -> Path:
    """One row of tiles per entry of `rows` (each (N, H, W, C)), an optional label left of each row.

    Rows may hold different N (short rows end early); every frame must share H and W. Returns path.
    """
    tiles = [_rgb(to_uint8(r)) for r in rows]
    if not tiles:
        raise DataError("save_grid needs at least one row of frames")
    h, w = tiles[0].shape[1:3]
    if any(t.shape[1:3] != (h, w) for t in tiles):
        raise DataError(f"grid rows differ in frame size: {[t.shape[1:3] for t in tiles]}")
    if labels is not None and len(labels) != len(tiles):
        raise DataError(f"{len(labels)} labels for {len(tiles)} rows; give one label per row")
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = 0
    if labels:
        label_w = max(int(probe.textlength(str(text))) for text in labels) + 2 * pad
    cols = max(len(t) for t in tiles)
    canvas = Image.new(
        "RGB", (label_w + cols * (w + pad) + pad, len(tiles) * (h + pad) + pad), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        top = pad + r * (h + pad)
        if labels:
            draw.text((pad, top + max(h // 2 - 5, 0)), str(labels[r]), fill=TEXT)
        for c, frame in enumerate(row):
            canvas.paste(Image.fromarray(frame), (label_w + pad + c * (w + pad), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def save_layers(path: str | Path, layers: dict[str, np.ndarray], label: str) -> Path:
    """The main paper's Figure 3 for F frames of one video: composite, background, then per object
    slot its pasted object, its mask and its glimpse (scaled up to the frame size), every frame
    upscaled to >= 128 px. `layers`: a layered model's decompose() output for those frames as
    {layer: (1, F, ...)} arrays, channels first."""
    frames = {k: np.moveaxis(np.asarray(v[0]), -3, -1) for k, v in layers.items()}
    size = frames["composite"].shape[1]
    scale = size // frames["glimpses"].shape[-2]
    rows, names = [frames["composite"], frames["background"]], [f"{label} composite", "background"]
    for i in range(frames["masks"].shape[1]):
        glimpse = frames["glimpses"][:, i].repeat(scale, axis=1).repeat(scale, axis=2)
        rows += [frames["objects"][:, i], frames["masks"][:, i], glimpse]
        names += [f"object {i}", f"mask {i}", f"glimpse {i}"]
    return save_grid(path, [upscaled(to_uint8(r)) for r in rows], labels=names)


def save_gif(path: str | Path, frames, fps: int = 8) -> Path:
    """An endlessly looping GIF of frames (T, H, W, C) at `fps` frames per second. Returns path."""
    frames = to_uint8(frames)
    # a 2-D uint8 array becomes a grey ("L") image, (H, W, 3) an RGB one
    images = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = max(int(round(1000 / max(fps, 1))), 20)  # ms per frame; browsers clamp below 20
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
    return path


CAPTION_PX = 14  # height of the caption strip above a panel


def captioned(frames, title: str, per_frame: Sequence[str] = ()) -> np.ndarray:
    """Frames (T, H, W, C) with a white strip above each holding `title` and its per-frame text
    (e.g. the step): (T, 14 + H, W, 3) uint8."""
    frames = _rgb(to_uint8(frames))
    t, h, w, _ = frames.shape
    out = np.full((t, CAPTION_PX + h, w, 3), 255, np.uint8)
    out[:, CAPTION_PX:] = frames
    for i in range(t):
        strip = Image.new("RGB", (w, CAPTION_PX), BACKGROUND)
        text = f"{title} {per_frame[i]}" if i < len(per_frame) else title
        ImageDraw.Draw(strip).text((2, 1), text, fill=TEXT)
        out[i, :CAPTION_PX] = np.asarray(strip)
    return out


def has_pyav() -> bool:
    """Whether PyAV (vidlat[video]) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("av") is not None


def save_mp4(path: str | Path, frames, fps: int = 8) -> Path:
    """An H.264 mp4 of frames (T, H, W, C) at `fps` (PyAV; odd sizes padded by a pixel of white)."""
    try:
        import av
    except ImportError:
        raise DataError(
            "writing mp4 needs PyAV, the optional extra vidlat[video]: pip install 'vidlat[video]'"
        ) from None
    frames = _rgb(to_uint8(frames))
    _, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return path
