"""The real-only segmenter kept in ``<run>/segmenters``: reused only when nothing it depends on changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seas.evaluation import segmenter_cache
from seas.evaluation.downstream import DownstreamConfig, predict, train_segmenter
from seas.evaluation.segmenter_cache import cached_segmenter, segmenter_key
from seas.run import SEGMENTERS

SIZE = 32


def _pairs(seed: int = 0) -> list:
    """Four noisy images, two with a bright square (mask) and two normal (None)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(4):
        image = rng.integers(0, 120, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = None
        if i < 2:
            mask = np.zeros((SIZE, SIZE), bool)
            mask[8:16, 10:20] = True
            image[mask] = 250
        pairs.append((image, mask))
    return pairs


def _cfg(**kw) -> DownstreamConfig:
    return DownstreamConfig(**{**dict(segmenter="unet", size=SIZE, steps=3, batch_size=2, width=0.25, seed=0,
                                      device="cpu", progress=False), **kw})


def _state(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_second_call_reads_the_same_model_and_trains_nothing(tmp_path, monkeypatch):
    pairs, cfg = _pairs(), _cfg()
    first, reused = cached_segmenter(pairs, cfg, tmp_path)
    assert not reused
    kept = list((tmp_path / SEGMENTERS).iterdir())
    assert [p.name for p in kept] == [f"real_only-{segmenter_key(pairs, cfg)[:32]}.safetensors"]

    def no_training(*args, **kwargs):
        raise AssertionError("trained although a kept model fits")

    monkeypatch.setattr(segmenter_cache, "train_segmenter", no_training)
    second, reused = cached_segmenter(pairs, cfg, tmp_path)
    assert reused and not second.training
    a, b = _state(first), _state(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # batch-norm statistics included
    images = [image for image, _ in _pairs(seed=5)]
    assert np.array_equal(predict(first, images, SIZE), predict(second, images, SIZE))
    # and it is the model a fresh training gives: the cache changes no number
    monkeypatch.undo()
    fresh = _state(train_segmenter(pairs, cfg))
    assert all(torch.equal(a[k], fresh[k]) for k in a)


def test_key_follows_every_input_of_the_weights_and_nothing_else():
    pairs, cfg = _pairs(), _cfg()
    key = segmenter_key(pairs, cfg)
    assert segmenter_key(_pairs(), _cfg()) == key  # deterministic
    # settings that do not change the weights
    assert segmenter_key(pairs, _cfg(progress=True, eval_batch_size=1)) == key
    # settings that do
    for change in (dict(steps=4), dict(seed=1), dict(width=0.5), dict(lr=2e-3), dict(size=SIZE // 2),
                   dict(segmenter="bisenetv2")):
        assert segmenter_key(pairs, _cfg(**change)) != key, change
    one_pixel = [(image.copy(), mask) for image, mask in pairs]
    one_pixel[3][0][0, 0, 0] ^= 1
    assert segmenter_key(one_pixel, cfg) != key
    moved_mask = [(image, None if mask is None else np.roll(mask, 1, axis=1)) for image, mask in pairs]
    assert segmenter_key(moved_mask, cfg) != key
    assert segmenter_key(pairs[:3], cfg) != key


def test_damaged_file_is_trained_again_and_replaced(tmp_path, capsys):
    pairs, cfg = _pairs(), _cfg()
    model, _ = cached_segmenter(pairs, cfg, tmp_path)
    (path,) = (tmp_path / SEGMENTERS).iterdir()
    path.write_bytes(b"not a safetensors file")
    again, reused = cached_segmenter(pairs, cfg, tmp_path)
    assert not reused and "not usable" in capsys.readouterr().err
    assert all(torch.equal(a, b) for a, b in zip(_state(model).values(), _state(again).values()))
    assert cached_segmenter(pairs, cfg, tmp_path)[1]  # the replaced file is read next time


def test_run_folder_that_cannot_be_written_still_gives_the_model(tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.mkdir()
    (blocker / SEGMENTERS).write_text("a file where the folder should be")
    model, reused = cached_segmenter(_pairs(), _cfg(), blocker)
    assert not reused and isinstance(model, torch.nn.Module)
    assert "not written" in capsys.readouterr().err
    assert (blocker / SEGMENTERS).read_text() == "a file where the folder should be"


def test_no_run_folder_trains_without_keeping(tmp_path):
    model, reused = cached_segmenter(_pairs(), _cfg(), None)
    assert not reused and not any(tmp_path.iterdir())
