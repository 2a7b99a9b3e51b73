"""The Python API: `vidlat.load(ae_dir, predictor_dir)` -> a Model that encodes, predicts and
decodes frames in a notebook, with the sizes and `past` taken from the checkpoints.

Frames are uint8 (B, T, H, W, C) (or one video (T, H, W, C), or floats in [0, 1]); any frame size
is resized to the stage-1 model's (bilinear). Latents are {field: float32 (B, T, *shape)}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidlat.errors import ConfigError
from vidlat.pipeline.generate import fit_frames
from vidlat.pipeline.sources.imported import load_array, to_uint8
from vidlat.pipeline.sources.video_files import is_video_source, load_video_files
from vidlat.stages.common import provenance
from vidlat.stages.common.runtime import resolve_device
from vidlat.stages.inference.encode import encode_frames
from vidlat.stages.inference.rollout import decode_latents, predict_frames
from vidlat.stages.load import load_run
from vidlat.store.videos import open_videos

BATCH = 256  # frames per encoder / decoder call


def read_frames(path: str | Path) -> np.ndarray:
    """Every video of a dataset, a .npy/.npz array or video files, uint8 (B, T, H, W, C)."""
    path = Path(path)
    if (path / "zarr.json").exists():
        return open_videos(path).read(slice(None))
    if is_video_source(path):
        return load_video_files(path)[0]
    return load_array(path)


class Model:
    """A stage-1 autoencoder and, optionally, the predictor trained on its latents."""

    def __init__(self, ae_dir: str | Path, predictor_dir: str | Path | None, device: str):
        self.device = resolve_device(device)
        self.autoencoder, self.ae_meta = load_run(ae_dir, "stage1", self.device)
        self.predictor, self.predictor_meta = None, None
        if predictor_dir is not None:
            self.predictor, self.predictor_meta = load_run(predictor_dir, "predictor", self.device)
            provenance.check_trained_on(Path(ae_dir), self.predictor_meta)
        self.image_size, self.channels = self.autoencoder.image_size, self.autoencoder.channels

    @property
    def past(self) -> int | None:
        """Observed frames the predictor was trained with (None without a predictor)."""
        return self.predictor_meta["config"]["past"] if self.predictor_meta else None

    @property
    def future(self) -> int | None:
        """Frames the predictor was trained to predict."""
        return self.predictor_meta["config"]["future"] if self.predictor_meta else None

    def frames(self, frames: np.ndarray | str | Path) -> np.ndarray:
        """Frames (or a path, as read_frames) as uint8 (B, T, S, S, C) at the model's size S."""
        if isinstance(frames, (str, Path)):
            frames = read_frames(frames)
        frames = np.asarray(frames)
        frames = frames[None] if frames.ndim == 4 else frames  # one video
        frames = to_uint8(frames, Path("frames"), "the frames")
        return fit_frames(frames, self.image_size, self.channels, Path("frames"))

    def encode(self, frames: np.ndarray | str | Path) -> dict[str, np.ndarray]:
        """Posterior means {field: float32 (B, T, *shape)} of every frame."""
        with torch.inference_mode():
            return encode_frames(self.autoencoder, self.frames(frames), BATCH, self.device)

    def decode(
        self, latents: dict[str, np.ndarray], context: np.ndarray | None = None
    ) -> np.ndarray:
        """Frames uint8 (B, T, H, W, C) of latents {field: (B, T, *shape)} (as encode gives).
        `context`: uint8 frames (B, H, W, C), one per video, whose features a stage-1 model with
        U-Net skips (DRNET's default) decodes with, e.g. each video's last observed frame;
        required by such a model, ignored by the others."""
        z = {k: torch.as_tensor(np.asarray(v), device=self.device) for k, v in latents.items()}
        if context is not None:
            context = self.frames(np.asarray(context)[:, None])[:, 0]  # at the model's size
        with torch.inference_mode():
            return decode_latents(self.autoencoder, z, BATCH, context)

    def predict(self, frames: np.ndarray | str | Path, future: int | None = None) -> np.ndarray:
        """The `future` frames (default: as trained) after the last `past` frames of each video:
        uint8 (B, future, H, W, C)."""
        if self.predictor is None:
            raise ConfigError("predict needs a predictor: vidlat.load(ae_dir, predictor_dir)")
        frames = self.frames(frames)
        if frames.shape[1] < self.past:
            raise ConfigError(
                f"the videos have {frames.shape[1]} frames; the predictor observes {self.past}"
            )
        observed = frames[:, -self.past :]
        steps = future or self.future
        return predict_frames(self.autoencoder, self.predictor, observed, steps, self.device)[0]


def load(
    ae_dir: str | Path, predictor_dir: str | Path | None = None, device: str = "auto"
) -> Model:
    """The trained models of a `vidlat train-ae` run and (optionally) a `train-predictor` run."""
    return Model(ae_dir, predictor_dir, device)
