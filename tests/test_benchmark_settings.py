"""benchmarks.common.with_settings: the --set FIELD=VALUE items of the benchmarks."""

from __future__ import annotations

import pytest


def test_benchmark_settings_cast_booleans_and_numbers():
    from benchmarks.common import with_settings
    from seas.cli.demo import DemoConfig

    def error(message):
        raise SystemExit(message)

    cfg = with_settings(DemoConfig(), ["reference_stats=false", "train_steps=800", "lr_unet=1e-4"], error)
    assert (cfg.reference_stats, cfg.train_steps, cfg.lr_unet) == (False, 800, 1e-4)
    assert with_settings(DemoConfig(reference_stats=False), ["reference_stats=True"], error).reference_stats is True
    for bad, says in (("reference_stats=maybe", "must be true or false"), ("train_steps=many", "must be of type int"),
                      ("colour=1", "no setting 'colour'")):
        with pytest.raises(SystemExit, match=says):
            with_settings(DemoConfig(), [bad], error)
