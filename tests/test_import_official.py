"""``seas import-official``: a generator folder and an ``rmp`` state dict written by the authors'
code become a run folder that generation reads; bad inputs are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seas.cli import main
from seas.config import GenerationConfig
from seas.model.backbone import build_tiny_components
from seas.model.features import unet_feature_channels, vae_feature_channels
from seas.model.prompts import PromptSpec, add_placeholder_tokens
from seas.model.rmp import ReferenceMaskHead, head_config_for, to_reference_state_dict
from seas.run import Run

TYPES = ["stain", "hole", "scratch"]  # not sorted: the authors' order is kept


@pytest.fixture(autouse=True, scope="module")
def quiet_loading():
    """As in a fresh ``seas`` process (the CLI sets HF_HUB_DISABLE_PROGRESS_BARS before the
    libraries load; here an earlier test already imported them): no weight-loading bars."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    yield
    if enabled:
        logging.enable_progress_bar()


@pytest.fixture(scope="module")
def official(tiny16, tmp_path_factory):
    """The authors' outputs: ``gen/`` (unet, text_encoder, tokenizer) and ``rmp``, plus the head."""
    root = tmp_path_factory.mktemp("official")
    parts = build_tiny_components(seed=1, width=16)  # other weights than the base
    add_placeholder_tokens(parts["tokenizer"], parts["text_encoder"], PromptSpec(TYPES))
    for name in ("unet", "text_encoder", "tokenizer"):
        parts[name].save_pretrained(root / "gen" / name)
    torch.manual_seed(0)
    config = head_config_for(unet_feature_channels(parts["unet"]), vae_feature_channels(parts["vae"]))
    head = ReferenceMaskHead(**config)
    for module in head.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    state = to_reference_state_dict(head)
    torch.save(state, root / "rmp")
    return {"gen": root / "gen", "rmp": root / "rmp", "unet": parts["unet"], "head": head.eval(), "state": state,
            "root": root}


def argv(official, base, data, out, rmp=None, types=TYPES) -> list[str]:
    return ["import-official", "--generator", str(official["gen"]), "--rmp", str(rmp or official["rmp"]),
            "--types", ",".join(types), "--base", str(base), "--data", str(data), "--resolution", "64",
            "--out", str(out)]


@pytest.fixture(scope="module")
def imported(official, tiny16, product64, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "run"
    assert main(argv(official, tiny16, product64, out)) == 0
    return out


def test_import_writes_a_complete_run(imported, official, tiny16):
    run = Run.load(imported)  # checks every weight file against the record
    assert run.types == TYPES
    assert run.prompt.type_token_names("stain") == ["sks1", "sks2", "sks3", "sks4"]
    assert run.prompt.type_token_names("scratch") == ["sks9", "sks10", "sks11", "sks12"]
    assert sorted(run.split.types) == sorted(TYPES) and run.references
    assert run.resolution == 64 and run.train.base == str(tiny16)
    assert run.versions["imported_from"]["rmp"] == str(official["rmp"].resolve())
    assert run.mask_config().to_dict() and run.mask_record()["steps"] == 0

    bb = run.load_backbone()
    source = official["unet"].state_dict()
    for key, value in bb.unet.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert bb.tokenizer.convert_tokens_to_ids("sks12") == len(bb.tokenizer) - 1
    assert (imported / "vae").is_dir() and (Path(tiny16) / "vae" / "config.json").read_text() == \
        (imported / "vae" / "config.json").read_text()


def test_imported_head_predicts_as_the_original(imported, official):
    head = Run.load(imported).load_mask_head()
    original = official["head"]
    torch.manual_seed(3)
    unet_feats = [torch.randn(2, 64, 4, 4), torch.randn(2, 32, 8, 8)]
    vae_feats = [torch.randn(2, 32, 16, 16), torch.randn(2, 32, 32, 32), torch.randn(2, 32, 64, 64)]
    with torch.no_grad():
        expected = original(unet_feats, vae_feats, with_coarse=True)
        got = head(unet_feats, vae_feats, with_coarse=True)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_imported_run_generates(imported, tmp_path):
    from seas.generation.folder import generate_to_folder

    out = generate_to_folder(imported, tmp_path / "g", ["hole"], GenerationConfig(num=1, steps=2),
                             device="cpu", progress=False)
    assert (out / "hole" / "image" / "000.png").is_file()
    assert (out / "hole" / "mask" / "000.png").is_file()


def _bad_rmp(official, name: str, edit) -> Path:
    state = dict(official["state"])
    edit(state)
    path = official["root"] / name
    torch.save(state, path)
    return path


def _first_key(official) -> str:
    return next(iter(official["state"]))


@pytest.mark.parametrize("case", ["missing", "extra", "shape"])
def test_bad_rmp_is_refused_and_nothing_written(case, official, tiny16, product64, tmp_path, capsys):
    key = _first_key(official)
    edits = {
        "missing": lambda s: s.pop(key),
        "extra": lambda s: s.__setitem__("MRM4.conv1.0.weight", torch.zeros(1)),
        "shape": lambda s: s.__setitem__(key, torch.zeros(3, 3)),
    }
    rmp = _bad_rmp(official, f"rmp-{case}", edits[case])
    out = tmp_path / "out"
    assert main(argv(official, tiny16, product64, out, rmp=rmp)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert (key if case != "extra" else "MRM4.conv1.0.weight") in err
    assert not out.exists()


def test_types_not_in_dataset_refused(official, tiny16, product64, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(argv(official, tiny16, product64, out, types=["stain", "hole", "crack"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crack" in err
    assert not out.exists()


def test_wrong_number_of_types_refused(official, tiny16, product64, tmp_path, capsys):
    data = tmp_path / "data2"
    from seas.data.synthetic import write_synthetic_product

    product = write_synthetic_product(data, product="tile", seed=0, size=64, n_train_good=2, n_test_good=1,
                                      n_per_type=3, types=("hole", "stain"))
    out = tmp_path / "out"
    assert main(argv(official, tiny16, product, out, types=["stain", "hole"])) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "12 anomaly tokens" in err and "3 types" in err
    assert not out.exists()


def test_non_empty_out_refused(official, tiny16, product64, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "note.txt").write_text("mine")
    assert main(argv(official, tiny16, product64, out)) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["note.txt"]


def test_generator_scheduler_is_kept(official, tiny16, product64, tmp_path):
    """A scheduler/ in the authors' folder (theirs is PNDM's config) is read as the DDPM schedule."""
    import shutil

    from diffusers import PNDMScheduler

    gen = tmp_path / "gen"
    shutil.copytree(official["gen"], gen)
    PNDMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02).save_pretrained(gen / "scheduler")
    out = tmp_path / "out"
    assert main(argv(dict(official, gen=gen), tiny16, product64, out)) == 0
    scheduler = Run.load(out).load_backbone().scheduler
    assert type(scheduler).__name__ == "DDPMScheduler" and scheduler.config.beta_schedule == "linear"
