"""A dataset's geometry (``fit``) and colour (``channels``): defect pixels kept on non-square
images, the same frame on every path an image takes into a model or a metric, grey in and grey
out (docs/DATA.md, "Geometry" and "Channels")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_mask_head
from PIL import Image

from seas.cli import main
from seas.config import GenerationConfig, TrainConfig
from seas.data.config import FITS, DataConfig
from seas.data.readers import read_dataset
from seas.data.split import few_shot_split
from seas.data.training_set import TrainingSet, split_channels
from seas.data.transforms import (
    fit_array,
    fit_frame,
    image_to_tensor,
    is_grey_image,
    kept_defect_share,
    kept_defect_table,
    mask_to_tensor,
    resolve_channels,
    sample_arrays,
    sample_tensors,
)
from seas.errors import ConfigError
from seas.model.prompts import PromptSpec
from seas.run import Run

WIDE, TALL = (96, 48), (48, 96)  # (width, height)
STRIP = 6  # the defect: a strip this wide along the far end of the longer side


def smooth_image(size: tuple[int, int], seed: int = 0, grey: bool = False) -> np.ndarray:
    """A smooth (H, W, 3) uint8 image: gradients and a few soft blobs (resampling kernels agree
    on it to a few grey levels, unlike on noise)."""
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = []
    for c in range(1 if grey else 3):
        value = 60 + 100 * x / w + 60 * y / h
        for _ in range(3):
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(6, 14)
            value += 40 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)) * (1 + c)
        channels.append(value)
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    return np.repeat(pixels, 3, axis=-1) if grey else pixels


def border_mask(size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: a strip at the far end of the longer side, where ``crop`` cuts."""
    w, h = size
    mask = np.zeros((h, w), dtype=bool)
    if w >= h:
        mask[h // 4 : 3 * h // 4, w - STRIP :] = True
    else:
        mask[h - STRIP :, w // 4 : 3 * w // 4] = True
    return mask


def write_product(root: Path, sizes=(WIDE, TALL), grey: bool = False, n_per_type: int = 3,
                  n_good: int = 4) -> Path:
    """An MVTec-layout product ``part`` of non-square images (wide and tall in turn), masks at
    the border; one-channel PNGs when ``grey``."""
    base = root / "part"

    def save(path: Path, pixels: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[..., 0] if grey and pixels.ndim == 3 else pixels).save(path)

    for i in range(n_good):
        save(base / "train" / "good" / f"{i:03d}.png", smooth_image(sizes[i % len(sizes)], seed=i, grey=grey))
    save(base / "test" / "good" / "000.png", smooth_image(sizes[0], seed=50, grey=grey))
    for kind in ("chip", "crack"):
        for i in range(n_per_type):
            size = sizes[i % len(sizes)]
            save(base / "test" / kind / f"{i:03d}.png", smooth_image(size, seed=100 + i, grey=grey))
            save(base / "ground_truth" / kind / f"{i:03d}_mask.png", border_mask(size).astype(np.uint8) * 255)
    return root


# ----------------------------------------------------------------------------- the frames


@pytest.mark.parametrize("size", [WIDE, TALL], ids=["wide", "tall"])
def test_default_keeps_border_defects_and_crop_loses_them(size, tmp_path):
    mask = border_mask(size)
    key = tmp_path / "part" / "test" / "chip" / "000.png"
    default = DataConfig(root=str(tmp_path)).fit
    assert default == "defect-crop"
    assert kept_defect_share(mask, 64, default, key) == 1.0
    assert kept_defect_share(mask, 64, "pad", key) == kept_defect_share(mask, 64, "stretch", key) == 1.0
    assert kept_defect_share(mask, 64, "crop", key) == 0.0  # the reference drops it: the rule matters
    # ... and so do the tensors the model sees
    Image.fromarray(smooth_image(size)).save(image := tmp_path / "image.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_file := tmp_path / "mask.png")
    kept = {fit: sample_tensors(image, mask_file, 64, fit, binarize=True)[1].sum().item() for fit in FITS}
    assert kept["crop"] == 0
    assert kept["defect-crop"] > 0 and kept["pad"] > 0 and kept["stretch"] > 0
    # defect-crop keeps the scale of crop: the strip is as wide in pixels as crop would make it
    assert kept["defect-crop"] == pytest.approx(mask.sum() * (64 / min(size)) ** 2, rel=0.2)


def test_defect_crop_window_is_seeded_by_the_sample_and_holds_the_mask():
    mask = np.zeros((40, 120), dtype=bool)
    mask[5:30, 50:60] = True  # windows of 40 starting at 20..50 hold it
    starts = {fit_frame((120, 40), "defect-crop", mask, f"a/b/{i}.png").box[0] for i in range(40)}
    assert starts <= set(range(20, 51)) and len(starts) > 5  # random among those that hold it
    assert fit_frame((120, 40), "defect-crop", mask, "a/b/1.png") == fit_frame((120, 40), "defect-crop", mask,
                                                                               "/elsewhere/a/b/1.png")
    # a defect longer than the window: the window that keeps the most of it (here: the bigger blob)
    split = np.zeros((40, 120), dtype=bool)
    split[:, 0:10] = True
    split[:, 100:120] = True
    assert fit_frame((120, 40), "defect-crop", split).box == (80, 0, 120, 40)
    assert 0 < kept_defect_share(split, 64, "defect-crop") < 1
    # a normal image: a window among all of them, also seeded by its path
    assert fit_frame((120, 40), "defect-crop", None, "n/1.png") == fit_frame((120, 40), "defect-crop", None, "n/1.png")
    with pytest.raises(ConfigError, match="choose one of"):
        fit_frame((120, 40), "letterbox")


def test_square_images_are_the_same_under_every_fit():
    rgb = smooth_image((50, 50))
    mask = border_mask((50, 50))
    reference_image, reference_mask = image_to_tensor(rgb, 32), mask_to_tensor(mask, 32)
    for fit in FITS:
        frame = fit_frame((50, 50), fit, mask, "x.png")
        assert torch.equal(image_to_tensor(rgb, 32, frame), reference_image), fit
        assert torch.equal(mask_to_tensor(mask, 32, frame=frame), reference_mask), fit


def test_pad_letterboxes_with_a_neutral_fill():
    rgb = smooth_image(WIDE)
    frame = fit_frame(WIDE, "pad")
    square = fit_array(rgb, frame)
    assert square.shape == (96, 96, 3) and frame.pad == (0, 24, 0, 24)
    assert (square[24:72] == rgb).all()
    fill = np.median(np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]), axis=0)
    assert np.abs(square[0, 0].astype(float) - fill).max() <= 0.5 and (square[:24] == square[0, 0]).all()
    assert not fit_array(border_mask(WIDE), frame)[:24].any()  # masks padded with 0


def test_an_older_description_keeps_crop_and_rgb(tmp_path):
    values = DataConfig(root=str(tmp_path)).to_dict()
    assert (values["fit"], values["channels"]) == ("defect-crop", "auto")
    del values["fit"], values["channels"], values["train_per_type"]  # a record from before these fields
    old = DataConfig.from_dict(values)
    assert (old.fit, old.channels) == ("crop", "rgb")
    partial = DataConfig.from_dict({"root": str(tmp_path), "layout": "mvtec"})  # a new description
    assert (partial.fit, partial.channels) == ("defect-crop", "auto")
    with pytest.raises(ConfigError, match="choose one of"):
        DataConfig.from_dict({"root": str(tmp_path), "fit": "zoom"})


# ----------------------------------------------------------------------------- one frame everywhere


def _run_record(root: Path, tmp_path: Path, fit: str) -> tuple[Run, DataConfig]:
    data = DataConfig(root=str(root), layout="mvtec", product="part", fit=fit)
    split = few_shot_split(read_dataset(data), data)
    return Run(path=tmp_path / "run", base="tiny", data=data, train=TrainConfig(base="tiny", resolution=64),
               prompt=PromptSpec(types=split.types, tokens_per_type=1), split=split), data


@pytest.mark.parametrize("fit", ["defect-crop", "pad"])
def test_training_generation_localisation_and_evaluation_read_the_same_frame(fit, tmp_path, tiny16):
    from seas.evaluation.inputs import load_real
    from seas.evaluation.localisation import _inputs
    from seas.generation.pipeline import SeaSPipeline
    from seas.model.backbone import load_backbone

    root = write_product(tmp_path / "data")
    run, data = _run_record(root, tmp_path, fit)
    split = run.split
    anomalies = [s for kind in split.types for s in split.train[kind]]
    training = TrainingSet.from_split(split, 64, data.mask_rule, binarize=True, fit=data.fit, channels=data.channels)

    # localisation evidence: the same tensors as training
    images, masks = _inputs(run, anomalies, 64)
    assert torch.equal(images, training.anomaly_images)
    assert torch.equal(masks, training.anomaly_masks[:, 0])
    assert masks.flatten(1).sum(1).min() > 0  # every border defect kept

    # generation's start latents: the latent of the training tensor of that normal image
    pipe = SeaSPipeline(run, load_backbone(str(tiny16)))
    with torch.no_grad():
        expected = pipe.vae.encode(training.normal_images[1:2]).latent_dist.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(pipe.reference_latent(1), expected)

    # the downstream evaluation: the same region, resized with its own kernels
    pairs = load_real(anomalies, 64, run)
    for (image, mask), tensor, soft in zip(pairs, training.anomaly_images, training.anomaly_masks):
        pixels = ((tensor.permute(1, 2, 0).numpy() + 1) * 127.5).round()
        assert image.shape == (64, 64, 3) and np.abs(image - pixels).mean() < 4
        truth = soft[0].numpy() > 0.5
        assert (mask == truth).mean() > 0.97 and mask.any()
    # ... while the old stretch would not match (the rule reaches the metric)
    stretched = np.asarray(Image.fromarray(smooth_image(WIDE, seed=100)).resize((64, 64), Image.BICUBIC))
    assert fit == "pad" or np.abs(pairs[0][0].astype(float) - stretched).mean() > 4


def test_sample_arrays_cut_the_frame_of_sample_tensors(tmp_path):
    root = write_product(tmp_path / "data", n_per_type=1, n_good=1)
    image = root / "part" / "test" / "chip" / "000.png"
    mask = root / "part" / "ground_truth" / "chip" / "000_mask.png"
    for fit in FITS:
        array, cut = sample_arrays(image, mask, fit)
        assert array.shape[:2] == cut.shape
        if fit != "stretch":
            assert array.shape[0] == array.shape[1]
        assert cut.any() == (fit != "crop")


# ----------------------------------------------------------------------------- channels


def test_grey_detection(tmp_path):
    Image.fromarray(smooth_image(WIDE, grey=True)[..., 0]).save(one := tmp_path / "one.png")
    Image.fromarray(smooth_image(WIDE, grey=True)).save(equal := tmp_path / "equal.png")  # RGB with R = G = B
    Image.fromarray(smooth_image(WIDE)).save(colour := tmp_path / "colour.png")
    assert is_grey_image(one) and is_grey_image(equal) and not is_grey_image(colour)
    assert resolve_channels("auto", [one, equal]) == "grey"
    assert resolve_channels("auto", [one, colour]) == "rgb"
    assert resolve_channels("rgb", [one]) == "rgb" and resolve_channels("grey", [colour]) == "grey"
    grey, _ = sample_tensors(colour, None, 32, "crop", grey=True)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_grey_product_generates_grey_images(tmp_path, tiny16):
    from seas.generation.folder import generate_to_folder
    from seas.training.stage1 import train_generator

    root = write_product(tmp_path / "data", grey=True, n_per_type=1, n_good=2)
    data = DataConfig(root=str(root), layout="mvtec", product="part")
    assert split_channels(data.channels, few_shot_split(read_dataset(data), data)) == "grey"
    run = train_generator(data, TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=1),
                          tmp_path / "run")
    write_mask_head(run)
    out = generate_to_folder(run, tmp_path / "gen", ["good", "chip"], GenerationConfig(num=1, steps=2),
                             progress=False, device="cpu")
    for path in (out / "good" / "image" / "000.png", out / "chip" / "image" / "000.png"):
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (64, 64)


def test_colour_product_stays_rgb(gen_run):
    from seas.generation.pipeline import SeaSPipeline

    pipe = SeaSPipeline.from_run(gen_run, with_masks=False)
    assert not pipe.grey
    assert pipe.generate("good", [0], steps=1)[0].image.mode == "RGB"


# ----------------------------------------------------------------------------- seas data


def test_kept_defect_table_and_seas_data_report(tmp_path, capsys):
    root = write_product(tmp_path / "data")
    data = DataConfig(root=str(root), layout="mvtec", product="part")
    table = dict(kept_defect_table(read_dataset(data), data.mask_rule, resolution=64))
    assert set(table) == {"chip", "crack"}
    for counts in table.values():  # (whole, in part, not at all) of 3 masks, share of defect pixels kept
        assert counts["crop"] == (0, 0, 3, 0.0)
        assert counts["stretch"] == counts["pad"] == counts["defect-crop"] == (3, 0, 0, 1.0)
    assert main(["data", "--data", str(root), "--product", "part"]) == 0
    out = capsys.readouterr().out
    assert "fit defect-crop" in out and "channels auto (rgb)" in out
    header = next(line for line in out.splitlines() if line.split()[:5] == ["type", *FITS])
    rows = out.splitlines()[out.splitlines().index(header) + 1 :]
    assert rows[0].split() == ["chip", "0/0/3", "0%", "3/0/0", "100%", "3/0/0", "100%", "3/0/0", "100%"]
