"""Shared fixtures: small image writers and tiny datasets in each real on-disk layout.

Every dataset fixture returns a builder ``make(...) -> Path`` that writes a fresh dataset under
the test's ``tmp_path`` and returns the folder to pass to ``--data``.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def pytest_configure(config):
    """One intra-op thread for the whole suite: the tiny models' small kernels gain nothing
    from more, and several threads stall badly when the machine is busy."""
    torch.set_num_threads(1)


SIZE = (24, 16)  # (width, height): small and not square
BOX = (4, 4, 12, 10)  # defect box (x0, y0, x1, y1) of the masks the builders write


def write_image(path: Path, size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    """An RGB noise image; the format follows the suffix (.png, .jpg, .JPG, ...)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = SIZE, value: int = 255, box=BOX) -> Path:
    """A one-channel 8-bit PNG mask: ``value`` inside ``box`` (none when None), 0 elsewhere."""
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        pixels[y0:y1, x0:x1] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def fresh_dir(tmp_path):
    """A new, empty folder under tmp_path on every call: fresh_dir("mvtec") -> .../mvtec-0."""
    counter = itertools.count()

    def make(name: str) -> Path:
        folder = tmp_path / f"{name}-{next(counter)}"
        folder.mkdir()
        return folder

    return make


@pytest.fixture
def make_mvtec(fresh_dir):
    """MVTec AD: <product>/train/good, test/<type>, ground_truth/<type>/<stem>_mask.png.

    ``types`` maps each anomaly type to its number of images (also used for the VisA data
    already re-split into this layout).
    """

    def make(types=None, n_train: int = 5, n_test_good: int = 2, product: str = "bottle") -> Path:
        root = fresh_dir("mvtec")
        types = {"broken": 4, "crack": 2} if types is None else types
        base = root / product
        for i in range(n_train):
            write_image(base / "train" / "good" / f"{i:03d}.png", seed=i)
        for i in range(n_test_good):
            write_image(base / "test" / "good" / f"{i:03d}.png", seed=100 + i)
        for kind, n in types.items():
            for i in range(n):
                write_image(base / "test" / kind / f"{i:03d}.png", seed=200 + i)
                write_mask(base / "ground_truth" / kind / f"{i:03d}_mask.png")
        return root

    return make


@pytest.fixture
def make_mvtec3d(fresh_dir):
    """MVTec 3D AD: <product>/{train,validation}/good/{rgb,xyz,gt}, test/<type>/{rgb,xyz,gt}."""

    def make(types=None, n_train: int = 4, n_test_good: int = 2, product: str = "bagel") -> Path:
        root = fresh_dir("mvtec3d")
        types = {"crack": 3, "hole": 2} if types is None else types
        base = root / product

        def write_triple(folder: Path, i: int, defect: bool) -> None:
            write_image(folder / "rgb" / f"{i:03d}.png", seed=i)
            (folder / "xyz").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.float32)).save(folder / "xyz" / f"{i:03d}.tiff")
            write_mask(folder / "gt" / f"{i:03d}.png", box=BOX if defect else None)

        for i in range(n_train):
            write_triple(base / "train" / "good", i, defect=False)
        write_triple(base / "validation" / "good", 0, defect=False)
        for i in range(n_test_good):
            write_triple(base / "test" / "good", i, defect=False)
        for kind, n in types.items():
            for i in range(n):
                write_triple(base / "test" / kind, i, defect=True)
        return root

    return make


VISA_ANOMALIES = [
    "chunk of wax missing",
    "chunk of wax missing",
    "chunk of wax missing",
    "wax melded out of the candle",
    "chunk of wax missing,wax melded out of the candle",
]


@pytest.fixture
def make_visa(fresh_dir):
    """VisA original layout: <product>/Data/{Images,Masks}, <product>/image_anno.csv, split_csv/1cls.csv.

    Anomaly ``i`` is Images/Anomaly/{i:03d}.JPG with label ``labels[i]`` (several labels joined by
    commas); its mask stores ``mask_value`` (VisA masks hold small label values). Normals are
    Images/Normal/{i:04d}.JPG; 1cls.csv (when ``split_csv``) puts the first ``n_normal_train``
    of them in train and every other image in test.
    """

    def make(labels=None, n_normal: int = 6, n_normal_train: int = 4, product: str = "candle",
             mask_value: int = 2, split_csv: bool = True) -> Path:
        root = fresh_dir("visa")
        labels = VISA_ANOMALIES if labels is None else labels
        anno, split = [], []
        for i, label in enumerate(labels):
            image = f"{product}/Data/Images/Anomaly/{i:03d}.JPG"
            mask = f"{product}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / image, seed=i)
            write_mask(root / mask, value=mask_value)
            anno.append([image, label, mask])
            split.append([product, "test", "anomaly", image, mask])
        for i in range(n_normal):
            image = f"{product}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / image, seed=100 + i)
            anno.append([image, "normal", ""])
            split.append([product, "train" if i < n_normal_train else "test", "normal", image, ""])
        split.append(["pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""])
        _write_csv(root / product / "image_anno.csv", ["image", "label", "mask"], anno)
        if split_csv:
            _write_csv(root / "split_csv" / "1cls.csv", ["object", "split", "label", "image", "mask"], split)
        return root

    return make


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def make_folder(fresh_dir):
    """A custom layout shaped like the magnetic-tile data: MT_<Type>/Imgs/<stem>.jpg + <stem>.png."""

    def make(types=None, n_normal: int = 6) -> Path:
        root = fresh_dir("folder")
        types = {"Blowhole": 3, "Break": 2} if types is None else types
        for i in range(n_normal):
            write_image(root / "MT_Free" / "Imgs" / f"exp0_num_{i}.jpg", seed=i)
            write_mask(root / "MT_Free" / "Imgs" / f"exp0_num_{i}.png", box=None)
        for kind, n in types.items():
            for i in range(n):
                write_image(root / f"MT_{kind}" / "Imgs" / f"exp1_num_{i}.jpg", seed=200 + i)
                write_mask(root / f"MT_{kind}" / "Imgs" / f"exp1_num_{i}.png")
        return root

    return make



# ----------------------------------------------------------------------------- models and runs
# A tiny backbone folder, a small synthetic product, and finished runs built from them.

from seas.config import MaskConfig, TrainConfig  # noqa: E402
from seas.data.config import DataConfig  # noqa: E402
from seas.data.synthetic import write_synthetic_product  # noqa: E402
from seas.model.backbone import build_tiny_components, save_components  # noqa: E402
from seas.model.features import unet_feature_channels, vae_feature_channels  # noqa: E402
from seas.model.rmp import ReferenceMaskHead, head_config_for  # noqa: E402
from seas.run import Run  # noqa: E402
from seas.training.stage1 import train_generator  # noqa: E402


@pytest.fixture(scope="session")
def tiny16(tmp_path_factory):
    """A width-16 tiny SD-1.x-shaped model written as a diffusers folder."""
    return save_components(build_tiny_components(seed=0, width=16), tmp_path_factory.mktemp("base") / "tiny16")


@pytest.fixture(scope="session")
def product64(tmp_path_factory):
    """A synthetic MVTec-layout product at 64 px: 3 types x 3 images, 4 + 2 normals."""
    root = tmp_path_factory.mktemp("data")
    return write_synthetic_product(root, product="tile", seed=0, size=64, n_train_good=4, n_test_good=2, n_per_type=3)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny16, product64):
    """A finished stage-1 run (2 updates at 64 px) on the synthetic product."""
    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=2)
    return train_generator(DataConfig(root=str(product64), layout="mvtec"), cfg, tmp_path_factory.mktemp("runs") / "run")


def write_mask_head(run: Path, seed: int = 0) -> Path:
    """Save a small random RMP for ``run``'s backbone, as stage 2 would (marker last).

    Its BatchNorm running statistics are set away from the identity so that eval and
    training mode give visibly different predictions.
    """
    record = Run.load(run)
    backbone = record.load_backbone()
    torch.manual_seed(seed)
    config = head_config_for(unet_feature_channels(backbone.unet), vae_feature_channels(backbone.vae))
    head = ReferenceMaskHead(**(config | {"num_layers": 1}))
    for module in head.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    record.save_mask_head(head, MaskConfig(), steps=0)
    return run


def stop_after_first_checkpoint(monkeypatch, train) -> None:
    """Run ``train()`` until its first checkpoint is written, then stop it there as Ctrl-C would
    (a KeyboardInterrupt right after the checkpoint), so that a test can resume it."""
    import seas.training.loop

    real_save = seas.training.loop.save_checkpoint

    def save_then_die(*args):
        real_save(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(seas.training.loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train()
    monkeypatch.setattr(seas.training.loop, "save_checkpoint", real_save)


@pytest.fixture(scope="module")
def gen_run(tiny16, product64, tmp_path_factory):
    """A finished tiny run (1 stage-1 update, 64 px, types hole/scratch/stain, 4 normals) with a mask head."""
    out = tmp_path_factory.mktemp("gen") / "run"
    data = DataConfig(root=str(product64), layout="mvtec")
    train_generator(data, TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=1), out)
    return write_mask_head(out)


class TinyInception(torch.nn.Module):
    """Stand-in for Inception-v3 in quality tests: (N, 3, H, W) -> (features (N, 8), logits (N, 5))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=3)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, images):
        features = self.conv(images).mean(dim=(2, 3))
        return features, self.fc(features)
