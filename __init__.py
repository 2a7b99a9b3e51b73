"""vidlat: two-stage video prediction through a cached Zarr latent store."""

from vidlat.errors import VidlatError

__version__ = "0.1.0"
__all__ = ["VidlatError", "__version__"]
