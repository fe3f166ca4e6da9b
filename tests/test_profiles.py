"""Memory/speed profiles of training: what each profile switches on, that explicit options win,
and that the switches keep training correct (same gradients with checkpointing, half-precision
frozen parts, fp32 exports)."""

from __future__ import annotations

import json

import pytest
import torch

from seas import profiles
from seas.cli import build_parser, main
from seas.cli.train import mask_config, train_config
from seas.config import GenerationSwitches, TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import read_dataset
from seas.data.split import few_shot_split
from seas.data.training_set import TrainingSet, draw_batch
from seas.errors import ConfigError
from seas.model.attention import AttentionCapture
from seas.seeds import step_generator
from seas.training.setup import make_accelerator
from seas.training.stage1 import PromptTables, compute_losses, prepare_backbone, prepare_training, train_generator
from tests.conftest import stop_after_first_checkpoint

# ----------------------------------------------------------------------------- switches


@pytest.mark.parametrize("bnb", [True, False])
def test_train_switches_of_each_profile(monkeypatch, bnb):
    monkeypatch.setattr(profiles, "has_bitsandbytes", lambda: bnb)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    fp32 = {"mixed_precision": "no", "half_frozen": True, "gradient_checkpointing": False, "optimizer": "adamw"}
    assert profiles.train_switches("default", device="cpu") == fp32
    assert profiles.train_switches("default", device="cuda") == fp32
    # fast: half precision on GPUs; fp32 on CPUs, where bf16 autocast measured slower
    assert profiles.train_switches("fast", device="cpu") == fp32
    assert profiles.train_switches("fast", device="cuda") == {**fp32, "mixed_precision": "bf16"}
    low = {"mixed_precision": "bf16", "half_frozen": True, "gradient_checkpointing": True,
           "optimizer": "adamw8bit" if bnb else "adamw"}
    assert profiles.train_switches("low-memory", device="cpu") == low
    assert profiles.train_switches("low-memory", device="cuda") == low
    # stage 2 trains only the head: precision switches alone
    assert profiles.train_switches("low-memory", "mask", device="cpu") == {"mixed_precision": "bf16", "half_frozen": True}
    with pytest.raises(ConfigError, match="--profile huge: choose one of default, fast, low-memory"):
        profiles.train_switches("huge")


def test_generation_switches_of_each_profile():
    assert profiles.generation_switches("default", "cuda") == GenerationSwitches()
    assert profiles.generation_switches("fast", "cuda") == GenerationSwitches(profile="fast", dtype="float16")
    assert profiles.generation_switches("fast", "cpu") == GenerationSwitches(profile="fast")
    assert profiles.generation_switches("low-memory", "cpu") == GenerationSwitches(
        profile="low-memory", dtype="bfloat16", vae_slicing=True, vae_tiling=True)
    assert profiles.generation_switches("low-memory", "cuda").torch_dtype == torch.float16


def test_gpu_without_bf16_falls_back_to_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert profiles.autocast_precision("cuda") == "fp16"
    assert profiles.autocast_precision("cpu") == "bf16"
    assert profiles.half_dtype("cuda") == torch.float16 and profiles.half_dtype("cpu") == torch.bfloat16


def _train_args(*extra: str):
    return build_parser().parse_args(["train", "--data", "d", "--out", "o", *extra])


def test_profile_sets_config_and_explicit_options_win(monkeypatch):
    monkeypatch.setattr(profiles, "has_bitsandbytes", lambda: True)
    cfg = train_config(_train_args("--profile", "low-memory"))
    assert (cfg.profile, cfg.mixed_precision, cfg.half_frozen, cfg.gradient_checkpointing, cfg.optimizer) == (
        "low-memory", "bf16", True, True, "adamw8bit")
    cfg = train_config(_train_args("--profile", "low-memory", "--no-gradient-checkpointing", "--optimizer", "adamw",
                                   "--mixed-precision", "fp16", "--no-half-frozen"))
    assert (cfg.mixed_precision, cfg.half_frozen, cfg.gradient_checkpointing, cfg.optimizer) == ("fp16", False, False, "adamw")
    cfg = train_config(_train_args())  # no profile: the reference's fp32 numerics
    assert (cfg.profile, cfg.mixed_precision, cfg.gradient_checkpointing, cfg.optimizer) == ("default", "no", False, "adamw")
    mask = mask_config(build_parser().parse_args(["train-mask", "--run", "r", "--profile", "low-memory"]))
    assert (mask.profile, mask.mixed_precision, mask.half_frozen) == ("low-memory", "bf16", True)


def test_low_memory_without_bitsandbytes_says_it_falls_back(monkeypatch, capsys):
    monkeypatch.setattr(profiles, "has_bitsandbytes", lambda: False)
    assert train_config(_train_args("--profile", "low-memory")).optimizer == "adamw"
    assert "8-bit AdamW only with bitsandbytes installed" in capsys.readouterr().err
    train_config(_train_args("--profile", "low-memory", "--optimizer", "adamw"))  # chosen: no note
    assert capsys.readouterr().err == ""


def test_unknown_profile_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", "d", "--out", "o", "--profile", "tiny"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tiny'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- training under the switches


def _one_batch(tiny16, product64, **cfg_values):
    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=2, **cfg_values)
    dcfg = DataConfig(root=str(product64), layout="mvtec")
    split = few_shot_split(read_dataset(dcfg), dcfg)
    bb, spec, _ = prepare_backbone(cfg, split.types)
    batch = draw_batch(TrainingSet.from_split(split, 64, "half", False), 0, 0, 2, augment=False)
    return cfg, bb, PromptTables.build(bb.tokenizer, spec), batch


@pytest.mark.parametrize("weights", [{}, {"weight_an": 0.0, "weight_na": 0.0}], ids=["all-terms", "da-only"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny16, product64, weights):
    """Recomputed blocks must redo the capture too: L_DA's gradient through the maps survives."""
    grads = {}
    for checkpointing in (False, True):
        cfg, bb, prompts, batch = _one_batch(tiny16, product64, gradient_checkpointing=checkpointing, **weights)
        assert bb.unet.is_gradient_checkpointing == checkpointing
        bb.unet.train()
        capture = AttentionCapture(bb.unet, ["down_blocks.1", "down_blocks.2"])
        losses = compute_losses(bb, bb.unet, bb.text_encoder, capture, prompts, batch, cfg, "eq1",
                                step_generator(0, 0))
        losses["total"].backward()
        grads[checkpointing] = {n: p.grad.clone() for n, p in bb.unet.named_parameters() if p.grad is not None}
        grads[checkpointing]["token_embedding"] = bb.text_encoder.get_input_embeddings().weight.grad.clone()
    assert grads[True].keys() == grads[False].keys()
    q = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.weight"
    assert grads[False][q].abs().sum() > 0
    for name, grad in grads[False].items():
        torch.testing.assert_close(grads[True][name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_half_frozen_stores_frozen_parts_in_half_and_trains(tiny16, product64, tmp_path):
    cfg, bb, prompts, batch = _one_batch(tiny16, product64, mixed_precision="bf16", half_frozen=True)
    accelerator = make_accelerator(tmp_path, "bf16")
    unet, text_encoder, optimizer = prepare_training(bb, cfg, accelerator)
    token_embedding = bb.text_encoder.get_input_embeddings().weight
    assert bb.vae.dtype == torch.bfloat16
    frozen = {n: p.dtype for n, p in bb.text_encoder.named_parameters() if p is not token_embedding}
    assert set(frozen.values()) == {torch.bfloat16}
    assert token_embedding.dtype == torch.float32 and bb.unet.dtype == torch.float32  # fp32 masters
    before = token_embedding.detach().clone()
    capture = AttentionCapture(bb.unet, ["down_blocks.1", "down_blocks.2"])
    losses = compute_losses(bb, unet, text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, 0))
    assert all(torch.isfinite(v) for v in losses.values())
    accelerator.backward(losses["total"])
    assert token_embedding.grad is not None and token_embedding.grad.dtype == torch.float32
    optimizer.step()
    used = prompts.anomaly_ids[batch.anomaly_types].flatten()
    assert not torch.equal(token_embedding.detach()[used], before[used])


def test_without_half_frozen_the_frozen_parts_stay_fp32(tiny16, product64, tmp_path):
    cfg, bb, _, _ = _one_batch(tiny16, product64, mixed_precision="bf16", half_frozen=False)
    prepare_training(bb, cfg, make_accelerator(tmp_path, "bf16"))
    assert bb.vae.dtype == torch.float32
    assert {p.dtype for p in bb.text_encoder.parameters()} == {torch.float32}


def test_low_memory_run_records_its_switches_and_exports_fp32(tmp_path, tiny16, product64, monkeypatch, capsys):
    monkeypatch.setattr(profiles, "has_bitsandbytes", lambda: False)  # AdamW: the 8-bit path is make_optimizer's
    args = ["train", "--data", str(product64), "--base", str(tiny16), "--out", str(tmp_path / "run"),
            "--resolution", "64", "--batch-size", "1", "--grad-accum", "1", "--steps", "2", "--profile", "low-memory"]
    assert main(args) == 0
    meta = json.loads((tmp_path / "run" / "seas_run.json").read_text())["train"]
    assert (meta["profile"], meta["mixed_precision"], meta["half_frozen"], meta["gradient_checkpointing"]) == (
        "low-memory", "bf16", True, True)
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel.from_pretrained(tmp_path / "run" / "text_encoder")
    assert {p.dtype for p in text_encoder.parameters()} == {torch.float32}
    assert all(torch.isfinite(p).all() for p in text_encoder.parameters())
    # resuming with another profile is refused, naming the switches that differ
    state = tmp_path / "run" / "generator-state.json"
    assert state.is_file()
    (tmp_path / "run" / "seas_run.json").unlink()  # pretend it stopped before exporting
    assert main([*args[:-1], "default", "--resume", "latest"]) == 2
    error = capsys.readouterr().err
    assert "--profile was low-memory, now default" in error and "--gradient-checkpointing was True, now False" in error


def test_mask_stage_under_the_low_memory_profile(tmp_path, tiny16, product64):
    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=1)
    run = train_generator(DataConfig(root=str(product64), layout="mvtec"), cfg, tmp_path / "run")
    assert main(["train-mask", "--run", str(run), "--steps", "2", "--batch-size", "1", "--profile", "low-memory"]) == 0
    from seas.run import Run

    config = Run.load(run).mask_config()
    assert (config.profile, config.mixed_precision, config.half_frozen) == ("low-memory", "bf16", True)
    head = Run.load(run).load_mask_head()
    assert head.dtype == torch.float32 and all(torch.isfinite(p).all() for p in head.parameters())


def test_stages_of_one_process_may_use_different_precisions(tmp_path):
    """accelerate keeps one precision per process; each stage's accelerator sets its own."""
    assert make_accelerator(tmp_path, "no").mixed_precision == "no"
    assert make_accelerator(tmp_path, "bf16").mixed_precision == "bf16"
    assert make_accelerator(tmp_path, "no").mixed_precision == "no"


def test_low_memory_run_with_8bit_adamw_resumes_to_the_same_weights(tmp_path, tiny16, product64, monkeypatch):
    """Every low-memory switch at once (bf16, half frozen parts, checkpointing, 8-bit AdamW):
    a run stopped after a checkpoint and resumed ends with the weights of an uninterrupted one,
    so the 8-bit optimizer states and the half-precision parts survive the checkpoint."""
    pytest.importorskip("bitsandbytes")
    switches = profiles.train_switches("low-memory", device="cpu")
    assert switches["optimizer"] == "adamw8bit"
    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=4, checkpoint_every=2,
                      profile="low-memory", **switches)
    dcfg = DataConfig(root=str(product64), layout="mvtec")
    full = train_generator(dcfg, cfg, tmp_path / "full")

    stop_after_first_checkpoint(monkeypatch, lambda: train_generator(dcfg, cfg, tmp_path / "cut"))
    cut = train_generator(dcfg, cfg, tmp_path / "cut", resume="latest")

    from diffusers import UNet2DConditionModel

    unet_full = UNet2DConditionModel.from_pretrained(full / "unet").state_dict()
    unet_cut = UNet2DConditionModel.from_pretrained(cut / "unet").state_dict()
    base = UNet2DConditionModel.from_pretrained(tiny16 / "unet").state_dict()
    assert any(not torch.equal(unet_full[k], base[k]) for k in base)  # it trained
    assert all(torch.equal(unet_full[k], unet_cut[k]) for k in unet_full)
