"""Stage 2: the per-sample DDPM step, what trains, resume, and the exported head."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import DDPMScheduler

from seas.config import MaskConfig
from seas.errors import ConfigError, RunError
from seas.model.backbone import SD_SCHEDULER_CONFIG
from seas.run import Run
from seas.training.stage2 import ddpm_step, low_noise_limit, train_mask_head
from tests.conftest import stop_after_first_checkpoint


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
    head = Run.load(full).load_mask_head()
    assert not head.training  # eval mode: BatchNorm statistics fixed (reference defect 6)

    cut = _copy_run(tiny_run, tmp_path / "cut")
    stop_after_first_checkpoint(monkeypatch, lambda: train_mask_head(cut, cfg))
    with pytest.raises(RunError, match="no trained mask head"):
        Run.load(cut).load_mask_head()
    train_mask_head(cut, cfg, resume="latest")
    a, b = Run.load(full).load_mask_head().state_dict(), Run.load(cut).load_mask_head().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the head moved away from its initialisation; a finished head is not overwritten silently
    torch.manual_seed(cfg.seed)
    from seas.training.stage2 import build_head

    init = build_head(Run.load(full).load_backbone()).state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a if a[k].is_floating_point())
    with pytest.raises(RunError, match="finished mask run"):
        train_mask_head(full, cfg)


def test_only_the_head_gets_gradients(tiny_run):
    from seas.data.training_set import TrainingSet, draw_batch
    from seas.model.features import FeatureRecorder
    from seas.model.prompts import tokenize
    from seas.training.stage2 import build_head, mask_step

    run = Run.load(tiny_run)
    bb = run.load_backbone()
    head = build_head(bb)
    batch = draw_batch(TrainingSet.from_split(run.split, 64, "half", False), 0, 0, 2, augment=False)
    prompts = [run.prompt.anomaly_prompt(k) for k in run.types] + [run.prompt.normal_prompt()]
    with torch.no_grad():
        text = bb.text_encoder(tokenize(bb.tokenizer, prompts))[0]
    with FeatureRecorder(bb.unet, bb.vae) as recorder:
        loss = mask_step(bb, head, recorder, text, batch, 1000, MaskConfig(), False, torch.Generator().manual_seed(0),
                         torch.float32)
    loss["total"].backward()
    assert torch.isfinite(loss["total"])
    # every parameter but the reference's never-called conv6 of each MRM
    assert all((p.grad is not None) != (".conv6." in name) for name, p in head.named_parameters())
    assert all(p.grad is None for m in (bb.unet, bb.vae, bb.text_encoder) for p in m.parameters())


def test_train_mask_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="an empty folder, not a SeaS run; train one into it with 'seas train --out"):
        train_mask_head(tmp_path, MaskConfig(steps=1))
    assert list(tmp_path.iterdir()) == []
