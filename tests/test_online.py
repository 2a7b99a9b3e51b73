"""train-predictor --source online: DRNET's re-encode-every-step baseline trains the very predictor
the store does, resumes, is accepted by generate, and its CLI misuses are one-line errors."""

from __future__ import annotations

import pytest
import torch
from helpers import exact_rows
from typer.testing import CliRunner

from vidlat.cli.app import app
from vidlat.errors import ConfigError
from vidlat.pipeline.generate import GenerateConfig, generate
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.stages.load import load_run
from vidlat.stages.training.online import OnlineLatents
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore

TINY = {"past": 3, "future": 4, "steps": 4, "batch_size": 4, "hidden": 8, "layers": 1,
        "device": "cpu", "log_every": 1, "val_every": 2, "checkpoint_every": 2}  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    # tiny LSTMs and convs run fastest, and steadiest, on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    set_quiet(True)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tiny_videos, tiny_ae, tmp_path_factory):
    set_quiet(True)
    out = tmp_path_factory.mktemp("online") / "lat.zarr"
    return LatentStore.open(encode(tiny_videos, tiny_ae, out, EncodeConfig(device="cpu")))


def weights(run) -> dict[str, torch.Tensor]:
    return load_run(run, "predictor")[0].state_dict()


def losses(run) -> list[dict]:
    return exact_rows(run / "metrics.jsonl")  # timing keys differ run to run


def test_online_trains_the_same_predictor_as_the_store(store, tiny_videos, tiny_ae, tmp_path):
    from_store = train_predictor(store, TrainPredictorConfig(**TINY), tmp_path / "store")
    online = OnlineLatents(tiny_videos, tiny_ae, "cpu", encode_batch=5)  # batches unlike encode's
    cfg = TrainPredictorConfig(**TINY, source="online")
    from_pixels = train_predictor(online, cfg, tmp_path / "online")
    # same seed, same windows (the samplers draw alike), latents equal to float precision
    a, b = weights(from_store), weights(from_pixels)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
    rows_a, rows_b = losses(from_store), losses(from_pixels)
    assert [r.keys() for r in rows_a] == [r.keys() for r in rows_b]  # train and val rows alike
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert rb == pytest.approx(ra, rel=1e-5, abs=1e-7)
    meta = load_run(from_pixels, "predictor")[1]
    assert meta["encoder_hash"] == store.encoder_hash == weights_hash(tiny_ae)
    assert meta["config"]["source"] == "online"


def test_online_run_resumes_exactly(tiny_videos, tiny_ae, tmp_path):
    online = OnlineLatents(tiny_videos, tiny_ae, "cpu")
    whole = train_predictor(online, TrainPredictorConfig(**TINY, source="online"), tmp_path / "a")
    half = TrainPredictorConfig(**{**TINY, "steps": 2}, source="online")
    train_predictor(online, half, tmp_path / "b")
    resumed = train_predictor(
        online, TrainPredictorConfig(**TINY, source="online"), tmp_path / "b", resume=True
    )
    a, b = weights(whole), weights(resumed)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=name)


def test_a_source_unlike_the_data_given_is_refused(store, tmp_path):
    with pytest.raises(ConfigError, match="source 'online' trains on videos and an encoder"):
        train_predictor(store, TrainPredictorConfig(**TINY, source="online"), tmp_path / "x")


def run(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_online_run_feeds_generate(tiny_videos, tiny_ae, tmp_path):
    pred = tmp_path / "pred"
    flags = ["--past", 3, "--future", 4, "--steps", 2, "--batch-size", 4, "--device", "cpu"]
    result = run("train-predictor", "--source", "online", "--data", tiny_videos, "--ae", tiny_ae,
                 "--out", pred, "--kind", "lstm", *flags, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "source: online" in (pred / "config.yaml").read_text()
    gen = tmp_path / "gen"
    metrics = generate(tiny_ae, pred, tiny_videos, GenerateConfig(videos="0:2", device="cpu"), gen)
    assert metrics["past"] == 3 and metrics["future"] == 4 and (gen / "grid.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--source", "online"), "--source online needs --data and --ae"),
        (("--source", "online", "--data", "{videos}"), "--source online needs --data and --ae"),
        (("--source", "online", "--data", "{videos}", "--ae", "{ae}", "--latents", "l.zarr"),
         "drop --latents"),
        ((), "--source store needs --latents"),
        (("--latents", "l.zarr", "--ae", "{ae}"), "--data and --ae go with --source online"),
    ],
)  # fmt: skip
def test_cli_source_mistakes_are_one_line_errors(tiny_videos, tiny_ae, tmp_path, args, message):
    args = [str(a).format(videos=tiny_videos, ae=tiny_ae) for a in args]
    result = run("train-predictor", *args, "--out", tmp_path / "pred")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "pred").exists()
