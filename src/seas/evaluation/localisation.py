"""Evidence that a run learned where defects are, measured on held-out real images.

* Attention localisation: each held-out anomaly image is encoded, lightly noised (timestep
  ``t``), and passed through the fine-tuned U-Net with its type's prompt; the anomaly tokens'
  cross-attention maps of the L_DA blocks (the same capture the loss uses) are averaged,
  min-max normalised per image, resized to the image, and scored against the true mask
  (pixel AUROC / AP over all pixels of the anomalous test images).
* Mask-head localisation: the RMP head's anomaly probability on real test images (anomalous
  and normal), computed exactly as in its training step at a low-noise timestep, scored with
  every segmentation metric.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seas.data.readers import Sample
from seas.data.training_set import split_channels
from seas.data.transforms import sample_tensors
from seas.evaluation.metrics import all_metrics, average_precision, roc_auc
from seas.model.attention import AttentionCapture, da_levels
from seas.model.features import FeatureRecorder
from seas.model.losses import minmax
from seas.model.prompts import PromptTables, tokenize
from seas.model.schedule import ddpm_step
from seas.run import Run
from seas.seeds import step_generator


def _inputs(run: Run, samples: list[Sample], resolution: int):
    """Images (N, 3, R, R) in [-1, 1] and binary masks (N, R, R) (empty for normals), read as
    training reads them (the run's ``fit`` and ``channels``)."""
    data = run.data
    grey = split_channels(data.channels, run.split) == "grey"
    pairs = [sample_tensors(s.image, s.mask, resolution, data.fit, data.mask_rule, grey, binarize=True)
             for s in samples]
    images = torch.stack([image for image, _ in pairs])
    masks = torch.stack([mask[0] if mask is not None else torch.zeros(resolution, resolution) for _, mask in pairs])
    return images, masks


def _noised_latents(bb, images: torch.Tensor, t: int, seed: int):
    with torch.no_grad():
        latents = bb.vae.encode(images).latent_dist.mean * bb.vae.config.scaling_factor
    g = step_generator(seed, t)
    noise = torch.randn(latents.shape, generator=g)
    timesteps = torch.full((len(latents),), t, dtype=torch.long)
    return bb.scheduler.add_noise(latents, noise, timesteps), timesteps


def attention_localisation(run: Run, bb, samples: list[Sample], t: int = 100, seed: int = 0,
                           batch_size: int = 8) -> dict:
    """Pixel AUROC and AP of the normalised anomaly-token maps on anomalous ``samples``
    (``bb``: the run's backbone, :meth:`Run.load_backbone`)."""
    anomalies = [s for s in samples if not s.is_normal]
    cfg = run.train
    prompts = PromptTables.build(bb.tokenizer, run.prompt)
    levels = da_levels(bb.unet, cfg.da_blocks, cfg.da_with_up_blocks)
    capture = AttentionCapture(bb.unet, sorted({b for group in levels.values() for b in group}), cfg.attention_softmax)
    scores, truths = [], []
    try:
        for start in range(0, len(anomalies), batch_size):
            chunk = anomalies[start : start + batch_size]
            images, masks = _inputs(run, chunk, cfg.resolution)
            noisy, timesteps = _noised_latents(bb, images, t, seed + start)
            types = torch.tensor([run.types.index(s.type) for s in chunk])
            capture.store.target(torch.arange(len(chunk)), prompts.columns[types])
            with torch.no_grad():
                bb.unet(noisy, timesteps, bb.text_encoder(prompts.anomaly_ids[types])[0])
            per_level = []
            for level, blocks in levels.items():
                maps = torch.stack([capture.store.block_mean(b) for b in blocks]).mean(dim=0)  # (n, hw, M+N)
                side = noisy.shape[-1] >> level
                anomaly_map = maps[..., prompts.n_normal :].mean(dim=-1).view(len(chunk), side, side)
                anomaly_map = minmax(anomaly_map, "sample")
                per_level.append(F.interpolate(anomaly_map[:, None], size=masks.shape[-2:], mode="bilinear")[:, 0])
            scores.append(torch.stack(per_level).mean(dim=0).numpy())
            truths.append(masks.numpy() > 0.5)
    finally:
        capture.remove()
    score, truth = np.concatenate(scores), np.concatenate(truths)
    return {"attention_pixel_auroc": roc_auc(truth, score), "attention_pixel_ap": average_precision(truth, score),
            "images": len(anomalies), "timestep": t}


def mask_head_localisation(run: Run, bb, head, samples: list[Sample], t: int = 40, seed: int = 0,
                           batch_size: int = 8) -> dict:
    """Every segmentation metric of the RMP head's probability (eval mode) on real test ``samples``."""
    cfg = run.train
    prompts = [run.prompt.anomaly_prompt(kind) for kind in run.types] + [run.prompt.normal_prompt()]
    with torch.no_grad():
        text = bb.text_encoder(tokenize(bb.tokenizer, prompts))[0]
    probs, truths = [], []
    with FeatureRecorder(bb.unet, bb.vae) as recorder, torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            images, masks = _inputs(run, chunk, cfg.resolution)
            noisy, timesteps = _noised_latents(bb, images, t, seed + start)
            index = torch.tensor([run.types.index(s.type) if not s.is_normal else len(run.types) for s in chunk])
            eps = bb.unet(noisy, timesteps, text[index]).sample
            previous = ddpm_step(bb.scheduler, eps, timesteps, noisy, step_generator(seed, 1, start))
            bb.vae.decode(previous / bb.vae.config.scaling_factor)
            probs.append(head.predict_proba(recorder.unet_features, recorder.vae_features).numpy())
            truths.append(masks.numpy() > 0.5)
    metrics = all_metrics(np.concatenate(probs), np.concatenate(truths))
    return {f"mask_head_{k}": v for k, v in metrics.items()} | {"images": len(samples), "timestep": t}
