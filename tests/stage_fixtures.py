"""Session fixtures for the generator tests: a tiny backbone folder and a small product."""

from __future__ import annotations

import pytest

from seas.backbone import build_tiny_components, save_components
from seas.data.synthetic import write_synthetic_product


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
    from seas.config import TrainConfig
    from seas.data.config import DataConfig
    from seas.training.stage1 import train_generator

    cfg = TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=2)
    return train_generator(DataConfig(root=str(product64), layout="mvtec"), cfg, tmp_path_factory.mktemp("runs") / "run")
