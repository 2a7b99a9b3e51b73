"""vidlat bench: the online baseline re-encodes exactly what the store holds; each benchmark runs
at a micro size and returns both sides and finite ratios; results are recorded with the machine."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import vidlat.cli.bench as cli_bench
from vidlat.errors import ConfigError, VidlatError
from vidlat.pipeline.bench import BENCHMARKS, append_results, run_benchmarks, run_script
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.common.distributed import direct
from vidlat.stages.common.runtime import Amp
from vidlat.stages.inference.encode import EncodeConfig, encode, encode_frames
from vidlat.stages.training.loop import StepContext
from vidlat.stages.training.online import OnlineLatents, OnlineWindowSampler
from vidlat.stages.training.train_predictor import (
    TrainPredictorConfig,
    build_run,
    to_device,
    train_step,
)
from vidlat.store.reader import LatentStore

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def store(tiny_videos, tiny_ae, tmp_path_factory):
    set_quiet(True)
    out = tmp_path_factory.mktemp("bench") / "lat.zarr"
    return LatentStore.open(encode(tiny_videos, tiny_ae, out, EncodeConfig(device="cpu")))


@pytest.fixture(scope="module")
def source(tiny_videos, tiny_ae):
    return OnlineLatents(tiny_videos, tiny_ae, "cpu", encode_batch=7)  # 7: batches unlike encode's


def test_online_windows_equal_the_stored_latents(store, source):
    sampler = OnlineWindowSampler(source, window=5, batch_size=6, seed=3)
    state = sampler.state_dict()
    videos, starts = sampler.index()
    sampler.load_state_dict(state)  # so that sample() draws the same windows
    batch = sampler.sample()
    assert set(batch) == {"content", "pose"} and set(videos) <= set(store.split["train"])
    frames = starts[:, None] + np.arange(5)  # (B, window)
    pixels = sampler.pixels(videos, starts).numpy()  # (B, window, H, W, C) uint8
    fresh = encode_frames(source.model, pixels, 256, CPU)
    for name, got in batch.items():
        assert got.dtype == torch.float32 and got.device == CPU and got.shape[:2] == (6, 5)
        stored = store.read(name, videos)[np.arange(6)[:, None], frames]  # (B, window, D)
        np.testing.assert_allclose(got.numpy(), stored, atol=1e-5)
        np.testing.assert_allclose(got.numpy(), fresh[name], atol=1e-5)


def test_online_latents_stand_in_for_the_store(store, source, tiny_ae):
    assert {n: s.role for n, s in source.fields.items()} == {"content": "content", "pose": "pose"}
    assert source.encoder_hash == store.encoder_hash == weights_hash(tiny_ae)
    np.testing.assert_allclose(source.read("pose", [1, 3]), store.read("pose", [1, 3]), atol=1e-5)
    # train-predictor's setup and step run on it unchanged (statistics, meta, one update)
    cfg = TrainPredictorConfig(past=2, future=3, batch_size=4, hidden=8, layers=1, device="cpu")
    model, meta = build_run(source, cfg)
    assert meta["encoder_hash"] == store.encoder_hash
    train_pose = store.read("pose", store.split["train"])  # (V, T, D)
    np.testing.assert_allclose(model.mean_pose.numpy(), train_pose.mean((0, 1)), atol=1e-4)
    sampler = OnlineWindowSampler(source, window=5, batch_size=4, fields=list(model.fields))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = StepContext(model.make_optimizers(1e-3), Amp(CPU), direct)
    stats = train_step(model, to_device(sampler.sample(), CPU), ctx, cfg)
    assert sorted(stats) == ["future_mse", "grad_norm", "loss"]
    assert all(torch.isfinite(v) for v in stats.values()) and stats["grad_norm"] > 0
    assert not torch.equal(before["head.weight"], model.state_dict()["head.weight"])  # it stepped


def test_online_sampler_streams_and_resumes(source):
    kw = {"window": 4, "batch_size": 3, "memory_budget": 1, "buffer_chunks": 1, "refresh_every": 2}
    sampler = OnlineWindowSampler(source, seed=0, **kw)
    assert not sampler.in_memory
    for _ in range(3):
        sampler.sample()
    state = json.loads(json.dumps(sampler.state_dict()))  # JSON-able, as checkpoints need
    later = [sampler.sample()["pose"] for _ in range(3)]
    resumed = OnlineWindowSampler(source, seed=0, **kw)
    resumed.load_state_dict(state)
    for a in later:
        assert torch.equal(a, resumed.sample()["pose"])
    videos, _ = sampler.index()  # a streaming batch comes from the one chunk held
    assert len(set(videos // source.videos.array.chunks[0])) == 1


@pytest.fixture(scope="module")
def micro():
    """name -> that benchmark's micro result, each run once exactly as `vidlat bench` runs it:
    `python -m vidlat.benchmarks.NAME --json` in a fresh process, on one thread."""
    results = {}

    def get(name: str) -> dict:
        if name not in results:
            results[name] = run_script(name, "micro", "cpu", threads=1)
        return results[name]

    return get


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_benchmark_runs_at_micro_size(micro, name):
    res = micro(name)
    assert res["name"] == name and res["size"] == "micro" and res["device"].startswith("cpu")
    assert len(res["sides"]) >= 2 and res["ratios"]
    assert all(math.isfinite(r) and r > 0 for r in res["ratios"].values()), res["ratios"]
    assert res["tables"][-1].splitlines()[-1].startswith("| **ratio**")
    json.dumps(res)  # what `vidlat bench` reads back from the script's stdout


def test_stage2_memory_measures_each_side_in_its_own_process(micro):
    res = micro("stage2_memory")
    store, online, e2e = (res["sides"][k] for k in ("store", "online", "end_to_end"))
    assert store["peak_reset"] and online["peak_reset"]  # VmHWM reset at the ready state
    # re-encoding pixels costs more per batch than slicing latents (at micro size both sides'
    # memory rises are a few pages, too coarse to order them reliably; time is not)
    assert online["data_ms"] > store["data_ms"]
    # the store side imported vidlat.stages.training.online too: neither loads a stage-1 model
    assert not store["imports_stage1"] and online["imports_stage1"]
    # the end-to-end baseline trains the encoder and decoder too: more parameters, finite loss
    assert e2e["parameters"] > store["parameters"] and math.isfinite(e2e["loss"])
    assert res["ratios"]["e2e_steps_per_s"] == store["steps_per_s"] / e2e["steps_per_s"]
    # what backward keeps: the pixel model's conv activations outweigh the LSTM's
    assert e2e["saved_bytes"] > store["saved_bytes"] > 0 and online["saved_bytes"] > 0
    assert e2e["grad_bytes"] == 4 * e2e["parameters"]  # float32 gradients of all it trains
    assert store["activation_bytes"] == store["saved_bytes"] + store["grad_bytes"]


def test_saved_for_backward_counts_each_activation_once_and_no_parameter():
    from vidlat.benchmarks.common import SavedForBackward

    w, v = torch.nn.Parameter(torch.randn(3, 5)), torch.nn.Parameter(torch.randn(3, 5))
    x = torch.randn(4, 3)
    with SavedForBackward([w, v]) as saved:
        y = ((x @ w).relu() + x @ v).sum()  # both products save x; relu saves its (4, 5) output
    assert saved.bytes == 4 * (4 * 3) + 4 * (4 * 5)  # x once (48 B) + relu's output (80 B)
    y.backward()  # the hooks handed autograd its own tensors back
    assert torch.allclose(v.grad, x.sum(0)[:, None].expand(3, 5))


def test_stage2_memory_takes_another_image_and_batch():
    from vidlat.benchmarks.stage2_memory import params_for

    cpu = torch.device("cpu")
    default = params_for("default", cpu)
    assert (default["image"], default["batch"]) == (64, 32)
    bigger = params_for("default", cpu, image=128, batch=16)
    assert bigger == default | {"image": 128, "batch": 16}


def test_pixel_baseline_learns_a_still_video():
    from vidlat.benchmarks.pixel_baseline import PixelPredictor

    torch.manual_seed(0)
    frames = torch.rand(1, 1, 3, 16, 16).expand(4, 6, 3, 16, 16)  # the same frame throughout
    model = PixelPredictor(3, 16, code=8, width=4, hidden=8, layers=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(frames, past=3).item()
    for _ in range(100):
        opt.zero_grad()
        loss = model.loss(frames, past=3)
        loss.backward()
        opt.step()
    assert model(frames, past=3).shape == (4, 3, 3, 16, 16) and loss.item() < 0.4 * first


def test_run_script_reads_the_last_json_line(tmp_path, monkeypatch):
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fake.py").write_text(
        "import json, sys\nprint('chatter')\nprint(json.dumps({'argv': sys.argv[1:]}))\n"
    )
    (pkg / "bad.py").write_text("raise SystemExit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the subprocess finds the fake package
    res = run_script("fake", "micro", "cpu", threads=1, package="fakebench")
    assert res == {"argv": ["--size", "micro", "--device", "cpu", "--json", "--threads", "1"]}
    with pytest.raises(VidlatError, match="exit code 3"):
        run_script("bad", "micro", "cpu", package="fakebench")
    with pytest.raises(VidlatError, match="exit code 1"):  # no such module
        run_script("missing", "micro", "cpu", package="fakebench")
    with pytest.raises(ConfigError, match="stage2_memory"):
        run_benchmarks(only=["nope"])


FAKE = {
    "name": "data_path", "title": "2. Data path", "size": "quick", "device": "cpu (2 threads)",
    "params": {}, "sides": {"a": {}, "b": {}}, "ratios": {"x": 0.95}, "targets": {"x": "≥ 0.9"},
    "tables": ["| side | v |\n| --- | --- |\n| **ratio** | 0.95 |"], "notes": ["a note"],
    "load_average": [0.5, 0.7], "cpu_count": 2,
}  # fmt: skip


def test_append_results_records_machine_date_and_command(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    when = dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    append_results(doc, [FAKE], "vidlat bench --quick", machine="2-core test CPU", when=when)
    append_results(doc, [FAKE], "vidlat bench --only data_path", machine="other", when=when)
    text = doc.read_text()
    assert text.startswith("# Benchmarks") and text.count("# Benchmarks") == 1
    assert "- machine: 2-core test CPU" in text and "- date: 2025-01-02T03:04:00+00:00" in text
    assert "`vidlat bench --quick`" in text and "`vidlat bench --only data_path`" in text
    assert "### 2. Data path" in text and "| **ratio** | 0.95 |" in text and "- a note" in text
    assert "load average 0.5 at start, 0.7 at end, on 2 CPUs" in text and "x ≥ 0.9" in text


def test_time_to_quality_curves_are_drawn_beside_the_doc_and_linked(micro, tmp_path):
    from PIL import Image

    res = micro("time_to_quality")
    plots = {plot["name"]: plot for plot in res["plots"]}
    assert set(plots) == {"object_mse", "ssim"}
    budget = str(res["params"]["budgets"][0])
    mse = plots["object_mse"]
    assert mse["x"] == [float(b) for b in res["params"]["budgets"]]
    assert set(mse["series"]) == {"two-stage", "end-to-end", "copy last frame"}
    two, e2e = res["sides"]["two_stage"][budget], res["sides"]["end_to_end"][budget]
    assert mse["series"]["end-to-end"][0] == e2e["model"]["object_mse"]
    assert plots["ssim"]["series"]["copy last frame"][0] == two["copy"]["ssim"]
    doc = tmp_path / "bench.md"
    when = dt.datetime(2025, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    append_results(doc, [res, FAKE], "vidlat bench", machine="test CPU", when=when)
    text = doc.read_text()
    for name in plots:
        link = f"images/bench_time_to_quality_{name}_20250102_0304.png"
        assert f"({link})" in text
        assert Image.open(tmp_path / link).size == (640, 400)
    assert text.count("![") == 2  # the data_path result has no plots


def test_time_to_quality_charges_a_commands_fixed_cost_once(tmp_path):
    """The probe's per-step time comes from the loop's own samples/s (the first row, with the
    warm-up, left out); the rest of its wall time is fixed and comes off a budget once."""
    import time as clock

    from vidlat.benchmarks.time_to_quality import PROBE_STEPS, costs, steps_for

    def fake_train(steps, every, out):
        out.mkdir()
        rows = [{"step": s, "samples_per_s": 8 / (1.0 if s == every else 0.01)}
                for s in range(every, steps + 1, every)]  # fmt: skip
        rows.insert(1, {"step": every, "val_mse": 0.5})  # a validation row has no rate
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        clock.sleep(0.3)

    fixed, step = costs(fake_train, tmp_path / "probe", batch=8)
    assert step == pytest.approx(0.01)
    assert 0.3 - PROBE_STEPS * 0.01 <= fixed < 0.3  # the sleep, less the steps it stands for
    assert steps_for(10.0, 2.0, 0.01) == 800 and steps_for(1.0, 2.0, 0.01) == 1


def test_cli_bench_prints_tables_and_appends_them(tmp_path, monkeypatch):
    calls = []

    def fake_run(**kw):
        calls.append(kw)
        return [FAKE]

    monkeypatch.setattr(cli_bench, "run_benchmarks", fake_run)
    app = typer.Typer()
    app.command("bench")(cli_bench.bench)
    app.command("other")(lambda: None)  # two commands, so `bench` is a subcommand
    doc = tmp_path / "bench.md"
    args = ["bench", "--quick", "--device", "cpu", "--only", "data-path", "--out", str(doc)]
    args += ["--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0  # choices are the registry's names, underscores and all
    args[5] = "data_path"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [{"quick": True, "device": "cpu", "only": ["data_path"], "threads": 1,
                      "image": None, "batch": None}]  # fmt: skip
    assert "| **ratio** | 0.95 |" in result.output
    assert "`vidlat bench --quick --device cpu --threads 1 --only data_path`" in doc.read_text()
    args = ["bench", "--device", "cpu", "--only", "stage2_memory", "--image", "128", "--batch",
            "16", "--out", str(doc)]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    assert calls[-1]["image"] == 128 and calls[-1]["batch"] == 16
    assert "--only stage2_memory --image 128 --batch 16`" in doc.read_text()  # as recorded


def test_image_and_batch_reach_benchmark_1_only(monkeypatch):
    import vidlat.pipeline.bench as bench

    seen = {}
    fake = {name: (lambda size, device, name=name, **kw: seen.setdefault(name, kw))
            for name in bench.BENCHMARKS}  # fmt: skip
    monkeypatch.setattr(bench, "BENCHMARKS", fake)
    run_benchmarks(device="cpu", only=["stage2_memory"], image=128, batch=16)
    assert seen["stage2_memory"] == {"threads": None, "extra": ("--image", "128", "--batch", "16")}
    run_benchmarks(device="cpu", only=["data_path"])
    assert seen["data_path"] == {"threads": None}
    with pytest.raises(ConfigError, match="--only stage2_memory"):
        run_benchmarks(device="cpu", only=["data_path"], image=128)


def test_gpu_check_runs_its_cpu_part(tmp_path):
    """The prepared GPU check at micro size on the CPU: every part runs and both files appear."""
    cmd = [sys.executable, "-m", "vidlat.benchmarks.gpu_check", "--device", "cpu", "--size",
           "micro", "--threads", "1", "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTEST_ADDOPTS": "-p no:cacheprovider"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(res["throughput"]) == 4  # 1 image size x (fp32, bf16) x (contiguous, channels_last)
    assert all(
        r["train_frames_per_s"] > 0 and r["encode_frames_per_s"] > 0 for r in res["throughput"]
    )
    assert res["tests"]["ran"] and res["tests"]["exit_code"] == 0  # skipped without CUDA: exit 0
    assert "end_to_end" in res["stage2"]["16"]["sides"]  # benchmark 1 at each image side
    assert res["stage2"]["16"]["params"]["image"] == 16
    assert "Stage-1 throughput" in (tmp_path / "gpu_check.md").read_text()
