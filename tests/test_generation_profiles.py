"""Memory switches at generation: half precision, VAE slicing and tiling, attention slicing,
and ``seas generate --profile`` with its overrides (recorded, and checked when resuming)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seas.cli import main
from seas.errors import ConfigError
from seas.generation.pipeline import SeaSPipeline
from seas.config import GenerationSwitches

STEPS = 2  # with 3 mask steps: the x_t of both steps feed the masks (mask decodes), then the final decode


@pytest.fixture(scope="module")
def plain(gen_run):
    """fp32, nothing sliced or tiled: the reference outputs."""
    return SeaSPipeline.from_run(gen_run)


def grey(item) -> np.ndarray:
    return np.asarray(item.image).astype(int)


def batch_sizes(module: torch.nn.Module, calls: list[int]):
    """Record the batch size of every forward call of ``module`` (a hook handle)."""

    def record(mod, args):
        first = args[0][0] if isinstance(args[0], (list, tuple)) else args[0]  # the mask head takes lists
        calls.append(first.shape[0])

    return module.register_forward_pre_hook(record)


# ----------------------------------------------------------------------------- pipeline


def test_from_run_takes_the_dtype_of_the_switches(gen_run):
    pipe = SeaSPipeline.from_run(gen_run, dtype=torch.bfloat16, with_masks=False)
    assert pipe.switches == GenerationSwitches(dtype="bfloat16") and pipe.unet.dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="differs"):
        SeaSPipeline.from_run(gen_run, dtype=torch.float16, switches=GenerationSwitches())


def test_vae_slicing_decodes_one_image_at_a_time_with_the_same_outputs(gen_run, plain):
    sliced = SeaSPipeline.from_run(gen_run, switches=GenerationSwitches(vae_slicing=True))
    decoder_calls, head_calls = [], []
    handles = [batch_sizes(sliced.vae.decoder, decoder_calls), batch_sizes(sliced.mask_head, head_calls)]
    try:
        got = sliced.generate("scratch", [0, 1, 2], steps=STEPS, batch_size=3)
    finally:
        for handle in handles:
            handle.remove()
    # 3 images x (STEPS mask decodes of x_t + the final decode); the head reads each mask decode
    assert decoder_calls == [1] * 3 * (STEPS + 1) and head_calls == [1] * 3 * STEPS
    want = plain.generate("scratch", [0, 1, 2], steps=STEPS, batch_size=3)
    for a, b in zip(want, got, strict=True):
        assert np.abs(grey(a) - grey(b)).max() <= 1
        np.testing.assert_allclose(b.prob, a.prob, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(b.mask, a.mask)
    for a, b in zip(plain.generate("good", [0, 1], steps=STEPS, batch_size=2),
                    sliced.generate("good", [0, 1], steps=STEPS, batch_size=2), strict=True):
        assert np.abs(grey(a) - grey(b)).max() <= 1


def test_vae_tiling_only_for_decodes_whose_features_nobody_reads(gen_run, plain, monkeypatch):
    tiled = SeaSPipeline.from_run(gen_run, switches=GenerationSwitches(vae_tiling=True))
    tiles, original = [], tiled.vae.tiled_decode

    def spy(z, **kwargs):
        tiles.append(tuple(z.shape))
        return original(z, **kwargs)

    monkeypatch.setattr(tiled.vae, "tiled_decode", spy)
    # 64 px is an 8 x 8 latent, below the VAE's tile size (32): diffusers does not tile it.
    same = tiled.generate("good", [0], steps=STEPS)[0], plain.generate("good", [0], steps=STEPS)[0]
    assert same[0].image.tobytes() == same[1].image.tobytes()
    assert tiles == []
    tiled.vae.tile_latent_min_size, tiled.vae.tile_sample_min_size = 4, 32  # 3 x 3 overlapping tiles
    normals = tiled.generate("good", [0, 1], steps=STEPS, batch_size=2)
    assert tiles == [(2, 4, 8, 8)]  # the final decode of the normal batch, tiled
    assert [n.image.size for n in normals] == [(64, 64)] * 2
    untiled = plain.generate("good", [0, 1], steps=STEPS, batch_size=2)
    assert all(np.abs(grey(a) - grey(b)).max() > 1 for a, b in zip(untiled, normals))  # the tiles show
    masked = tiled.generate("hole", [0, 1], steps=STEPS, batch_size=2)
    assert tiles == [(2, 4, 8, 8)] * 2  # the final image decode is tiled; no mask decode, no encode
    for a, b in zip(plain.generate("hole", [0, 1], steps=STEPS, batch_size=2), masked, strict=True):
        np.testing.assert_array_equal(b.prob, a.prob)  # masks come from untiled decodes of x_t
        np.testing.assert_array_equal(b.mask, a.mask)
    assert not tiled.vae.use_tiling  # the switch is set only around the decodes it applies to


def test_attention_slicing_keeps_the_outputs(gen_run, plain):
    sliced = SeaSPipeline.from_run(gen_run, switches=GenerationSwitches(attention_slicing=True))
    processors = {type(p).__name__ for p in sliced.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    assert {type(p).__name__ for p in plain.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    got = sliced.generate("stain", [0, 1], steps=STEPS, batch_size=2)
    for a, b in zip(plain.generate("stain", [0, 1], steps=STEPS, batch_size=2), got, strict=True):
        assert np.abs(grey(a) - grey(b)).max() <= 1
        np.testing.assert_allclose(b.prob, a.prob, atol=1e-5, rtol=0)
        assert (b.mask == a.mask).mean() > 0.999


def test_bfloat16_on_the_cpu_runs_end_to_end_close_to_fp32(gen_run, plain):
    half = SeaSPipeline.from_run(gen_run, switches=GenerationSwitches(dtype="bfloat16"))
    assert {half.unet.dtype, half.vae.dtype, half.text_encoder.dtype, half.mask_head.dtype} == {torch.bfloat16}
    want = plain.generate("hole", [0, 1], steps=STEPS, batch_size=2)
    got = half.generate("hole", [0, 1], steps=STEPS, batch_size=2)
    # Different images of the fp32 model differ by tens of grey levels and about 0.2 in
    # probability; bf16 rounding (8-bit mantissa) moves the same image by about 1.3 and 0.007.
    assert np.abs(grey(want[0]) - grey(want[1])).mean() > 20
    for a, b in zip(want, got, strict=True):
        assert b.image.size == (64, 64) and b.mask.shape == (64, 64) and b.prob.dtype == np.float32
        assert np.isfinite(b.prob).all() and 0 <= b.prob.min() and b.prob.max() <= 1
        diff = np.abs(grey(a) - grey(b))
        assert 0 < diff.mean() < 4  # rounded differently (really bf16), yet the same image
        assert np.abs(a.prob - b.prob).mean() < 0.02
        assert (a.mask == b.mask).mean() > 0.95
    normal = half.generate("good", [0], steps=STEPS)[0]
    assert 0 < np.abs(grey(normal) - grey(plain.generate("good", [0], steps=STEPS)[0])).mean() < 4


# ----------------------------------------------------------------------------- command line


def seas_generate(run, out, *options: str) -> int:
    return main(["generate", "--run", str(run), "--out", str(out), "--type", "hole", "--num", "1",
                 "--sample-steps", "1", "--quiet", *options])


def switches_of(out) -> dict:
    settings = json.loads((out / "generation.json").read_text())
    return {k: settings[k] for k in ("profile", "dtype", "vae_slicing", "vae_tiling", "attention_slicing")}


def test_cli_profile_is_recorded_and_a_resume_with_other_switches_refused(gen_run, tmp_path, capsys):
    out = tmp_path / "low"
    assert seas_generate(gen_run, out, "--profile", "low-memory") == 0
    assert switches_of(out) == {"profile": "low-memory", "dtype": "bfloat16", "vae_slicing": True,
                                "vae_tiling": True, "attention_slicing": False}  # half = bf16 on a CPU
    image = (out / "hole" / "image" / "000.png").read_bytes()
    capsys.readouterr()
    assert seas_generate(gen_run, out, "--profile", "default") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --out {out}: holds outputs generated with a different ")
    assert "--dtype, --vae-slicing, --vae-tiling (see" in err
    assert (out / "hole" / "image" / "000.png").read_bytes() == image
    # The switches decide, not the profile's name: the same switches spelled out resume.
    assert seas_generate(gen_run, out, "--dtype", "bfloat16", "--vae-slicing", "--vae-tiling") == 0
    assert switches_of(out)["profile"] == "default"


def test_cli_explicit_options_override_the_profile(gen_run, tmp_path):
    out = tmp_path / "g"
    assert seas_generate(gen_run, out, "--profile", "low-memory", "--no-vae-slicing", "--attention-slicing") == 0
    assert switches_of(out) == {"profile": "low-memory", "dtype": "bfloat16", "vae_slicing": False,
                                "vae_tiling": True, "attention_slicing": True}
    assert seas_generate(gen_run, tmp_path / "h", "--profile", "low-memory", "--dtype", "float32") == 0
    assert switches_of(tmp_path / "h") == {"profile": "low-memory", "dtype": "float32", "vae_slicing": True,
                                           "vae_tiling": True, "attention_slicing": False}


def test_folders_from_before_the_switches_resume_as_plain_fp32(gen_run, tmp_path):
    out = tmp_path / "g"
    assert seas_generate(gen_run, out) == 0
    settings = json.loads((out / "generation.json").read_text())
    for key in ("profile", "dtype", "vae_slicing", "vae_tiling", "attention_slicing"):
        del settings[key]
    (out / "generation.json").write_text(json.dumps(settings))
    assert seas_generate(gen_run, out) == 0
    assert seas_generate(gen_run, out, "--profile", "fast") == 0  # fast is fp32 on a CPU: the same switches
    assert seas_generate(gen_run, out, "--profile", "low-memory") == 2
