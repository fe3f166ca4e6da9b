"""``seas augment``: defects on the user's own images inside given regions, several types per
image, resumable and shared between processes; and the semantic-segmentation export."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from seas.cli import main
from seas.config import AugmentConfig, GenerationConfig
from seas.errors import ConfigError, SeasError
from seas.generation.augment import PALETTE, augment_to_folder, read_inputs
from seas.generation.generated import GeneratedFolder

FAST = GenerationConfig(steps=2, guidance=2.0, batch_size=2)
SIZES = {"a": (70, 50), "b": (64, 64), "c": (48, 80)}  # (width, height): not the run's 64 px square


def ellipse(size: tuple[int, int], centre: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size[::-1], np.uint8)
    cv2.ellipse(mask, centre, axes, 30, 0, 360, 255, -1)
    return mask


@pytest.fixture
def inputs(tmp_path):
    """Three normal images of other sizes than the run's (one grey), and per-type masks:
    ``masks/hole/<stem>.png`` and ``masks/scratch/<stem>.png``, never overlapping."""
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    for folder in (images, masks / "hole", masks / "scratch"):
        folder.mkdir(parents=True)
    for stem, (w, h) in SIZES.items():
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if stem == "c" else pixels).save(images / f"{stem}.png")
        Image.fromarray(ellipse((w, h), (w // 4, h // 3), (6, 4))).save(masks / "hole" / f"{stem}.png")
        Image.fromarray(ellipse((w, h), (3 * w // 4, 2 * h // 3), (9, 2))).save(masks / "scratch" / f"{stem}.png")
    return images, masks


def read(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def files_of(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_one_type_keeps_every_input_byte_outside_its_region(gen_run, inputs, tmp_path):
    images, masks = inputs
    aug = AugmentConfig(type="hole", masks=str(masks / "hole"), num_per_image=2)
    out = augment_to_folder(gen_run, images, tmp_path / "out", aug, FAST, progress=False)
    folder = GeneratedFolder(out)
    rows = folder.rows()
    assert [(r["kind"], r["index"], r["input"], r["copy"]) for r in rows] == [
        ("hole", i, f"{'abc'[i // 2]}.png", i % 2) for i in range(6)]
    for row in rows:
        source = read(images / row["input"])
        region = read(masks / "hole" / row["input"]) > 127
        image, mask = read(folder.file(row["image"])), read(folder.file(row["mask"])) > 127
        assert image.shape == source.shape  # the input's size and mode (c.png is grey)
        assert np.array_equal(image[~region], source[~region])  # bit-identical outside the region
        assert not np.array_equal(image[region], source[region])  # and something drawn inside
        assert mask.any() and not (mask & ~region).any()
        assert np.array_equal(read(folder.file(row["region"])) > 127, region)
        assert row["seed"] == FAST.seed + row["index"] and row["size"] == list(SIZES[row["input"][0]])
        assert row["mask_source"] in ("head", "placed") and "classes" not in row
    # the two copies of an image differ (their seeds do)
    assert not np.array_equal(read(folder.file(rows[0]["image"])), read(folder.file(rows[1]["image"])))


def test_several_types_give_class_index_masks_that_agree_with_the_per_type_masks(gen_run, inputs, tmp_path):
    images, masks = inputs
    aug = AugmentConfig(type="scratch,hole", masks=str(masks))
    folder = GeneratedFolder(augment_to_folder(gen_run, images, tmp_path / "out", aug, FAST, progress=False))
    for row in folder.rows():
        assert row["kind"] == "scratch+hole" and row["types"] == ["scratch", "hole"]
        source = read(images / row["input"])
        regions = {t: read(masks / t / row["input"]) > 127 for t in row["types"]}
        image = read(folder.file(row["image"]))
        assert np.array_equal(image[~(regions["scratch"] | regions["hole"])],
                              source[~(regions["scratch"] | regions["hole"])])
        with Image.open(folder.file(row["classes"])) as classes:
            assert classes.mode == "P" and classes.getpalette()[:6] == [*PALETTE[0], *PALETTE[1]]
            index = np.asarray(classes)
        per_type = {t: read(folder.file(path)) > 127 for t, path in row["type_masks"].items()}
        for k, name in enumerate(row["types"], 1):
            assert np.array_equal(index == k, per_type[name])  # class k is exactly type k's mask
            assert per_type[name].any() and not (per_type[name] & ~regions[name]).any()
        assert set(np.unique(index)) <= {0, 1, 2}
        assert np.array_equal(read(folder.file(row["mask"])) > 127, index > 0)
        assert set(row["mask_sources"]) == {"scratch", "hole"}


def test_real_mask_regions_of_several_types_never_overlap(gen_run, inputs, tmp_path):
    images, _ = inputs
    aug = AugmentConfig(type="hole,scratch,stain", placement="real-masks", num_per_image=2)
    folder = GeneratedFolder(augment_to_folder(gen_run, images, tmp_path / "out", aug, FAST, progress=False))
    for row in folder.rows():
        source = read(images / row["input"])
        per_type = [read(folder.file(p)) > 127 for p in row["type_masks"].values()]
        region = read(folder.file(row["region"])) > 127
        assert sum(m.sum() for m in per_type) == np.logical_or.reduce(per_type).sum()  # disjoint
        assert np.array_equal(read(folder.file(row["image"]))[~region], source[~region])
        assert all(m.any() and not (m & ~region).any() for m in per_type)


def test_resumed_and_two_process_runs_write_the_files_of_one(gen_run, inputs, tmp_path, monkeypatch):
    images, masks = inputs
    aug = AugmentConfig(type="scratch,hole", masks=str(masks), num_per_image=2)
    whole = augment_to_folder(gen_run, images, tmp_path / "whole", aug, FAST, progress=False)
    expected = files_of(whole)

    for rank in (0, 1):  # two processes, one after the other, then the main one merges
        augment_to_folder(gen_run, images, tmp_path / "two", aug, FAST, rank=rank, world=2, progress=False)
    GeneratedFolder(tmp_path / "two").merge_journals()
    assert files_of(tmp_path / "two") == expected
    assert GeneratedFolder(tmp_path / "two").rows() == GeneratedFolder(whole).rows()

    import seas.generation.folder

    real, calls = seas.generation.folder.append_row, []

    def die_after_three(fh, path, row):
        real(fh, path, row)
        calls.append(row)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(seas.generation.folder, "append_row", die_after_three)
    with pytest.raises(KeyboardInterrupt):
        augment_to_folder(gen_run, images, tmp_path / "resumed", aug, FAST, progress=False)
    monkeypatch.setattr(seas.generation.folder, "append_row", real)
    augment_to_folder(gen_run, images, tmp_path / "resumed", aug, FAST, progress=False)
    assert files_of(tmp_path / "resumed") == expected
    assert GeneratedFolder(tmp_path / "resumed").rows() == GeneratedFolder(whole).rows()

    with pytest.raises(Exception, match="different --num-per-image"):
        augment_to_folder(gen_run, images, tmp_path / "whole", AugmentConfig(type="scratch,hole", masks=str(masks)),
                          FAST, progress=False)


def _cli(gen_run, images, out, *extra) -> list[str]:
    return ["augment", "--run", str(gen_run), "--images", str(images), "--out", str(out), "--sample-steps", "2",
            "--quiet", *extra]


@pytest.mark.parametrize("damage, expected", [
    ("count", r"1 masks for 3 images"),
    ("size", r"is 30x30 but its image b\.png is 64x64"),
    ("empty", r"b\.png: covers nothing"),
    ("everything", r"b\.png: covers the whole image"),
    ("overlap", r"overlaps the region of another type on b\.png"),
    ("type", r"--type dent: the run has no such type; choose from hole, scratch, stain"),
])
def test_bad_input_is_one_line_before_any_sampling_and_nothing_is_written(gen_run, inputs, tmp_path, capsys,
                                                                          damage, expected, monkeypatch):
    images, masks = inputs
    kinds = "hole,scratch"
    if damage == "count":
        for stem in "ab":
            (masks / "hole" / f"{stem}.png").unlink()
    elif damage == "size":
        Image.fromarray(np.full((30, 30), 255, np.uint8)).save(masks / "hole" / "b.png")
    elif damage == "empty":
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "hole" / "b.png")
    elif damage == "everything":
        Image.fromarray(np.full((64, 64), 255, np.uint8)).save(masks / "hole" / "b.png")
    elif damage == "overlap":
        (masks / "scratch" / "b.png").write_bytes((masks / "hole" / "b.png").read_bytes())
    else:
        kinds = "hole,dent"
    import seas.generation.pipeline

    monkeypatch.setattr(seas.generation.pipeline.SeaSPipeline, "sample_on",
                        lambda *a, **k: pytest.fail("sampled despite bad input"))
    before = {p: p.read_bytes() for p in [*images.iterdir(), *masks.rglob("*.png")]}
    out = tmp_path / "out"
    assert main(_cli(gen_run, images, out, "--type", kinds, "--masks", str(masks))) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert pytest.importorskip("re").search(expected, err), err
    assert not out.exists()
    assert {p: p.read_bytes() for p in before} == before  # the user's data untouched


def test_masks_must_match_the_images_by_name(gen_run, inputs):
    images, masks = inputs
    (masks / "hole" / "b.png").rename(masks / "hole" / "z.png")
    with pytest.raises(SeasError, match=r"z\.png: matches no image in --images"):
        read_inputs(images, AugmentConfig(type="hole", masks=str(masks / "hole")), ["hole", "scratch"])
    with pytest.raises(ConfigError, match="needs --masks"):
        read_inputs(images, AugmentConfig(type="hole"), ["hole"])


def test_the_cli_writes_a_folder_that_export_reads_in_both_layouts(gen_run, inputs, tmp_path, capsys):
    images, masks = inputs
    out = tmp_path / "out"
    assert main(_cli(gen_run, images, out, "--type", "scratch,hole", "--masks", str(masks))) == 0
    assert "3 augmented images" in capsys.readouterr().out
    settings = json.loads((out / "generation.json").read_text())
    assert settings["mode"] == "augment" and settings["types"] == ["scratch", "hole"]

    assert main(["export", str(out), "--out", str(tmp_path / "mvtec")]) == 0
    mvtec = tmp_path / "mvtec" / settings["product"]
    assert sorted(p.name for p in (mvtec / "test" / "scratch+hole").iterdir()) == ["000.png", "001.png", "002.png"]

    assert main(["export", str(out), "--out", str(tmp_path / "sem"), "--layout", "semantic"]) == 0
    semantic = tmp_path / "sem" / settings["product"]
    assert (semantic / "classes.txt").read_text().splitlines() == ["normal", "scratch", "hole"]
    rows = GeneratedFolder(out).rows()
    for row in rows:
        name = f"{row['kind']}_{row['index']:03d}.png"
        assert np.array_equal(read(semantic / "images" / name), read(out / row["image"]))
        assert np.array_equal(read(semantic / "masks" / name), read(out / row["classes"]))


def test_evaluate_and_the_gallery_read_an_augmented_folder(gen_run, inputs, tmp_path):
    import urllib.request

    from seas.evaluation.config import EvalConfig
    from seas.evaluation.evaluate import evaluate_run
    from seas.gallery.server import serve

    images, masks = inputs
    out = augment_to_folder(gen_run, images, tmp_path / "aug", AugmentConfig(type="scratch,hole", masks=str(masks)),
                            FAST, progress=False)
    cfg = EvalConfig(segmenter="unet", size=32, steps=1, batch_size=4, width=0.25, device="cpu", progress=False,
                     judge_steps=2, baselines=False, quality=False, weights_dir=str(tmp_path / "weights"))
    metrics = evaluate_run(gen_run, generated_dir=out, out_dir=tmp_path / "evaluation", cfg=cfg)
    assert metrics["train_sets"]["real+generated"]["generated_anomalies"] == 3
    assert metrics["generated"]["scratch+hole"]["rows"] == 3

    with serve(out) as server:
        with urllib.request.urlopen(server.url + "api/catalog", timeout=10) as response:
            catalog = json.loads(response.read())
        assert [i["key"] for i in catalog["items"]] == [f"scratch+hole/{i}" for i in range(3)]
        for url in [i[f] for i in catalog["items"] for f in ("image", "mask") if i[f]]:
            with urllib.request.urlopen(server.url.rstrip("/") + url, timeout=10) as response:
                assert response.read().startswith(b"\x89PNG")
