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
        assert (gen.num, gen.steps, gen.seed, gen.guidance) == (5, 7, 3, None), name  # None: the run's preset
        assert variant_generation(name, cfg, seed=3, guidance=2.5).guidance == 2.5, name


def test_variant_folders_follow_the_count_guidance_and_segmenter_asked_for(tmp_path):
    import dataclasses

    from benchmarks.ablation_placement import variant_folders
    from seas.cli.demo import DemoConfig
    from seas.files.atomic import write_json

    demo = DemoConfig(num_per_kind=12)
    write_json(tmp_path / "demo.json", {"status": "finished", "config": dataclasses.asdict(demo)})
    assert variant_folders(tmp_path, "free", demo) == (tmp_path / "run/generated", tmp_path / "evaluation")
    assert variant_folders(tmp_path, "free+qc", demo) == (tmp_path / "generated-free+qc",
                                                          tmp_path / "evaluation-free+qc")
    more = dataclasses.replace(demo, num_per_kind=48)  # the demo's own pairs are never reused or overwritten
    assert variant_folders(tmp_path, "free", more) == (tmp_path / "generated-free@n48", tmp_path / "evaluation@n48")
    assert variant_folders(tmp_path, "real-masks", more) == (tmp_path / "generated-real-masks@n48",
                                                             tmp_path / "evaluation-real-masks@n48")
    longer = dataclasses.replace(demo, seg_steps=demo.seg_steps * 2)  # same pairs, another judge
    suffix = f"@{demo.segmenter}-{demo.seg_size}-{demo.seg_steps * 2}-{demo.seg_width}"
    assert variant_folders(tmp_path, "free", longer) == (tmp_path / "run/generated", tmp_path / f"evaluation{suffix}")
    both = dataclasses.replace(longer, num_per_kind=48)
    assert variant_folders(tmp_path, "free", both) == (tmp_path / "generated-free@n48",
                                                       tmp_path / f"evaluation@n48{suffix}")
    assert variant_folders(tmp_path, "free", demo, guidance=3) == (tmp_path / "generated-free@g3",
                                                                   tmp_path / "evaluation@g3")
    assert variant_folders(tmp_path, "free+qc", both, guidance=2.5) == (tmp_path / "generated-free+qc@n48@g2.5",
                                                                        tmp_path / f"evaluation-free+qc@n48@g2.5{suffix}")
