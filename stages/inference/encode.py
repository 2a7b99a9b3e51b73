"""`vidlat encode`: every frame through the stage-1 encoder once, chunk by chunk, into the store.

Each dask task owns one chunk of whole videos: it reads them, encodes them in eval mode, and
writes its own region of the store, so no two writers ever touch one chunk. The model is loaded
once per worker (a module-level cache keyed by checkpoint hash), never shipped inside a task.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import torch
from dask.callbacks import Callback

from vidlat.errors import ConfigError
from vidlat.progress import progress_bar
from vidlat.stages.common import provenance
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.common.runtime import (
    frames_to_device,
    inference_layout,
    resolve_device,
)
from vidlat.stages.inference.configs import EncodeConfig
from vidlat.stages.load import load_run
from vidlat.stages.stage1.base import Stage1Model
from vidlat.store import places
from vidlat.store.format import (
    FACTOR_PREFIX,
    KIND_LATENTS,
    FieldSpec,
    store_exists,
    store_location,
)
from vidlat.store.reader import LatentStore
from vidlat.store.videos import VideoArray, open_videos
from vidlat.store.writer import StoreWriter, create_store, open_writer


@dataclass(frozen=True)
class EncodeJob:
    """Everything a task needs, by path: cheap to ship to any worker."""

    data: str
    ae_dir: str
    out: str
    encoder_hash: str
    device: str
    batch_size: int
    threads: int | None = None  # torch threads of the worker process (None: leave as it is)
    token: str = ""  # this encode run's own id, so that each run opens its store anew


_MODELS: dict[tuple[str, str], Stage1Model] = {}
_LOCK = threading.Lock()


def cached_model(job: EncodeJob) -> Stage1Model:
    """The worker's encoder, loaded on first use (one per process, shared by its threads)."""
    key = (job.encoder_hash, job.device)
    with _LOCK:
        if job.threads and torch.get_num_threads() != job.threads:
            torch.set_num_threads(job.threads)  # a worker process of our own pool
        if key not in _MODELS:
            model, _ = load_run(job.ae_dir, "stage1", torch.device(job.device))
            _MODELS[key] = model.eval()
        return _MODELS[key]


@torch.inference_mode()
def encode_frames(
    model: Stage1Model, frames: np.ndarray, batch_size: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Encode uint8 frames (v, T, H, W, C) into {field: float32 (v, T, *shape)} posterior means."""
    v, t = frames.shape[:2]
    flat = frames.reshape(v * t, *frames.shape[2:])
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(flat), batch_size):
        x = frames_to_device(flat[i : i + batch_size], device, inference_layout(device))
        for name, z in model.encode(x).items():
            parts.setdefault(name, []).append(z.float().cpu().numpy())
    return {name: np.concatenate(p).reshape(v, t, *p[0].shape[1:]) for name, p in parts.items()}


_OPEN: OrderedDict[EncodeJob, tuple[StoreWriter, VideoArray]] = OrderedDict()


def cached_io(job: EncodeJob) -> tuple[StoreWriter, VideoArray]:
    """The worker's writer of this run's store and reader of its dataset, opened by its first
    task (their metadata read once, not per chunk); the last 4 runs' are kept."""
    with _LOCK:
        if job not in _OPEN:
            # encode() checked the dataset's chunk files once
            _OPEN[job] = (open_writer(job.out), open_videos(job.data, check=False))
            while len(_OPEN) > 4:
                _OPEN.popitem(last=False)
        return _OPEN[job]


def encode_chunk(job: EncodeJob, index: int) -> int:
    """One task: encode chunk `index` of whole videos and write it; returns the frames encoded."""
    model = cached_model(job)
    writer, videos = cached_io(job)
    start, stop = writer.chunk_range(index)
    latents = encode_frames(
        model, videos.read(slice(start, stop)), job.batch_size, torch.device(job.device)
    )
    latents = model.postprocess_latents(latents)
    for name in videos.factor_names():
        latents[FACTOR_PREFIX + name] = videos.read_factor(name, slice(start, stop))
    writer.write_chunk(index, latents)
    return (stop - start) * videos.n_frames


def store_fields(model: Stage1Model, videos: VideoArray) -> list[FieldSpec]:
    """The model's fields plus the dataset's ground-truth factors as per-video aux arrays."""
    fields = list(model.store_fields())
    for name in videos.factor_names():
        arr = videos.read_factor(name, slice(0, 1))
        fields.append(
            FieldSpec(
                FACTOR_PREFIX + name, "aux", tuple(arr.shape[1:]), str(arr.dtype), per_frame=False
            )
        )
    return fields


def prepare_store(
    videos: VideoArray, ae_dir: Path, out: Path | str, cfg: EncodeConfig, overwrite: bool
) -> tuple[StoreWriter, str]:
    """Open the store to resume it, or create it; refuse a store made by another encoder or data."""
    digest = weights_hash(ae_dir)
    if store_exists(out) and not overwrite:
        writer = open_writer(out)
        fix = "pass --overwrite to replace it, or choose another --out"
        provenance.check_store(writer.attrs, out, ae_dir, videos.fingerprint, fix)
        writer.repair()  # damaged chunks (missing, undecodable, NaN) are encoded again below
        return writer, digest
    model, meta = load_run(ae_dir, "stage1", torch.device("cpu"))
    attrs = {
        "encoder": {
            "hash": digest,
            "model": model.name,
            "config": meta.get("config", {}),
            "path": str(ae_dir.resolve()),  # absolute: --verify works from any folder
        },
        "source": {"path": str(videos.path.resolve()), "fingerprint": videos.fingerprint},
        "split": {k: [int(i) for i in v] for k, v in videos.split.items()},
        "slots": getattr(model, "slots", None),
        "encode_config": cfg.model_dump(mode="json"),  # resolved config, kept in the group attrs
    }
    writer = create_store(
        out,
        store_fields(model, videos),
        videos.n_videos,
        videos.n_frames,
        videos_per_chunk=videos.array.chunks[0],
        dtype=cfg.dtype,
        attrs=attrs,
        overwrite=overwrite,
    )
    return writer, digest


def encode(
    data: Path, ae_dir: Path, out: Path | str, cfg: EncodeConfig, overwrite: bool = False
) -> Path | str:
    """Encode every frame of dataset `data` with the stage-1 run `ae_dir` into store `out`.

    A store (a local folder or an fsspec URL) is created whole under another name and moved to
    `out`, so a kill never leaves half a group there; with --overwrite the new store is encoded
    beside the old one and swapped in only once complete, so a failure keeps the old store."""
    check_scheduler(cfg.scheduler)  # before anything is created
    videos = open_videos(data)
    out = store_location(out)  # a local folder, or an fsspec URL kept as it is
    target, replacing = _target(out, Path(data), Path(ae_dir), overwrite)
    try:
        writer, digest = prepare_store(videos, Path(ae_dir), target, cfg, False)
        if target != out and not replacing:
            if not places.publish(target, out):  # another encode created it first: resume it
                writer, digest = prepare_store(videos, Path(ae_dir), out, cfg, False)
            target, writer = out, open_writer(out)
        device = resolve_device(cfg.device)
        job = EncodeJob(str(data), str(ae_dir), str(target), digest, str(device),
                        cfg.batch_size, worker_threads(cfg), uuid.uuid4().hex)  # fmt: skip
        _encode_missing(job, writer, videos.n_frames, cfg)
    except BaseException:
        if target != out:  # an old store stays; the new one, created or half-encoded, goes
            places.discard(target)
        raise
    if replacing:
        places.swap_in(target, out)
    return out


def _target(out: Path | str, data: Path, ae_dir: Path, overwrite: bool) -> tuple[Path | str, bool]:
    """Where to write: `out` itself to resume it, else a new name beside it (a folder or a URL
    like `out`); and whether an old store at `out` is being replaced. Refuses an `out` that
    overlaps an input or holds something other than a latent store."""
    places.refuse_overlap(out, {"--data": data, "--ae": ae_dir})
    replacing = places.check_place(out, KIND_LATENTS, overwrite, resumable=True)
    if places.holds_something(out) and not replacing:
        return out, False
    return places.beside(out), replacing


def _encode_missing(job: EncodeJob, writer: StoreWriter, n_frames: int, cfg: EncodeConfig) -> None:
    """Encode every chunk the store lacks, with a progress bar, then mark it complete."""
    missing = writer.missing_chunks()
    frames = sum(np.subtract(*writer.chunk_range(i)[::-1]) for i in missing) * n_frames
    with progress_bar("encode", total=int(frames), unit="frames") as bar:
        started, count = time.perf_counter(), 0

        def done(n: int) -> None:
            nonlocal count
            count += n
            bar.advance(n)
            bar.note(f"{count / max(time.perf_counter() - started, 1e-9):.0f} frames/s")

        run_tasks(job, missing, cfg, done)
    open_writer(job.out).mark_complete()


def check_scheduler(scheduler: str) -> None:
    """ConfigError unless 'threads', 'processes' or a dask.distributed address."""
    if scheduler not in ("threads", "processes") and "://" not in scheduler:
        raise ConfigError(
            f"scheduler {scheduler!r} is not 'threads', 'processes' or an address like "
            "tcp://host:8786"
        )


def worker_threads(cfg: EncodeConfig) -> int | None:
    """Torch threads per worker process: the setting, or for local processes cores // workers."""
    if cfg.threads_per_worker or cfg.scheduler != "processes":
        return cfg.threads_per_worker
    cores = os.cpu_count() or 1
    return max(1, cores // (cfg.workers or cores))


def run_tasks(job: EncodeJob, chunks: list[int], cfg: EncodeConfig, done) -> None:
    """One task per missing chunk on the chosen dask scheduler; `done(frames)` after each."""
    if not chunks:
        return
    if cfg.scheduler in ("threads", "processes"):
        tasks = [dask.delayed(encode_chunk)(job, i) for i in chunks]
        workers = cfg.workers or (2 if cfg.scheduler == "threads" else None)
        pool = worker_pool(workers) if cfg.scheduler == "processes" else None
        posttask = lambda key, result, dsk, state, worker: _maybe_done(result, done)  # noqa: E731
        try:
            with Callback(posttask=posttask):
                dask.compute(*tasks, scheduler=cfg.scheduler, num_workers=workers, pool=pool)
        finally:
            if pool is not None:
                stop_pool(pool)
        return
    from distributed import Client, as_completed  # only needed for a cluster

    with Client(cfg.scheduler) as client:
        futures = client.map(encode_chunk, [job] * len(chunks), chunks, pure=False)
        for future in as_completed(futures):
            done(future.result())


def worker_pool(workers: int | None) -> ProcessPoolExecutor:
    """Local worker processes that die with this one: each asks the kernel for SIGKILL when its
    parent exits (Linux) and a thread in each also watches the parent, so a killed encode never
    leaves workers writing chunks behind it."""
    return ProcessPoolExecutor(
        max_workers=workers or os.cpu_count(),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    )


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End the workers now (on an error or Ctrl-C too), not after their running tasks."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
        process.join(timeout=5)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: SIGKILL when the parent dies (prctl on Linux), else a watching thread."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watcher below does it
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _maybe_done(result, done) -> None:
    # posttask fires for every graph node; only encode_chunk returns a frame count (an int).
    if isinstance(result, int | np.integer):
        done(int(result))


def verify_store(path: Path, videos: int = 4, seed: int = 0) -> dict[str, float]:
    """Re-encode `videos` randomly chosen videos; the largest relative difference per field.

    Whole videos are re-encoded (not lone frames) so that whole-video post-processing such as slot
    alignment is checked too. StoreError when the recorded encoder or dataset changed since.
    """
    store = LatentStore.open(path)
    ae_dir, data = Path(store.attrs["encoder"]["path"]), Path(store.attrs["source"]["path"])
    source = open_videos(data)
    fix = f"the encoder run {ae_dir} or the dataset {data} changed since the store was encoded"
    provenance.check_store(store.attrs, path, ae_dir, source.fingerprint, fix)
    pick = np.random.default_rng(seed).choice(store.n_videos, min(videos, store.n_videos), False)
    pick = sorted(int(i) for i in pick)
    device = resolve_device("auto")
    model, _ = load_run(ae_dir, "stage1", device)
    fresh = model.postprocess_latents(encode_frames(model, source.read(pick), 256, device))
    names = [n for n, s in store.fields.items() if s.role != "aux" and n in fresh]
    return {
        n: float(np.abs(store.read(n, pick).astype(np.float32) - fresh[n]).max()) for n in names
    }
