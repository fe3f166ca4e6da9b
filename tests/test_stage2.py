"""Stage 2: the per-sample DDPM step, what trains, resume, and the exported head."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import DDPMScheduler

from seas.backbone import SD_SCHEDULER_CONFIG
from seas.config import MaskConfig
from seas.errors import ConfigError, RunError
from seas.run import load_mask_head
from seas.training import common
from seas.training.stage2 import ddpm_step, low_noise_limit, train_mask_head


def test_ddpm_step_matches_diffusers_per_sample():
    scheduler = DDPMScheduler(**SD_SCHEDULER_CONFIG)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 3, 3, generator=g)
    eps = torch.randn(4, 4, 3, 3, generator=g)
    t = torch.tensor([0, 1, 500, 999])
    for i in range(4):
        ours = ddpm_step(scheduler, eps[i : i + 1], t[i : i + 1], x[i : i + 1], torch.Generator().manual_seed(7))
        ref = scheduler.step(eps[i : i + 1], int(t[i]), x[i : i + 1], generator=torch.Generator().manual_seed(7)).prev_sample
        assert torch.allclose(ours, ref, atol=1e-5), int(t[i])
    # batched: the noise-free sample (t = 0) is the same as alone
    batched = ddpm_step(scheduler, eps, t, x, torch.Generator().manual_seed(7))
    alone = scheduler.step(eps[:1], 0, x[:1]).prev_sample
    assert torch.allclose(batched[:1], alone, atol=1e-5)


def test_low_noise_range_is_last_sampling_steps():
    config = DDPMScheduler(**SD_SCHEDULER_CONFIG).config
    assert low_noise_limit(config, 25, 3) == 120  # linspace over 0..999 in 25 steps: ..., 120, 80, 40
    assert low_noise_limit(config, 10, 1) == 100
    with pytest.raises(ConfigError, match="--timesteps"):
        MaskConfig(timesteps="some")


def _copy_run(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "mask*"))
    return dst


def test_mask_head_trains_resumes_and_exports(tmp_path, tiny_run, monkeypatch):
    cfg = MaskConfig(steps=4, batch_size=1, checkpoint_every=2, keep_checkpoints=3, timesteps="low")
    full = train_mask_head(_copy_run(tiny_run, tmp_path / "full"), cfg)
    head = load_mask_head(full)
    assert not head.training  # eval mode: BatchNorm statistics fixed (reference defect 6)

    cut = _copy_run(tiny_run, tmp_path / "cut")
    real_save = common.save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_mask_head(cut, cfg)
    monkeypatch.setattr(common, "save_checkpoint", real_save)
    with pytest.raises(RunError, match="no trained mask head"):
        load_mask_head(cut)
    train_mask_head(cut, cfg, resume="latest")
    a, b = load_mask_head(full).state_dict(), load_mask_head(cut).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the head moved away from its initialisation; a finished head is not overwritten silently
    torch.manual_seed(cfg.seed)
    from seas.run import load_run
    from seas.training.stage2 import build_head

    init = build_head(load_run(full)).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(RunError, match="finished mask run"):
        train_mask_head(full, cfg)


def test_only_the_head_gets_gradients(tiny_run):
    from seas.data.split import Split
    from seas.data.training_set import TrainingSet, draw_batch
    from seas.features import FeatureRecorder
    from seas.prompts import tokenize
    from seas.run import load_run
    from seas.training.stage2 import build_head, mask_step

    run = load_run(tiny_run)
    bb = run.backbone
    head = build_head(run)
    split = Split.from_dict(run.meta["split"])
    batch = draw_batch(TrainingSet.from_split(split, 64, "half", False), 0, 0, 2, augment=False)
    prompts = [run.prompts.anomaly_prompt(k) for k in run.types] + [run.prompts.normal_prompt()]
    with torch.no_grad():
        text = bb.text_encoder(tokenize(bb.tokenizer, prompts))[0]
    with FeatureRecorder(bb.unet, bb.vae) as recorder:
        loss = mask_step(bb, head, recorder, text, batch, 1000, 2.0, torch.Generator().manual_seed(0), torch.float32)
    loss["total"].backward()
    assert torch.isfinite(loss["total"])
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for m in (bb.unet, bb.vae, bb.text_encoder) for p in m.parameters())


def test_train_mask_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="not a finished SeaS run"):
        train_mask_head(tmp_path, MaskConfig(steps=1))
    assert list(tmp_path.iterdir()) == []
