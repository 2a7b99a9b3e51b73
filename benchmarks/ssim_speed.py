"""Benchmark 5: SSIM frames/s, vidlat's separable float32 filter vs the former float64 11x11 conv.

Both compute the same SSIM (metrics.py's conventions) of random frames (N, H, W, 3) against noisy
copies at several frame sizes, on the same device and thread count:
- conv64: the implementation vidlat had before, one float64 grouped 11x11 convolution of the five
  local moments (kept here as the reference it was);
- separable32: vidlat.pipeline.metrics.ssim, two float32 band-matrix products per frame on frames
  centred per channel.
Each side's best of a few runs counts; the largest difference between the two is reported too.

Run: python -m vidlat.benchmarks.ssim_speed [--size quick] [--device cpu] [--threads 1] [--json]
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from vidlat.benchmarks.common import arg_parser, emit, fmt, parse, pick_device, result, sync, table
from vidlat.pipeline.metrics import ssim

# frame sizes, frames per run, repeats
SIZES = {
    "micro": ((16, 24), 8, 1),
    "quick": ((32, 64, 128), 64, 2),
    "default": ((32, 64, 128), 96, 2),
}


def conv64_ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The former SSIM: float64 grouped 11x11 convolution; (N, H, W, C) x2 -> (N,)."""
    n, h, w, c = x.shape
    x, y = x.double().permute(0, 3, 1, 2), y.double().permute(0, 3, 1, 2)
    r = torch.arange(-5, 6, dtype=torch.float64, device=x.device)
    g = torch.exp(-0.5 * (r / 1.5) ** 2)
    g = g / g.sum()
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (N, 5C, H, W)
    filtered = F.conv2d(moments, torch.outer(g, g).repeat(5 * c, 1, 1, 1), groups=5 * c)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.split(c, dim=1)
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_x * mu_y + c1) * (2 * (e_xy - mu_x * mu_y) + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (e_xx - mu_x**2 + e_yy - mu_y**2 + c2)
    return (num / den).mean(dim=(1, 2, 3))


def best_seconds(fn, x, y, repeats: int, device: torch.device) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn(x, y)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn(x, y)
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def run(size: str, device_name: str) -> dict:
    device = pick_device(device_name)
    sizes, n, repeats = SIZES[size]
    gen = torch.Generator().manual_seed(0)
    sides: dict[str, dict] = {"conv64": {}, "separable32": {}}
    rows, ratios = [], {}
    for px in sizes:
        x = torch.rand(n, px, px, 3, generator=gen)
        y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        x, y = x.to(device), y.to(device)
        diff = float((ssim(x, y).double() - conv64_ssim(x, y)).abs().max())
        fps = {}
        for name, fn in (("conv64", conv64_ssim), ("separable32", ssim)):
            fps[name] = n / best_seconds(fn, x, y, repeats, device)
            sides[name][str(px)] = {"frames_per_s": fps[name], "frames": n}
        ratios[f"speedup_{px}px"] = fps["separable32"] / fps["conv64"]
        rows.append([f"{px}×{px}×3", n, fmt(fps["conv64"]), fmt(fps["separable32"]), f"{diff:.1e}"])
    speedups = "; ".join(f"{px} px **{fmt(ratios[f'speedup_{px}px'])}×**" for px in sizes)
    rows.append(["**ratio** separable32 / conv64 frames/s", "", "", speedups, ""])
    cols = ["frames", "n", "conv64 frames/s", "separable32 frames/s", "max |Δ SSIM|"]
    notes = [
        f"random frames against noisy copies (σ 0.2), {n} per run, best of {repeats} runs after a "
        f"warm-up; torch threads {torch.get_num_threads()}",
    ]
    title = "5. SSIM: separable float32 filter vs the former float64 11×11 convolution"
    params = {"sizes": list(sizes), "frames": n, "repeats": repeats}
    return result(
        "ssim_speed", title, size, device, params, sides, ratios, [table(cols, rows)], notes=notes
    )


def main() -> None:
    args = parse(arg_parser(__doc__))
    emit(run(args.size, args.device), args.json)


if __name__ == "__main__":
    main()
