"""Runtime shared by the training loops: device, mixed precision, seeds, RNG state for resume.

Mixed precision ("amp"):
- "off": float32 everywhere (the default; on CPU it is also the fastest on most machines).
- "bf16": autocast to bfloat16. On CUDA when the GPU supports it; on CPU through CPU autocast,
  allowed because it is numerically safe (bf16 keeps float32's range, no loss scaling needed), but
  rarely faster there, so it is never chosen implicitly.
- "fp16": autocast to float16 with a GradScaler, CUDA only: CPU float16 autocast covers few ops and
  gains nothing, so it is refused with a ConfigError rather than run slowly.
"""

from __future__ import annotations

import base64
import random
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from vidlat.errors import ConfigError

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """auto (CUDA if present, else CPU), cpu, cuda or cuda:N as a torch device; else ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} asked for, but this PyTorch sees no CUDA GPU; "
                "use --device cpu (or auto), or install a CUDA build of PyTorch"
            )
        return torch.device(name)
    raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda; pick one of those")


def check_amp(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for `amp` on `device` (None for "off"); ConfigError where unsupported."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp {amp!r} is not one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp fp16 needs a CUDA device; on CPU use --amp bf16 or --amp off")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16 support; use --amp fp16 or --amp off")
    return _DTYPES[amp]


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """A context manager running its block under autocast for `amp` ("off": a no-op context)."""
    dtype = check_amp(device, amp)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Amp:
    """Mixed precision for one device: `autocast()` for forward passes, and backward/step/update
    that scale the loss when fp16 needs it (one GradScaler may serve several optimisers)."""

    def __init__(self, device: torch.device, mode: str = "off"):
        self.device, self.mode = device, mode
        self.dtype = check_amp(device, mode)
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None

    def autocast(self) -> AbstractContextManager:
        return autocast(self.device, self.mode)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skipped when fp16 gradients overflowed
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per iteration, after every optimiser of the iteration stepped."""
        if self.scaler:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return dict(self.scaler.state_dict()) if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's global and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state(generator: np.random.Generator | None = None) -> dict[str, Any]:
    """Every RNG state as JSON data: torch CPU/CUDA (base64 bytes), Python, a NumPy Generator."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": _b64(torch.get_rng_state()),
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    if generator is not None:
        state["numpy"] = generator.bit_generator.state  # PCG64's 128-bit ints: JSON keeps them
    return state


def set_rng_state(state: dict[str, Any], generator: np.random.Generator | None = None) -> None:
    """Restore what `rng_state` captured (CUDA states only when the same number of GPUs is seen)."""
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])
    if generator is not None and "numpy" in state:
        generator.bit_generator.state = state["numpy"]


def frames_to_device(
    frames: np.ndarray | torch.Tensor,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """uint8 frames (B, H, W, C), numpy or torch -> float32 (B, C, H, W) in [0, 1] on `device`.

    The uint8 bytes cross to the device (4x fewer than float32) and are converted there.
    """
    x = torch.as_tensor(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if device.type == "cuda" and x.device.type == "cpu":
        x = x.pin_memory()
    x = x.to(device, non_blocking=True)
    return encoder_input(x).contiguous(memory_format=memory_format)


def inference_layout(device: torch.device) -> torch.memory_format:
    """Memory format of encoder inputs when encoding without gradients (encode, the online
    baseline): channels_last on the CPU, where the convolutions run it 15-30 % faster (measured
    with DRNET at 64x64, 1 and 2 threads: docs/benchmarks.md, 2026-12-02); contiguous on other
    devices, where it has not been measured."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def encoder_input(frames: torch.Tensor) -> torch.Tensor:
    """The one uint8 -> float conversion of every encoder input (training, encode, the online
    baseline, decode's context frames): uint8 (..., H, W, C) -> float32 (..., C, H, W) in [0, 1],
    on the frames' device."""
    return frames.movedim(-1, -3).float().div_(255.0)
