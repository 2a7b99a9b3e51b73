"""What a training run reports: metrics.jsonl rows with wall time, learning rate and throughput,
plain lines without a TTY, a bar that never cuts its count or ETA, TensorBoard event files."""

from __future__ import annotations

import io
import json

import pytest
from conftest import tiny_ae_config
from rich.console import Console

from vidlat import progress
from vidlat.progress import PlainBar, progress_bar
from vidlat.stages.training.train_ae import train_ae
from vidlat.store.videos import open_videos


def test_rows_carry_time_lr_and_throughput_and_plain_lines_go_to_stderr(
    tiny_videos, tmp_path, capsys
):
    progress.set_quiet(False)
    try:
        cfg = tiny_ae_config(steps=4, log_every=2, sample_every=2, val_every=0, tensorboard=False)
        out = train_ae(open_videos(tiny_videos), cfg, tmp_path / "run")
    finally:
        progress.set_quiet(True)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert r["lr_model"] == 0.002 and r["samples_per_s"] > 0 and r["time"] > 1.7e9
    assert not (out / "tensorboard").exists()  # tensorboard: false
    # pytest's capture is not a TTY: one plain line per log_every steps, with count and ETA
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("train-ae")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("train-ae 2/4 steps  elapsed 0:00:") and "eta" in lines[0]
    assert "loss" in lines[0] and "samples_per_s" not in lines[0]


def test_plain_bar_prints_tenths():
    stream = io.StringIO()
    bar = PlainBar("encode", 100, "frames", stream=stream)
    for _ in range(100):
        bar.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("encode 100/100 frames")


@pytest.mark.parametrize("width", [80, 100])
def test_bar_keeps_count_and_eta_whole_on_narrow_terminals(width):
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    progress.set_quiet(False)
    try:
        with progress_bar("train-predictor", 100000, "steps", console=console) as bar:
            bar.advance(18734)
            bar.note("loss 0.01234  pose 0.002345  val_future_mse 0.01234  val_copy_mse 0.5")
    finally:
        progress.set_quiet(True)
    last = buf.getvalue().split("\x1b[2K")[-1]
    assert "18734/100000" in last and "steps" in last
    assert "…" in last  # the note is what gets cut
    eta = last.split("steps", 1)[1].split()[1]
    assert len(eta) == 7 and eta.count(":") == 2, last  # H:MM:SS (or -:--:--), never "0:0…"


def test_tensorboard_event_files_hold_the_scalars(tiny_videos, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (in dev) writes events")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_ae_config(steps=4, log_every=2, sample_every=4, val_every=0)
    out = train_ae(open_videos(tiny_videos), cfg, tmp_path / "run")
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/rec", "lr/lr_model", "perf/samples_per_s"} <= set(tags["scalars"])
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in rows]
    assert tags["images"] == ["samples"]


def test_train_ae_logs_a_validation_loss_on_held_out_frames(tiny_videos, tmp_path):
    cfg = tiny_ae_config(steps=4, log_every=2, val_every=2, val_videos=2, tensorboard=False)
    out = train_ae(open_videos(tiny_videos), cfg, tmp_path / "run")
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_rec" in r]  # same-frame reconstruction of the val videos
    assert [r["step"] for r in val] == [2, 4]
    assert all(0 < r["val_rec"] < 1 for r in val)
