"""The prepared GPU check (issue 15): one command on a CUDA machine, one Markdown section + JSON.

Runs, on the device given (CUDA on the GPU machine; the CPU in the tests, at micro size):
1. the CUDA tests (tests/test_gpu.py: bf16 training, pinned copies, encode on CUDA = CPU), when
   pytest and the tests are there;
2. stage-1 throughput: DRNET train steps and eval-mode encode, frames/s at 64×64 and 128×128, in
   float32 and bf16 autocast, contiguous and channels_last;
3. benchmark 1 (stage2_memory: store vs end-to-end pixel model vs re-encoding) at its default
   size (past + future 32, batch 32) at 64×64 and 128×128, each in a fresh process.
Writes OUT/gpu_check.md and OUT/gpu_check.json. Meant to finish within 8 minutes on one H100/H200.

Run: python -m vidlat.benchmarks.gpu_check --device cuda --out DIR (or benchmarks/gpu_check.sh)
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import torch

from vidlat.benchmarks.common import arg_parser, log, parse, pick_device, table, timed

# size -> (image sides, batch, timed steps, DRNET width/content/pose)
PLANS = {
    "micro": ((16,), 4, 2, (4, 8, 3)),
    "quick": ((32, 64), 16, 5, (16, 64, 10)),
    "default": ((64, 128), 64, 20, (64, 128, 10)),
}


def run_tests(root: Path) -> dict:
    """pytest tests/test_gpu.py in a fresh process, when pytest and the tests are there."""
    test_file = root / "tests" / "test_gpu.py"
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "pytest is not installed here"}
    if not test_file.is_file():
        return {"ran": False, "why": f"{test_file} is not here (run from a checkout)"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file), "-rs"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    tail = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()[-200:]]
    return {"ran": True, "exit_code": proc.returncode, "summary": tail[0]}


def throughput(image: int, batch: int, steps: int, sizes, device, amp: str, layout) -> dict:
    """DRNET train-step and encode frames/s at `image`, with `amp` and memory format `layout`."""
    from vidlat.stages.common.runtime import Amp
    from vidlat.stages.stage1 import build_stage1

    width, content, pose = sizes
    params = {"width": width, "content_dim": content, "pose_dim": pose}
    model = build_stage1("drnet", params, image, 3).to(device).to(memory_format=layout).train()
    optimizers, scaler = model.make_optimizers(), Amp(device, amp)
    x = torch.rand(batch, 3, image, image, device=device).contiguous(memory_format=layout)
    batch_in = {"x_t": x, "x_tk": x.roll(1, 0), "video": torch.arange(batch, device=device)}

    def train() -> None:
        model.train_step(batch_in, optimizers, scaler)

    @torch.no_grad()
    def encode() -> None:
        with scaler.autocast():
            model.encode(x)

    timed(train, 2, device)  # warm-up: kernels chosen, allocator pools made
    train_s = timed(train, steps, device)
    model.eval()
    timed(encode, 2, device)
    encode_s = timed(encode, steps, device)
    return {
        "image": image,
        "amp": amp,
        "layout": "channels_last" if layout == torch.channels_last else "contiguous",
        "train_frames_per_s": 2 * batch * steps / train_s,  # a step reads x^t and x^{t+k}
        "encode_frames_per_s": batch * steps / encode_s,
    }


def stage2(size: str, device_name: str, images) -> dict:
    """Benchmark 1 at each frame side: {str(side): its result, or {"error": why}} (a failure at
    one side, e.g. out of memory, keeps the others)."""
    from vidlat.errors import VidlatError
    from vidlat.pipeline.bench import run_script

    out = {}
    for image in images:
        try:
            out[str(image)] = run_script("stage2_memory", size, device_name,
                                         extra=("--image", str(image)))  # fmt: skip
        except VidlatError as e:
            out[str(image)] = {"error": str(e)}
    return out


def section(res: dict) -> str:
    rows = [[r["image"], r["amp"], r["layout"], f"{r['train_frames_per_s']:.0f}",
             f"{r['encode_frames_per_s']:.0f}"] for r in res["throughput"]]  # fmt: skip
    tests = res["tests"]
    lines = [
        f"## GPU check, {res['date']}: `{res['command']}`",
        "",
        f"- device: {res['device_name']}; torch {res['torch']}, CUDA {res['cuda']}",
        "- CUDA tests: "
        + (f"{tests['summary']} (exit {tests['exit_code']})" if tests["ran"] else tests["why"]),
        "",
        "Stage-1 throughput (DRNET, batch of frame pairs per step):",
        "",
        table(["image", "amp", "layout", "train frames/s", "encode frames/s"], rows),
    ]
    for image, bench in res.get("stage2", {}).items():
        if "error" in bench:
            lines += ["", f"Benchmark 1, {image}×{image}: {bench['error']}"]
            continue
        lines += ["", f"{bench['title']}, {image}×{image}", "", *bench["tables"], "",
                  *(f"- {note}" for note in bench["notes"])]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="output folder")
    parser.add_argument("--skip-stage2", action="store_true", help="leave benchmark 1 out")
    args = parse(parser)
    device = pick_device(args.device)
    images, batch, steps, sizes = PLANS[args.size]
    amps = ("off", "bf16")
    layouts = (torch.contiguous_format, torch.channels_last)
    res = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m vidlat.benchmarks.gpu_check " + " ".join(sys.argv[1:]),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "size": args.size,
    }
    log("gpu_check: CUDA tests")
    res["tests"] = run_tests(Path(__file__).resolve().parents[1])
    res["throughput"] = []
    for image in images:
        for amp in amps:
            for layout in layouts:
                log(f"gpu_check: throughput {image}px amp {amp} {layout}")
                res["throughput"].append(
                    throughput(image, batch, steps, sizes, device, amp, layout)
                )
    if not args.skip_stage2:
        log("gpu_check: benchmark 1")
        res["stage2"] = stage2(args.size, args.device, images)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    (args.out / "gpu_check.md").write_text(section(res))
    print(section(res))


if __name__ == "__main__":
    main()
