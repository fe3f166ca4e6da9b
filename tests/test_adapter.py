"""LoRA runs (--adapter lora), half-precision runs (--save-dtype) and seas export-run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open

from seas.cli import main
from seas.config import GenerationConfig, TrainConfig
from seas.data.config import DataConfig
from seas.errors import ConfigError, RunError, SeasError
from seas.model.adapter import ADAPTER_DIR, ADAPTER_FILE
from seas.model.attention import AttentionCapture
from seas.run import Run
from seas.seeds import step_generator
from seas.training.export_run import export_run
from seas.training.stage1 import PromptTables, compute_losses, prepare_backbone, train_generator
from tests.conftest import stop_after_first_checkpoint, write_mask_head

pytest.importorskip("peft")


def _config(base, **kw) -> TrainConfig:
    values = dict(base=str(base), resolution=64, batch_size=1, grad_accum=1, steps=2)
    return TrainConfig(**(values | kw))


def _data(product64) -> DataConfig:
    return DataConfig(root=str(product64), layout="mvtec")


def _first_batch(cfg, product64, seed=0):
    """Backbone prepared by ``cfg``, its prompt tables and capture, and micro-batch 0."""
    from seas.data.readers import read_dataset
    from seas.data.split import few_shot_split
    from seas.data.training_set import TrainingSet, draw_batch

    dcfg = _data(product64)
    split = few_shot_split(read_dataset(dcfg), dcfg)
    bb, spec, new_ids = prepare_backbone(cfg, split.types)
    capture = AttentionCapture(bb.unet, ["down_blocks.1", "down_blocks.2"])
    batch = draw_batch(TrainingSet.from_split(split, 64, "half", False), seed, 0, cfg.batch_size, augment=False)
    return bb, PromptTables.build(bb.tokenizer, spec), capture, batch, new_ids


# ----------------------------------------------------------------------------- what trains


def test_lora_gradients_reach_exactly_the_adapters_and_the_ua_rows(tiny16, product64):
    cfg = _config(tiny16, adapter="lora", lora_rank=4, batch_size=2)
    bb, prompts, capture, batch, new_ids = _first_batch(cfg, product64)
    losses = compute_losses(bb, bb.unet, bb.text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, 0))
    losses["total"].backward()
    with_grad = {name for name, p in bb.unet.named_parameters() if p.grad is not None}
    lora = {name for name, _ in bb.unet.named_parameters() if "lora_" in name}
    assert lora and with_grad == lora  # every adapter weight, nothing of the base U-Net
    # B starts at zero, so A's first gradient is zero; B's is not
    assert any(bb.unet.get_parameter(n).grad.abs().sum() > 0 for n in lora if "lora_B" in n)
    assert all(p.grad is None for p in bb.vae.parameters())
    text_grads = [name for name, p in bb.text_encoder.named_parameters() if p.grad is not None]
    assert len(text_grads) == 1 and text_grads[0].endswith("embeddings.token_embedding.rows")
    rows = bb.text_encoder.get_input_embeddings()
    assert rows.ids.tolist() == new_ids and rows.rows.grad.shape == (len(new_ids), rows.frozen.shape[1])
    used = set(torch.cat([prompts.anomaly_ids[batch.anomaly_types].flatten(), prompts.normal_ids]).tolist())
    touched = {new_ids[i] for i in rows.rows.grad.abs().sum(dim=1).nonzero().flatten().tolist()}
    assert touched and touched <= used
    # the default target list adapts every attention projection of the U-Net
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in lora} == {"to_q", "to_k", "to_v", "0"}


def test_fresh_adapter_gives_the_losses_of_full_fine_tuning_at_step_0(tiny16, product64):
    """B = 0: the adapted U-Net and the token rows compute what the base does, so every loss term
    (L_an, L_NA, and L_DA through the captured maps) equals full fine-tuning's."""
    terms = {}
    for adapter in ("full", "lora"):
        cfg = _config(tiny16, adapter=adapter, lora_rank=8, batch_size=2)
        bb, prompts, capture, batch, _ = _first_batch(cfg, product64)
        terms[adapter] = compute_losses(bb, bb.unet, bb.text_encoder, capture, prompts, batch, cfg, "eq1",
                                        step_generator(0, 0))
    assert set(terms["full"]) == set(terms["lora"]) and len([k for k in terms["full"] if k.startswith("da")]) == 2
    for key, value in terms["full"].items():
        assert torch.allclose(value, terms["lora"][key], rtol=1e-6, atol=1e-7), key


# ----------------------------------------------------------------------------- runs


def _adapter_tensors(run):
    with safe_open(str(run / ADAPTER_DIR / ADAPTER_FILE), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


def test_lora_run_resumes_to_the_uninterrupted_adapter(tmp_path, tiny16, product64, monkeypatch):
    cfg = _config(tiny16, adapter="lora", lora_rank=4, steps=4, checkpoint_every=2, lr_unet=1e-3)
    train_generator(_data(product64), cfg, tmp_path / "full")
    stop_after_first_checkpoint(monkeypatch, lambda: train_generator(_data(product64), cfg, tmp_path / "cut"))
    train_generator(_data(product64), cfg, tmp_path / "cut", resume="latest")
    a, b = _adapter_tensors(tmp_path / "full"), _adapter_tensors(tmp_path / "cut")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("unet.") and "lora_B" in k and a[k].abs().sum() > 0 for k in a)  # it trained


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny16, product64):
    """A LoRA run (rank 4, 3 updates at a learning rate that moves it) on a private copy of the base,
    with a random mask head."""
    root = tmp_path_factory.mktemp("lora")
    base = shutil.copytree(tiny16, root / "base")
    cfg = _config(base, adapter="lora", lora_rank=4, steps=3, lr_unet=5e-2, lr_text=5e-2)
    return write_mask_head(train_generator(_data(product64), cfg, root / "run")), base


def test_lora_run_stores_the_adapter_and_refers_to_its_base(lora_run, tmp_path):
    run_dir, base = lora_run
    names = sorted(p.name for p in run_dir.iterdir())
    assert ADAPTER_DIR in names and "unet" not in names and "text_encoder" not in names and "vae" not in names
    run = Run.load(run_dir)
    assert run.base_weights["base"] == str(base.resolve())
    assert set(run.base_weights["weights"]) == {"unet", "text_encoder", "vae"}
    tensors = _adapter_tensors(run_dir)
    assert tensors["token_rows"].shape[0] == len(run.prompt.all_token_names) == tensors["token_ids"].numel()
    adapter_bytes = (run_dir / ADAPTER_DIR / ADAPTER_FILE).stat().st_size
    base_bytes = sum(p.stat().st_size for p in (base / "unet").iterdir())
    assert adapter_bytes < base_bytes / 4
    # the base is checked on load: an altered weight file is one line naming it
    weights = base / "unet" / "diffusion_pytorch_model.safetensors"
    saved = weights.read_bytes()
    weights.write_bytes(saved[:-8] + bytes(8))
    try:
        with pytest.raises(RunError, match="not the one its adapter was trained on.*unet/diffusion_pytorch_model"):
            Run.load(run_dir)
    finally:
        weights.write_bytes(saved)
    Run.load(run_dir)


def test_self_contained_lora_run_loads_without_its_base(tmp_path, tiny16, product64):
    base = shutil.copytree(tiny16, tmp_path / "base")
    cfg = _config(base, adapter="lora", lora_rank=4, self_contained=True, lr_unet=5e-2)
    run_dir = train_generator(_data(product64), cfg, tmp_path / "run")
    before = Run.load(run_dir).load_backbone().unet.state_dict()
    shutil.rmtree(base)
    after = Run.load(run_dir).load_backbone().unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert Run.load(run_dir).weights.keys() == {"base/unet", "base/text_encoder", "base/vae", ADAPTER_DIR}


def test_merged_and_unmerged_lora_generate_the_same_images(lora_run, tmp_path):
    """The run's U-Net with peft's separate low-rank branch, and the export with the branch folded
    into the weights: fp32 rounding apart, the same images and masks (tolerance: 1e-3 on pixels in
    [0, 1], masks identical)."""
    from seas.generation.pipeline import SeaSPipeline

    run_dir, _ = lora_run
    merged_dir = export_run(run_dir, tmp_path / "merged", merge=True)
    run = Run.load(run_dir)
    unmerged = SeaSPipeline(run, run.load_backbone(merge=False), run.load_mask_head())
    assert any("lora_" in name for name, _ in unmerged.unet.named_parameters())
    merged = SeaSPipeline.from_run(merged_dir)
    assert not any("lora_" in name for name, _ in merged.unet.named_parameters())
    cfg = GenerationConfig(steps=3, guidance=2.0)
    a = unmerged.generate("hole", [0, 1], cfg)
    b = merged.generate("hole", [0, 1], cfg)
    for x, y in zip(a, b):
        pixels_a, pixels_b = (np.asarray(o.image, dtype=np.float32) / 255 for o in (x, y))
        assert np.abs(pixels_a - pixels_b).max() <= 1e-3 + 1 / 255  # uint8 rounding on top
        assert np.array_equal(np.asarray(x.mask), np.asarray(y.mask))
    # and the adapter is not a no-op: the adapted U-Net differs from the base
    from seas.model.backbone import load_backbone

    base_unet = load_backbone(str(lora_run[1])).unet.state_dict()
    exported = merged.unet.state_dict()
    assert any(not torch.equal(base_unet[k], exported[k].to(base_unet[k].dtype)) for k in base_unet)


def test_export_merge_is_a_plain_diffusers_folder_and_a_run(lora_run, tmp_path):
    from diffusers import StableDiffusionPipeline

    run_dir, _ = lora_run
    out = export_run(run_dir, tmp_path / "plain", merge=True, save_dtype="fp16")
    pipe = StableDiffusionPipeline.from_pretrained(out, safety_checker=None)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    copy = Run.load(out)
    assert copy.train.adapter == "full" and copy.train.save_dtype == "fp16" and copy.has_mask_head
    assert copy.versions["exported_from"] == str(run_dir.resolve())


def test_export_refusals_write_nothing(lora_run, tiny_run, tmp_path):
    run_dir, _ = lora_run
    with pytest.raises(SeasError, match="add --merge"):
        export_run(run_dir, tmp_path / "a")
    with pytest.raises(SeasError, match="no adapter to merge"):
        export_run(tiny_run, tmp_path / "b", merge=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("mine")
    assert main(["export-run", "--run", str(run_dir), "--out", str(busy), "--merge"]) == 2
    with pytest.raises(SeasError, match="lies inside the run --run"):
        export_run(run_dir, run_dir / "inside", merge=True)
    assert not (run_dir / "inside").exists()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in busy.iterdir()) == ["x.txt"]


def test_lora_needs_peft_in_one_line(tmp_path, tiny16, product64, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    with pytest.raises(ConfigError, match="needs the peft package: pip install peft"):
        train_generator(_data(product64), _config(tiny16, adapter="lora"), tmp_path / "run")
    code = main(["train", "--data", str(product64), "--base", str(tiny16), "--resolution", "64", "--steps", "1",
                 "--adapter", "lora", "--out", str(tmp_path / "cli")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install peft" in err[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "cli").exists()


def test_lora_refuses_a_hub_base_it_cannot_refer_to(tmp_path, product64):
    with pytest.raises(Exception, match="--self-contained"):
        train_generator(_data(product64), _config("someone/some-model", adapter="lora"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="only for --adapter lora"):
        TrainConfig(self_contained=True)


def test_lora_targets_that_match_nothing_are_one_line(tmp_path, tiny16, product64):
    with pytest.raises(ConfigError, match="--lora-targets to_nothing: .*to_q, to_k, to_v and to_out.0"):
        train_generator(_data(product64), _config(tiny16, adapter="lora", lora_targets=["to_nothing"]), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_cli_options_reach_the_config(tmp_path, tiny16, product64, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(product64), "--base", str(tiny16), "--resolution", "64", "--steps", "1",
                 "--batch-size", "1", "--grad-accum", "1", "--adapter", "lora", "--lora-rank", "2",
                 "--lora-targets", "to_k", "to_v", "--lora-alpha", "4", "--save-dtype", "fp16", "--out", str(out)])
    assert code == 0
    run = Run.load(out)
    assert (run.train.adapter, run.train.lora_rank, run.train.lora_alpha) == ("lora", 2, 4.0)
    assert run.train.lora_targets == ["to_k", "to_v"] and run.train.save_dtype == "fp16"
    tensors = _adapter_tensors(out)
    lora = [k for k in tensors if k.startswith("unet.")]
    assert lora and all(".to_k." in k or ".to_v." in k for k in lora)
    assert all(tensors[k].dtype == torch.float16 for k in lora) and tensors["token_rows"].dtype == torch.float16
    assert all(tensors[k].shape[0] == 2 for k in lora if "lora_A" in k)


# ----------------------------------------------------------------------------- half-precision runs


def _weight_bytes(run) -> int:
    return sum(p.stat().st_size for part in ("unet", "text_encoder", "vae") for p in (run / part).glob("*.safetensors"))


def test_fp16_run_is_half_the_size_and_loads_as_is_or_cast(tmp_path, tiny16, product64):
    runs = {}
    for dtype in ("fp32", "fp16"):
        runs[dtype] = train_generator(_data(product64), _config(tiny16, save_dtype=dtype), tmp_path / dtype)
    ratio = _weight_bytes(runs["fp16"]) / _weight_bytes(runs["fp32"])
    assert 0.48 <= ratio <= 0.52
    half = Run.load(runs["fp16"])
    assert half.train.save_dtype == "fp16"
    with safe_open(str(runs["fp16"] / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert all(f.get_slice(k).get_dtype() == "F16" for k in f.keys())
    as_is = half.load_backbone(torch.float16)
    cast = half.load_backbone()  # generation's default precision: fp32
    assert as_is.unet.dtype == torch.float16 and cast.unet.dtype == torch.float32
    full = Run.load(runs["fp32"]).load_backbone().unet.state_dict()
    for key, value in cast.unet.state_dict().items():  # the same training, rounded once to fp16
        assert torch.equal(value, full[key].half().float()), key


def test_export_converts_a_full_run_and_keeps_its_mask_head(gen_run, tmp_path):
    out = export_run(gen_run, tmp_path / "half", save_dtype="fp16")
    copy, original = Run.load(out), Run.load(gen_run)
    assert copy.train.save_dtype == "fp16" and copy.mask_config() == original.mask_config()
    a, b = original.load_backbone().unet.state_dict(), copy.load_backbone().unet.state_dict()
    assert all(torch.equal(b[k], a[k].half().float()) for k in a)
    assert _weight_bytes(out) < 0.52 * _weight_bytes(gen_run)
    # it generates, with masks, and close to the fp32 run (the same seeds; only the rounding differs)
    from seas.generation.pipeline import SeaSPipeline

    cfg = GenerationConfig(steps=3, guidance=2.0)
    full = SeaSPipeline.from_run(gen_run).generate("scratch", [0, 1], cfg)
    half = SeaSPipeline.from_run(out).generate("scratch", [0, 1], cfg)
    for x, y in zip(full, half):
        assert y.mask is not None and y.mask.shape == x.mask.shape == (64, 64)
        assert np.abs(np.asarray(x.image, np.float32) - np.asarray(y.image, np.float32)).mean() < 2.0
        union = np.logical_or(x.mask, y.mask).sum()
        assert union == 0 or np.logical_and(x.mask, y.mask).sum() / union >= 0.9


def test_lora_under_half_precision_keeps_fp32_adapters_over_a_half_base(tiny16, product64, tmp_path):
    """--mixed-precision bf16 with --half-frozen (the fast / low-memory profiles on a GPU): the
    whole frozen base, U-Net included, is stored in bf16; the adapters and UA rows stay fp32 and
    train; the run finishes and its adapter is finite."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from seas.training.stage1 import prepare_training

    cfg = _config(tiny16, adapter="lora", lora_rank=4, mixed_precision="bf16", half_frozen=True, batch_size=2)
    bb, prompts, capture, batch, _ = _first_batch(cfg, product64)
    AcceleratorState._reset_state()
    accelerator = Accelerator(cpu=True, mixed_precision="bf16")
    unet, text_encoder, optimizer = prepare_training(bb, cfg, accelerator)
    dtypes = {name: p.dtype for name, p in bb.unet.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
    rows = bb.text_encoder.get_input_embeddings()
    assert rows.rows.dtype == torch.float32 and rows.frozen.dtype == torch.bfloat16
    before = rows.rows.detach().clone()
    with accelerator.autocast():
        losses = compute_losses(bb, unet, text_encoder, capture, prompts, batch, cfg, "eq1", step_generator(0, 0))
    accelerator.backward(losses["total"])
    optimizer.step()
    assert torch.isfinite(losses["total"]) and not torch.equal(before, rows.rows.detach())
    run = train_generator(_data(product64), _config(tiny16, adapter="lora", lora_rank=4, mixed_precision="bf16"),
                          tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in _adapter_tensors(run).values() if t.is_floating_point())
