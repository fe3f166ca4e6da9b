"""Stage-1 losses (spec section 4): L_an, L_NA and the Decoupled Anomaly Alignment L_DA.

L_DA at one resolution r, over the anomaly half of the batch (n samples):
    A_an = mean of the maps of the type's N anomaly tokens       (n, h, w)
    A_ob = map of the normal token ob1                           (n, h, w)
    both min-max normalised to [0, 1] (jointly over all n samples, or per sample), with eps
    M_r  = mask bilinearly resized to the latent size, then 2x2 max-pooled down to (h, w)
    L_DA^r = mean_all (A_an - M_r)^2 + mean_{inside} (A_ob - (1 - M_r))^2
where "inside" is M_r == 1 ("eq1", MVTec AD) or M_r > 0 ("gt0", VisA, MVTec 3D AD); with no
pixel inside, the second term is 0 (the reference returns NaN there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NORMALIZE_MODES = ("joint", "sample")


def minmax(maps: torch.Tensor, mode: str = "joint", eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise (n, h, w) maps to [0, 1]; ``joint``: one min/max over all of them."""
    if mode == "joint":
        lo, hi = maps.min(), maps.max()
    elif mode == "sample":
        flat = maps.flatten(1)
        lo = flat.min(dim=1).values[:, None, None]
        hi = flat.max(dim=1).values[:, None, None]
    else:
        raise ValueError(f"normalisation {mode!r}: choose one of {NORMALIZE_MODES}")
    return (maps - lo) / (hi - lo + eps)


def mask_pyramid(masks: torch.Tensor, latent_size: tuple[int, int], levels: list[int]) -> dict[int, torch.Tensor]:
    """(n, 1, H, W) masks in [0, 1] -> {level: (n, h, w)}, level L = latent size / 2^L.

    Bilinear resize to the latent size, then L successive 2x2 max-pools (soft borders kept).
    """
    at_latent = F.interpolate(masks.float(), size=latent_size, mode="bilinear", align_corners=False)
    pyramid, current, level = {}, at_latent, 0
    for target in sorted(levels):
        while level < target:
            current = F.max_pool2d(current, kernel_size=2, stride=2)
            level += 1
        pyramid[target] = current[:, 0]
    return pyramid


def inside_region(mask: torch.Tensor, rule: str) -> torch.Tensor:
    if rule == "eq1":
        return mask == 1.0
    if rule == "gt0":
        return mask > 0.0
    raise ValueError(f"inside rule {rule!r}: choose eq1 or gt0")


def da_loss(
    anomaly_maps: torch.Tensor,
    normal_map: torch.Tensor,
    mask: torch.Tensor,
    inside_rule: str = "eq1",
    normalize: str = "joint",
    eps: float = 1e-8,
) -> torch.Tensor:
    """L_DA at one resolution.

    anomaly_maps: (n, N, h, w) maps of the N anomaly tokens; normal_map: (n, h, w) map of ob1;
    mask: (n, h, w) ground truth at this resolution, values in [0, 1].
    """
    a_an = minmax(anomaly_maps.mean(dim=1), normalize, eps)
    a_ob = minmax(normal_map, normalize, eps)
    anomaly_term = ((a_an - mask) ** 2).mean()
    inside = inside_region(mask, inside_rule)
    if inside.any():
        normal_term = ((a_ob - (1.0 - mask))[inside] ** 2).mean()
    else:
        normal_term = a_ob.sum() * 0.0  # keeps the graph, contributes nothing
    return anomaly_term + normal_term


def diffusion_loss(eps_pred: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """MSE between predicted and true noise, mean over every element (L_an or L_NA)."""
    return F.mse_loss(eps_pred.float(), eps.float(), reduction="mean")


def soft_focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on soft targets (stage 2's ``targets="soft"`` variant; not the reference's).

    ``probs (N, 2, H, W)`` class probabilities, ``target (N, H, W)`` anomaly values in [0, 1]:
    per pixel ``-sum_c y_c (1 - p_c) ** gamma * log p_c`` with ``y = (1 - target, target)``, so a
    soft border pixel (0.6) pulls towards 0.6 instead of counting as normal; probabilities are
    clamped to [1e-5, 1] before the log. Mean over pixels.
    """
    p = probs.float().clamp(1e-5, 1.0)
    y = torch.stack([1.0 - target.float(), target.float()], dim=1)
    return (-y * (1.0 - p) ** gamma * p.log()).sum(dim=1).mean()
