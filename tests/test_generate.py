"""Generation: pipeline, output folder (layout, manifest, resume, processes), CLI parser, export."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seas.cli.generate import add_parsers
from seas.cli.options import resolve_config
from seas.config import GenerationConfig
from seas.data.config import DataConfig
from seas.data.readers import read_dataset
from seas.data.transforms import image_to_tensor
from seas.errors import ConfigError, RunError
from seas.files.images import read_mask, read_rgb
from seas.generation.export import export_mvtec
from seas.generation.folder import generate_to_folder
from seas.generation.generated import GeneratedFolder
from seas.generation.pipeline import SeaSPipeline, match_channel_stats, resolve_kind
from seas.model.features import FeatureRecorder
from seas.run import Run

FAST = {"steps": 2}


def pngs(out: Path) -> dict[str, bytes]:
    """Every PNG under ``out`` by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def stamps(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every PNG: changes when a file is written again."""
    return {name: (os.stat(out / name).st_ino, os.stat(out / name).st_mtime_ns) for name in pngs(out)}


def pixels(data: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "decode.png"
    path.write_bytes(data)
    return np.asarray(Image.open(path)).astype(int)


@pytest.fixture(scope="module")
def pipe(gen_run):
    return SeaSPipeline.from_run(gen_run)


# ----------------------------------------------------------------------------- pipeline


def test_resolve_kind_prompts_and_labels(gen_run):
    spec = SeaSPipeline.from_run(gen_run, with_masks=False).prompts
    assert resolve_kind("good", spec).prompt == "a ob1" and resolve_kind("good", spec).is_normal
    assert resolve_kind("scratch", spec).prompt == "a ob1 with sks5 sks6 sks7 sks8"
    mix = resolve_kind(["stain", "hole"], spec)
    assert mix.label == "stain+hole" and mix == resolve_kind("stain+hole", spec)
    assert mix.prompt == "a ob1 with sks9 sks10 sks11 sks12 sks1 sks2 sks3 sks4"
    with pytest.raises(ConfigError, match="distinct"):
        resolve_kind("hole+hole", spec)


def test_start_latent_recipe_and_reference_cycle(pipe, gen_run):
    normals = Run.load(gen_run).references
    assert len(normals) == 4
    x = pipe.start_latents([5], seed=3, signal=0.5, noise=0.25)
    image = image_to_tensor(read_rgb(normals[1]), 64)[None]
    with torch.no_grad():
        z = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(x, 0.5 * z + 0.25 * eps)
    results = pipe.generate("good", [0, 5], seed=3, steps=1, batch_size=2)
    assert [r.reference for r in results] == [normals[0], normals[1]]
    assert [r.seed for r in results] == [3, 8]
    assert all(r.mask is None and r.prob is None and r.image.size == (64, 64) for r in results)


def test_mask_does_not_depend_on_batch_mates(pipe):
    alone = pipe.generate("scratch", [0], steps=2)[0]
    with_one = pipe.generate("scratch", [0, 1], steps=2, batch_size=2)[0]
    with_five = pipe.generate("scratch", [0, 5, 6], steps=2, batch_size=3)[0]
    for other in (with_one, with_five):
        np.testing.assert_allclose(other.prob, alone.prob, atol=1e-4)
        assert other.mask.shape == (64, 64) and other.mask.dtype == bool
        assert (other.mask == alone.mask).mean() > 0.99
    # --mask-batchnorm batch: BatchNorm on batch statistics, what the reference did (defect 6)
    in_batch = pipe.generate("scratch", [0, 5, 6], steps=2, batch_size=3, mask_batchnorm="batch")[0]
    in_other_batch = pipe.generate("scratch", [0, 1], steps=2, batch_size=2, mask_batchnorm="batch")[0]
    assert np.abs(in_batch.prob - alone.prob).max() > 1e-2
    assert np.abs(in_batch.prob - in_other_batch.prob).max() > 1e-3  # a mask depends on its batch mates
    assert np.array_equal(np.asarray(in_batch.image), np.asarray(with_five.image))  # the images do not


def test_stopped_decode_records_the_features_of_a_full_decode(pipe):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), FeatureRecorder(vae=pipe.vae) as full:
        pipe.vae.decode(latents / pipe.vae.config.scaling_factor)
    with torch.no_grad(), FeatureRecorder(vae=pipe.vae) as stopped:
        pipe._decode_features(latents)
    for a, b in zip(full.vae_features, stopped.vae_features, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not pipe.vae.decoder.up_blocks[2]._forward_hooks  # the stopping hook is gone


def test_guidance_at_most_one_runs_unguided(pipe):
    one = pipe.generate("hole", [0], steps=2, guidance=1.0)[0]
    half = pipe.generate("hole", [0], steps=2, guidance=0.5)[0]
    eight = pipe.generate("hole", [0], steps=2, guidance=8.0)[0]
    assert one.image.tobytes() == half.image.tobytes()
    np.testing.assert_array_equal(one.prob, half.prob)
    assert one.image.tobytes() != eight.image.tobytes()


def test_reference_stats_rescale_only_the_output_latents_channels(pipe, monkeypatch):
    decoded = []  # the final latents (B, 4, h, w) each generate call decodes into its images
    decode = pipe._decode_images
    monkeypatch.setattr(pipe, "_decode_images", lambda latents: decode(decoded.append(latents.clone()) or latents))
    plain = pipe.generate("hole", [0, 5], steps=2, batch_size=2)
    matched = pipe.generate("hole", [0, 5], steps=2, batch_size=2, reference_stats=True)
    z, _ = pipe._start_parts([0, 5], seed=0)  # the reference latents these images started from

    def stats(x):
        return x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)

    (m0, s0), (m1, s1), (mz, sz) = stats(decoded[0]), stats(decoded[1]), stats(z)
    torch.testing.assert_close((m1, s1), (mz, sz), rtol=0, atol=1e-5)
    assert (m0 - mz).abs().max() > 1e-2 and (s0 - sz).abs().max() > 1e-2  # without it they drift
    torch.testing.assert_close((decoded[1] - m1) / s1, (decoded[0] - m0) / s0, rtol=0, atol=1e-4)  # same pattern
    for a, b in zip(plain, matched, strict=True):
        np.testing.assert_array_equal(a.prob, b.prob)  # the mask steps' latents are untouched
        assert a.image.tobytes() != b.image.tobytes()


def test_match_channel_stats_by_hand():
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)  # mean 3, sample sd sqrt(20 / 3)
    ref = torch.tensor([1.0, 1.0, 3.0, 3.0]).view(1, 1, 2, 2)  # mean 2, sample sd sqrt(4 / 3)
    expected = (x - 3) / (20 / 3) ** 0.5 * (4 / 3) ** 0.5 + 2
    torch.testing.assert_close(match_channel_stats(x, ref), expected)
    flat = match_channel_stats(torch.full((1, 1, 2, 2), 5.0), ref)  # a constant channel: no NaN
    torch.testing.assert_close(flat, torch.full((1, 1, 2, 2), 2.0))


# ----------------------------------------------------------------------------- output folder


def test_writes_images_masks_and_manifest(gen_run, tmp_path):
    out = generate_to_folder(gen_run, tmp_path / "g", ["hole"], GenerationConfig(num=3, batch_size=2, **FAST),
                             progress=False)
    names = ["000.png", "001.png", "002.png"]
    assert sorted(p.name for p in (out / "hole" / "image").iterdir()) == names
    assert sorted(p.name for p in (out / "hole" / "mask").iterdir()) == names
    assert not [p for p in out.rglob(".*")]  # no temporary files left
    normals = Run.load(gen_run).references
    manifest = rows(out)
    assert [(r["kind"], r["index"], r["seed"]) for r in manifest] == [("hole", i, i) for i in range(3)]
    for i, row in enumerate(manifest):
        image = Image.open(out / row["image"])
        mask = Image.open(out / row["mask"])
        assert image.mode == "RGB" and image.size == (64, 64) and mask.mode == "L"
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        assert row["mask_area"] == pytest.approx((values == 255).mean())
        assert row["image"] == f"hole/image/{names[i]}" and row["mask"] == f"hole/mask/{names[i]}"
        assert row["prompt"] == "a ob1 with sks1 sks2 sks3 sks4" and row["reference"] == normals[i]
        assert (row["steps"], row["guidance"], row["signal"]) == (2, 8.0, 0.0979)
    settings = json.loads((out / "generation.json").read_text())
    assert settings["run"] == str(Path(gen_run).resolve()) and settings["num"] == 3 and settings["kinds"] == ["hole"]


def test_file_names_follow_the_count():
    from seas.generation.generated import name_width

    assert [name_width(n) for n in (1, 10, 1000, 1001, 10001)] == [3, 3, 3, 4, 5]


def test_same_seed_same_bytes_and_batch_size_only_rounds(gen_run, tmp_path):
    first = generate_to_folder(gen_run, tmp_path / "a", ["stain"], GenerationConfig(num=3, batch_size=2, **FAST),
                               progress=False)
    again = generate_to_folder(gen_run, tmp_path / "b", ["stain"], GenerationConfig(num=3, batch_size=2, **FAST),
                               progress=False)
    assert pngs(first) == pngs(again)
    assert (first / "manifest.jsonl").read_bytes() == (again / "manifest.jsonl").read_bytes()
    other = generate_to_folder(gen_run, tmp_path / "c", ["stain"], GenerationConfig(num=3, batch_size=3, **FAST),
                               progress=False)
    a, c = pngs(first), pngs(other)
    assert a.keys() == c.keys()
    for name in a:  # batch shapes may round differently in the last float bits, nothing more
        diff = np.abs(pixels(a[name], tmp_path) - pixels(c[name], tmp_path))
        assert diff.max() <= (1 if "/image/" in name else 255) and (diff == 0).mean() > 0.99
    other_seed = generate_to_folder(gen_run, tmp_path / "d", ["stain"],
                                    GenerationConfig(num=3, seed=1, batch_size=2, **FAST), progress=False)
    assert pngs(other_seed)["stain/image/000.png"] != a["stain/image/000.png"]
    assert [r["seed"] for r in rows(other_seed)] == [1, 2, 3]  # image i uses seed + i


def test_resume_regenerates_exactly_the_damaged_outputs(gen_run, tmp_path):
    out = generate_to_folder(gen_run, tmp_path / "g", ["hole", "good"], GenerationConfig(num=4, batch_size=1, **FAST),
                             progress=False)
    before, stamps_before = pngs(out), stamps(out)
    (out / "hole" / "image" / "001.png").unlink()
    (out / "hole" / "mask" / "002.png").unlink()
    truncated = out / "good" / "image" / "003.png"
    truncated.write_bytes(before["good/image/003.png"][:200])
    generate_to_folder(gen_run, out, ["hole", "good"], GenerationConfig(num=4, batch_size=1, **FAST), progress=False)
    assert pngs(out) == before
    rewritten = {name for name, stamp in stamps(out).items() if stamp != stamps_before[name]}
    assert rewritten == {"hole/image/001.png", "hole/mask/001.png", "hole/prob/001.png", "hole/image/002.png",
                         "hole/mask/002.png", "hole/prob/002.png", "good/image/003.png"}
    assert [(r["kind"], r["index"]) for r in rows(out)] == [(k, i) for k in ("good", "hole") for i in range(4)]


def test_resume_drops_rows_without_files(gen_run, tmp_path):
    out = generate_to_folder(gen_run, tmp_path / "g", ["good"], GenerationConfig(num=2, batch_size=1, **FAST),
                             progress=False)
    with (out / "manifest.jsonl").open("a") as fh:  # a row whose file never arrived, and a torn line
        fh.write(json.dumps({**rows(out)[0], "index": 7, "image": "good/image/007.png"}) + "\n{\"kind\": ")
    generate_to_folder(gen_run, out, ["good"], GenerationConfig(num=2, batch_size=1, **FAST), progress=False)
    assert [r["index"] for r in rows(out)] == [0, 1]


def test_other_parameters_are_refused(gen_run, tmp_path):
    out = generate_to_folder(gen_run, tmp_path / "g", ["good"], GenerationConfig(num=1, batch_size=1, **FAST),
                             progress=False)
    with pytest.raises(RunError, match=r"different --sample-steps .*new --out"):
        generate_to_folder(gen_run, out, ["good"], GenerationConfig(num=1, batch_size=1, steps=3), progress=False)
    with pytest.raises(RunError, match=r"different --reference-stats .*new --out"):
        generate_to_folder(gen_run, out, ["good"], GenerationConfig(num=1, batch_size=1, reference_stats=True, **FAST),
                           progress=False)
    with pytest.raises(RunError, match="different --type/--good/--mix"):
        generate_to_folder(gen_run, out, ["hole"], GenerationConfig(num=1, batch_size=1, **FAST), progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not a 'seas generate' folder"):
        generate_to_folder(gen_run, foreign, ["good"], GenerationConfig(num=1, **FAST), progress=False)


def test_unknown_type_is_refused_before_anything_is_written(gen_run, tmp_path):
    out = tmp_path / "g"
    message = r"^unknown anomaly type 'dent'; this model knows: hole, scratch, stain$"
    for kinds in (["dent"], ["hole", "hole+dent"]):
        with pytest.raises(ConfigError, match=message):
            generate_to_folder(gen_run, out, kinds, GenerationConfig(num=2, **FAST), progress=False)
    assert not out.exists()


@pytest.mark.parametrize("option, values", [("--num", {"num": 0}), ("--sample-steps", {"steps": 0}),
                                            ("--batch-size", {"batch_size": -1})])
def test_counts_must_be_positive(gen_run, tmp_path, option, values):
    kwargs = {"num": 2, "steps": 2, "batch_size": 2} | values
    with pytest.raises(ConfigError, match=f"^{option} "):
        generate_to_folder(gen_run, tmp_path / "g", ["good"], GenerationConfig(**kwargs), progress=False)
    assert not (tmp_path / "g").exists()


def test_two_processes_match_one(gen_run, tmp_path):
    kinds = ["scratch", "good"]
    one = generate_to_folder(gen_run, tmp_path / "one", kinds, GenerationConfig(num=3, batch_size=1, **FAST),
                             progress=False)
    two = tmp_path / "two"
    for rank in (1, 0):
        generate_to_folder(gen_run, two, kinds, GenerationConfig(num=3, batch_size=1, **FAST),
                           rank=rank, world=2, progress=False)
    assert sorted(p.name for p in two.glob("manifest*")) == ["manifest.rank0.jsonl", "manifest.rank1.jsonl"]
    assert {r["index"] for r in rows_of(two / "manifest.rank1.jsonl")} == {1}
    GeneratedFolder(two).merge_journals()
    assert sorted(p.name for p in two.glob("manifest*")) == ["manifest.jsonl"]
    assert pngs(one) == pngs(two)
    assert (one / "manifest.jsonl").read_bytes() == (two / "manifest.jsonl").read_bytes()
    assert (one / "generation.json").read_bytes() == (two / "generation.json").read_bytes()


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_normals_need_no_mask_head(gen_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(gen_run, bare, ignore=shutil.ignore_patterns("mask_head*", "generated"))
    out = generate_to_folder(bare, tmp_path / "g", ["good"], GenerationConfig(num=1, **FAST), progress=False)
    assert list(pngs(out)) == ["good/image/000.png"]
    with pytest.raises(RunError, match="train-mask"):
        generate_to_folder(bare, tmp_path / "h", ["hole"], GenerationConfig(num=1, **FAST), progress=False)
    assert not (tmp_path / "h").exists()


# ----------------------------------------------------------------------------- command line


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="seas")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["generate", *argv])


def test_cli_types_mixtures_normals_and_export(gen_run, tmp_path, capsys):
    out, mvtec = tmp_path / "g", tmp_path / "mvtec"
    args = parse("--run", str(gen_run), "--out", str(out), "--type", "all", "--mix", "stain+hole", "--good",
                 "--num", "2", "--sample-steps", "2", "--batch-size", "2", "--quiet", "--export-mvtec", str(mvtec))
    assert args.func(args) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["good", "hole", "scratch", "stain", "stain+hole"]
    assert not (out / "good" / "mask").exists()
    manifest = rows(out)
    assert len(manifest) == 10 and all(r["mask"] is None for r in manifest if r["kind"] == "good")
    mix = [r for r in manifest if r["kind"] == "stain+hole"]
    assert mix[0]["prompt"] == "a ob1 with sks9 sks10 sks11 sks12 sks1 sks2 sks3 sks4"
    assert (mvtec / "tile" / "test" / "stain+hole" / "001.png").is_file()
    assert "10 outputs" in capsys.readouterr().out


def test_cli_defaults_and_errors(gen_run):
    args = parse("--run", str(gen_run), "--good", "--num", "1", "--sample-steps", "1", "--quiet")
    cfg = resolve_config(GenerationConfig, args)
    assert (cfg.num, cfg.steps, cfg.seed, cfg.guidance, cfg.signal, cfg.mask_threshold) == (1, 1, 0, None, 0.0979, 0.2)
    assert not cfg.reference_stats  # the reference decodes the sampler's latent as it is
    assert resolve_config(GenerationConfig, parse("--run", "r", "--good", "--reference-stats")).reference_stats
    assert resolve_config(GenerationConfig, parse("--run", "r", "--type", "hole")).num == 1000
    assert args.func(args) == 0
    assert (Path(gen_run) / "generated" / "good" / "image" / "000.png").is_file()
    with pytest.raises(ConfigError, match="nothing to generate"):
        args = parse("--run", str(gen_run))
        args.func(args)
    with pytest.raises(ConfigError, match="--mix hole: name two or more types"):
        args = parse("--run", str(gen_run), "--mix", "hole")
        args.func(args)


# ----------------------------------------------------------------------------- export


def test_export_mvtec_round_trip(gen_run, tmp_path):
    out = generate_to_folder(gen_run, tmp_path / "g", ["hole", "scratch+stain", "good"],
                             GenerationConfig(num=2, batch_size=2, **FAST), progress=False)
    target = export_mvtec(out, tmp_path / "mvtec")
    assert target == tmp_path / "mvtec" / "tile"
    assert (target / "test" / "good").is_dir() and not any((target / "test" / "good").iterdir())
    samples = read_dataset(DataConfig(root=str(tmp_path / "mvtec"), layout="mvtec", product="tile"))
    train = [s for s in samples if s.partition == "train"]
    assert [Path(s.image).name for s in train] == ["000.png", "001.png"] and all(s.type == "good" for s in train)
    anomalies = sorted((s for s in samples if s.type != "good"), key=lambda s: s.image)
    assert [(s.type, Path(s.image).name, Path(s.mask).name) for s in anomalies] == [
        (kind, f"00{i}.png", f"00{i}_mask.png") for kind in ("hole", "scratch+stain") for i in range(2)
    ]
    for s in anomalies:
        source = out / s.type / "mask" / Path(s.image).name
        np.testing.assert_array_equal(read_mask(s.mask), np.asarray(Image.open(source)) == 255)
        assert Path(s.image).read_bytes() == (out / s.type / "image" / Path(s.image).name).read_bytes()
    assert len((target / "export.jsonl").read_text().splitlines()) == 6
    with pytest.raises(RunError, match="not empty"):
        export_mvtec(out, tmp_path / "mvtec")
    assert [p.name for p in (tmp_path / "mvtec").iterdir()] == ["tile"]
