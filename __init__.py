"""vidlat: two-stage video prediction through a cached Zarr latent store.

`vidlat.load("runs/ae", "runs/pred").predict("clip.mp4", future=16)` -> uint8 (B, 16, H, W, C).
"""

from vidlat.errors import VidlatError

__version__ = "0.1.0"
__all__ = ["VidlatError", "__version__", "load"]


def load(ae_dir, predictor_dir=None, device: str = "auto"):
    """The trained models of a stage-1 run and (optionally) a predictor run: `.encode(frames)`,
    `.predict(frames_or_path, future=...)`, `.decode(latents)` (vidlat.pipeline.api.Model).
    Imported on first use, so `import vidlat` (and `vidlat --help`) stays light."""
    from vidlat.pipeline.api import load as _load

    return _load(ae_dir, predictor_dir, device)
