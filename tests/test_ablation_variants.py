"""benchmarks.ablation_placement: how each variant generates from its seed's demo."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("demo_stats", [True, False])
def test_variants_keep_the_demos_settings_and_change_only_their_own(demo_stats):
    from benchmarks.ablation_placement import variant_generation
    from seas.cli.demo import DemoConfig

    cfg = DemoConfig(reference_stats=demo_stats, num_per_kind=5, sample_steps=7)
    expect = {  # name -> (placement, qc, reference_stats)
        "free": ("free", "off", demo_stats),
        "free+qc": ("free", "filter", demo_stats),
        "real-masks": ("real-masks", "off", demo_stats),
        "real-masks+qc": ("real-masks", "filter", demo_stats),
        "free+stats": ("free", "off", True),
        "free+sampled": ("free", "off", False),
    }
    for name, (placement, qc, stats) in expect.items():
        gen = variant_generation(name, cfg, seed=3)
        assert (gen.placement, gen.qc, gen.reference_stats) == (placement, qc, stats), name
        assert (gen.num, gen.steps, gen.seed) == (5, 7, 3), name
