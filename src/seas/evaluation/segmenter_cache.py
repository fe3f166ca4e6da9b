"""The real-only segmenter, trained once per run and settings, reused by later evaluations.

Every ``seas evaluate`` trains a ``real_only`` segmenter (the real training third + the normal
training images) as the yardstick for the generated pairs and as the reader of their masks. It
depends only on the run's real data and the segmenter's settings, not on the generated folder,
so evaluating a second generated folder of the same run (another placement, QC, checkpoint)
would train the same model again. This keeps it in ``<run>/segmenters/real_only-<key>.safetensors``.

The key is a SHA-256 over everything the trained weights depend on: the training settings
(device type included: a CUDA model is not bit-identical to a CPU one), the exact training
arrays at the training resolution, the source of the training code and the torch version. A
file that cannot be read or does not fit is trained again and replaced; a run folder that
cannot be written to still evaluates (the model is just not kept).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from seas.evaluation import downstream, segmenters
from seas.evaluation.downstream import (
    DownstreamConfig,
    Pair,
    build_untrained,
    prepare_pairs,
    resolve_device,
    train_segmenter,
)
from seas.evaluation.segmenters import Segmenter
from seas.files.atomic import write_file
from seas.run import RunFolder

UNKEYED = ("device", "eval_batch_size", "progress")  # settings that do not change the weights


def segmenter_key(pairs: Sequence[Pair], cfg: DownstreamConfig) -> str:
    """Hex SHA-256 of what the trained segmenter depends on (see the module docstring)."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in UNKEYED}
    settings["device_type"] = resolve_device(cfg.device).type
    settings["torch"] = torch.__version__
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for module in (downstream, segmenters):  # a changed recipe is a different model
        digest.update(Path(module.__file__).read_bytes())
    # exactly what train_segmenter trains on: (N, 3, S, S) uint8 images, (N, S, S) bool masks
    images, masks = prepare_pairs(pairs, cfg.size)
    digest.update(images.numpy().tobytes())
    digest.update(np.packbits(masks.numpy()).tobytes())
    return digest.hexdigest()


def cached_segmenter(pairs: Sequence[Pair], cfg: DownstreamConfig, run_dir: Path | None,
                     name: str = "real_only") -> tuple[Segmenter, bool]:
    """``(model, reused)``: the segmenter ``train_segmenter(pairs, cfg)`` returns, read from
    ``<run_dir>/segmenters`` when an earlier evaluation kept it (``reused``), otherwise trained
    and kept there. ``run_dir=None`` trains without keeping."""
    if run_dir is None:
        return train_segmenter(pairs, cfg, desc=name), False
    path = RunFolder(run_dir).segmenters / f"{name}-{segmenter_key(pairs, cfg)[:32]}.safetensors"
    device = resolve_device(cfg.device)
    if path.is_file():
        model = build_untrained(cfg)
        try:
            load_model(model, str(path), device="cpu")
            return model.to(device).eval(), True
        except (OSError, RuntimeError, ValueError, SafetensorError) as err:
            print(f"{path}: not usable ({err}); training the {name} segmenter again", file=sys.stderr)
    model = train_segmenter(pairs, cfg, desc=name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, lambda tmp: save_model(model, str(tmp)))
    except OSError as err:  # a read-only run folder: evaluate anyway
        print(f"{path}: not written ({err}); the {name} segmenter will be trained again next time",
              file=sys.stderr)
    return model, False
