"""`vidlat encode`'s config, torch-free so `--help` and `vidlat config show` read it without
importing torch or dask."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidlat.config import Config


class EncodeConfig(Config):
    """How `vidlat encode` runs; none of it changes the latents written."""

    batch_size: int = Field(256, ge=1, description="frames per encoder forward pass")
    scheduler: str = Field(
        "threads",
        description="dask scheduler: 'threads', 'processes', or a dask.distributed address "
        "such as tcp://10.0.0.5:8786",
    )
    workers: int | None = Field(
        None, ge=1, description="local workers (default: 2 threads, or cores)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the encoder runs")
    dtype: Literal["float32", "float16"] = Field("float32", description="dtype of stored latents")
    threads_per_worker: int | None = Field(
        None,
        ge=1,
        description="torch CPU threads in each worker process (default with --scheduler "
        "processes: cores // workers, so that workers x threads never exceeds the cores; torch's "
        "own default gives every process all cores, and 2 processes then fight over them)",
    )
