"""The run folder (seas.run.Run): round trip, self-contained loading, damaged files, old formats."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from seas.cli import main
from seas.config import TrainConfig
from seas.data.config import DataConfig
from seas.errors import RunError
from seas.run import FORMAT, RUN_FILE, Run
from seas.training.stage1 import train_generator


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, tiny16, product64):
    """A finished stage-1 run over a private copy of the base model (deleted by a test)."""
    root = tmp_path_factory.mktemp("own")
    base = shutil.copytree(tiny16, root / "base")
    cfg = TrainConfig(base=str(base), resolution=64, batch_size=1, grad_accum=1, steps=1)
    return train_generator(DataConfig(root=str(product64), layout="mvtec"), cfg, root / "run"), base


def test_round_trip_of_the_record(own_run):
    run_dir, base = own_run
    run = Run.load(run_dir)
    again = Run(path=run.path, base=run.base, data=run.data, train=run.train, prompt=run.prompt, split=run.split,
                versions=run.versions, weights=run.weights)
    assert again.to_dict() == run.to_dict()
    record = json.loads((run_dir / RUN_FILE).read_text())
    assert record["format"] == FORMAT and record == run.to_dict()
    # each fact is stored once: the split in split.json, no copies of the types or guidance
    assert set(record) == {"format", "base", "data", "train", "prompt", "versions", "weights"}
    assert json.loads((run_dir / "split.json").read_text()) == run.split.to_dict()
    assert run.types == ["hole", "scratch", "stain"] == record["prompt"]["types"]
    assert run.guidance == 8.0 and run.mask_rule == "half" and run.resolution == 64
    assert run.base == str(base) and set(run.weights) == {"unet", "text_encoder", "vae"}


def test_a_run_is_a_self_contained_diffusers_folder(own_run):
    from diffusers import StableDiffusionPipeline

    run_dir, base = own_run
    assert {"model_index.json", "unet", "text_encoder", "tokenizer", "scheduler", "vae"} <= {
        p.name for p in run_dir.iterdir()}
    expected = Run.load(run_dir).load_backbone().vae.state_dict()
    shutil.rmtree(base)  # the base is gone: the run still loads, VAE included
    bb = Run.load(run_dir).load_backbone()
    assert all(torch.equal(expected[k], v) for k, v in bb.vae.state_dict().items())
    pipe = StableDiffusionPipeline.from_pretrained(run_dir, safety_checker=None, requires_safety_checker=False)
    assert pipe.unet.config.sample_size == bb.unet.config.sample_size


def test_a_damaged_weight_file_is_one_line(tmp_path, tiny_run, capsys):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    weights = next((run_dir / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RunError, match="unet/diffusion_pytorch_model.safetensors: damaged"):
        Run.load(run_dir)
    assert main(["generate", "--run", str(run_dir), "--type", "hole", "--num", "1", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "damaged" in err and "safetensors" in err
    assert not (tmp_path / "g").exists()


def test_records_of_other_versions_are_refused_in_one_line(tmp_path, tiny_run):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("checkpoints"))
    record = json.loads((run_dir / RUN_FILE).read_text())
    (run_dir / RUN_FILE).write_text(json.dumps({**record, "format": "seas-run-1"}))
    with pytest.raises(RunError, match="seas-run-1.*retrain it with 'seas train'"):
        Run.load(run_dir)
    (run_dir / RUN_FILE).write_text(json.dumps({**record, "train": {**record["train"], "colour": "red"}}))
    with pytest.raises(RunError, match="unknown key train.colour"):
        Run.load(run_dir)
