"""Dataset readers, few-shot split, image conversions and input validation (spec section 2)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZE, VISA_ANOMALIES, write_image, write_mask
from PIL import Image

from seas.cli import main
from seas.data.config import LAYOUT_PRESETS, DataConfig
from seas.data.readers import Sample, read_dataset
from seas.data.split import Split, few_shot_split, summary_rows, write_split
from seas.errors import ConfigError, DataError
from seas.files.images import read_mask, read_rgb

MAGNETIC_TILE = Path(__file__).resolve().parents[2] / "shared/data/magnetic-tile"
EXAMPLE_YAML = Path(__file__).resolve().parents[1] / "examples/magnetic-tile.yaml"
needs_magnetic_tile = pytest.mark.skipif(not MAGNETIC_TILE.is_dir(), reason=f"{MAGNETIC_TILE} is absent")

LAYOUTS = ("mvtec", "mvtec3d", "visa", "folder")
FOLDER_FLAGS = [
    "--normal", "MT_Free/Imgs/*.jpg",
    "--anomaly", "blowhole=MT_Blowhole/Imgs/*.jpg",
    "--anomaly", "break=MT_Break/Imgs/*.jpg",
]
PRODUCT = {"mvtec": "bottle", "mvtec3d": "bagel", "visa": "candle"}


def make_dataset(request, layout: str) -> tuple[Path, list[str]]:
    """A default dataset of ``layout`` from the conftest builders, and its ``seas data`` arguments."""
    root = request.getfixturevalue(f"make_{layout}")()
    flags = FOLDER_FLAGS if layout == "folder" else ["--product", PRODUCT[layout]]
    return root, ["--data", str(root), "--layout", layout, *flags]


def anomaly_files(layout: str, root: Path) -> tuple[Path, Path]:
    """(image, mask) of the second image of the first anomaly type of a default dataset."""
    return {
        "mvtec": (root / "bottle/test/broken/001.png", root / "bottle/ground_truth/broken/001_mask.png"),
        "mvtec3d": (root / "bagel/test/crack/rgb/001.png", root / "bagel/test/crack/gt/001.png"),
        "visa": (root / "candle/Data/Images/Anomaly/001.JPG", root / "candle/Data/Masks/Anomaly/001.png"),
        "folder": (root / "MT_Blowhole/Imgs/exp1_num_1.jpg", root / "MT_Blowhole/Imgs/exp1_num_1.png"),
    }[layout]


def normal_file(layout: str, root: Path) -> Path:
    """The first normal training image of a default dataset."""
    return {
        "mvtec": root / "bottle/train/good/000.png",
        "mvtec3d": root / "bagel/train/good/rgb/000.png",
        "visa": root / "candle/Data/Images/Normal/0000.JPG",
        "folder": root / "MT_Free/Imgs/exp0_num_0.jpg",
    }[layout]


def run_data(capsys, args) -> tuple[int, str, str]:
    rc = main(["data", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, out, err


def summary(out: str) -> dict[str, tuple[int, int, int]]:
    """The per-type table printed by ``seas data``: type -> (images, train, test)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["type"]) + 1
    table = {}
    for line in lines[start:]:
        cells = line.split()
        if len(cells) != 4 or not cells[1].isdigit():
            break
        table[cells[0]] = tuple(int(c) for c in cells[1:])
    return table


def assert_refused(capsys, tmp_path, args, named: Path, *words: str) -> str:
    """``seas data`` exits 2 with one line naming ``named``, and writes nothing."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc, out, err = run_data(capsys, [*args, "--write-split", out_dir / "split.json"])
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert out == ""
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(named) in lines[0]
    for word in words:
        assert word in lines[0]
    assert list(out_dir.iterdir()) == []
    return lines[0]


def counts(samples: list[Sample]) -> Counter:
    return Counter((s.type, s.partition) for s in samples)


# ----------------------------------------------------------------------------- readers


def test_mvtec_ad_reader(make_mvtec):
    root = make_mvtec(types={"broken": 4, "crack": 2}, n_train=5, n_test_good=2)
    samples = read_dataset(DataConfig(root=str(root), layout="mvtec", product="bottle"))
    assert counts(samples) == {("good", "train"): 5, ("good", "test"): 2, ("broken", "test"): 4, ("crack", "test"): 2}
    for s in samples:
        assert s.product == "bottle"
        if s.is_normal:
            assert s.mask is None
        else:
            image = Path(s.image)
            assert image.parent == root / "bottle/test" / s.type
            assert Path(s.mask) == root / "bottle/ground_truth" / s.type / f"{image.stem}_mask.png"
    # --data may also be the product folder itself.
    alone = read_dataset(DataConfig(root=str(root / "bottle"), layout="mvtec"))
    assert sorted(alone, key=lambda s: s.image) == sorted(samples, key=lambda s: s.image)


def test_mvtec_3d_reader_reads_rgb_and_gt_only(make_mvtec3d):
    root = make_mvtec3d(types={"crack": 3, "hole": 2}, n_train=4, n_test_good=2)
    samples = read_dataset(DataConfig(root=str(root), layout="mvtec3d", product="bagel"))
    assert counts(samples) == {("good", "train"): 4, ("good", "test"): 2, ("crack", "test"): 3, ("hole", "test"): 2}
    for s in samples:
        image = Path(s.image)
        assert image.parent.name == "rgb" and image.suffix == ".png"
        assert "validation" not in image.parts
        if not s.is_normal:
            assert Path(s.mask) == image.parent.parent / "gt" / f"{image.stem}.png"


def test_visa_reader_groups_by_defect_type(make_visa):
    root = make_visa(n_normal=6, n_normal_train=4)
    samples = read_dataset(DataConfig(root=str(root), layout="visa", product="candle"))
    assert counts(samples) == {
        ("chunk_of_wax_missing", "test"): 3,
        ("wax_melded_out_of_the_candle", "test"): 1,
        ("combined", "test"): 1,  # the image with two defect labels
        ("good", "train"): 4,  # partition from split_csv/1cls.csv
        ("good", "test"): 2,
    }
    by_image = {Path(s.image).name: s for s in samples}
    assert by_image["004.JPG"].type == "combined"
    assert Path(by_image["003.JPG"].mask) == root / "candle/Data/Masks/Anomaly/003.png"
    assert {Path(s.image).name for s in samples if s.partition == "test" and s.is_normal} == {"0004.JPG", "0005.JPG"}


def test_visa_reader_accepts_the_product_folder_as_root(make_visa):
    root = make_visa()
    with_product = read_dataset(DataConfig(root=str(root), layout="visa", product="candle"))
    alone = read_dataset(DataConfig(root=str(root / "candle"), layout="visa"))
    assert alone == with_product


def test_visa_reader_without_split_csv_holds_out_the_last_normals(make_visa):
    root = make_visa(n_normal=6, split_csv=False)
    cfg = DataConfig(root=str(root), layout="visa", product="candle")
    normals = sorted((s for s in read_dataset(cfg) if s.is_normal), key=lambda s: s.image)
    assert [s.partition for s in normals] == ["train"] * 4 + ["test"] * 2


def test_visa_resplit_into_mvtec_layout(make_mvtec, capsys):
    root = make_mvtec(types={"bubble": 3, "spot": 3}, product="capsules")
    cfg = DataConfig(root=str(root), layout="visa-mvtec", product="capsules")
    assert (cfg.augment, cfg.guidance, cfg.inside_rule) == (False, 2.0, "gt0")
    assert counts(read_dataset(cfg))[("bubble", "test")] == 3
    rc, out, _ = run_data(capsys, ["--data", root, "--layout", "visa-mvtec", "--product", "capsules"])
    assert rc == 0
    assert "augment False  guidance 2.0  inside_rule gt0" in out


def test_folder_layout_from_flags(make_folder, capsys):
    root = make_folder(types={"Blowhole": 3, "Break": 2}, n_normal=6)
    rc, out, err = run_data(capsys, ["--data", root, "--layout", "folder", *FOLDER_FLAGS])
    assert rc == 0, err
    assert summary(out) == {"blowhole": (3, 1, 2), "break": (2, 1, 1), "good": (6, 4, 2)}
    assert f"product {root.name}  layout folder" in out


def test_folder_layout_from_yaml(make_folder, tmp_path, capsys):
    root = make_folder()
    description = tmp_path / "descriptions" / "tiles.yaml"
    description.parent.mkdir()
    description.write_text(
        "layout: folder\n"
        f"root: ../{root.name}\n"
        "product: tiles\n"
        "normal: MT_Free/Imgs/*.jpg\n"
        "anomalies:\n"
        "  blowhole: MT_Blowhole/Imgs/*.jpg\n"
        "  break: [MT_Break/Imgs/*.jpg]\n"
        "mask: '{parent}/{stem}.png'\n"
        "augment: false\n"
    )
    cfg = DataConfig.from_yaml(description)
    assert cfg.root == str(root.resolve())
    assert cfg.augment is False and cfg.product_name == "tiles"
    rc, out, err = run_data(capsys, ["--data", description])
    assert rc == 0, err
    assert summary(out) == {"blowhole": (3, 1, 2), "break": (2, 1, 1), "good": (6, 4, 2)}
    assert "augment False" in out


def test_folder_mask_pattern_placeholders(make_folder, tmp_path):
    root = make_folder(types={"Blowhole": 2})
    masks = root / "masks" / "blowhole"
    for png in (root / "MT_Blowhole/Imgs").glob("*.png"):
        masks.mkdir(parents=True, exist_ok=True)
        png.rename(masks / f"{png.stem}_gt.png")
    cfg = DataConfig(root=str(root), layout="folder", normal="MT_Free/Imgs/*.jpg",
                     anomalies={"blowhole": "MT_Blowhole/Imgs/*.jpg"}, mask="masks/{type}/{stem}_gt.png")
    anomalies = [s for s in read_dataset(cfg) if not s.is_normal]
    assert [Path(s.mask).name for s in anomalies] == ["exp1_num_0_gt.png", "exp1_num_1_gt.png"]


def test_yaml_unknown_field_is_refused(tmp_path, capsys):
    description = tmp_path / "bad.yaml"
    description.write_text("layout: folder\nnormals: '*.png'\n")
    line = assert_refused(capsys, tmp_path, ["--data", description], description, "unknown key data.normals")
    assert "known keys:" in line


# ----------------------------------------------------------------------------- behaviour fields


@pytest.mark.parametrize("layout", sorted(LAYOUT_PRESETS))
def test_behaviour_comes_from_the_layout_not_the_path(layout, tmp_path):
    # A folder name that the reference would have sniffed ("visa", "3d") changes nothing.
    for name in ("VisA_3d_mvtec", "plain"):
        cfg = DataConfig(root=str(tmp_path / name), layout=layout, normal=["*.png"], anomalies={"a": "*.png"})
        preset = LAYOUT_PRESETS[layout]
        assert (cfg.augment, cfg.guidance, cfg.inside_rule, cfg.mask_rule) == (
            preset["augment"], preset["guidance"], preset["inside_rule"], preset["mask_rule"])


def test_presets_table():
    assert LAYOUT_PRESETS["mvtec"] == dict(augment=True, guidance=8.0, inside_rule="eq1", mask_rule="half",
                                           normalize_mask_targets=False)
    assert LAYOUT_PRESETS["mvtec3d"] == dict(augment=True, guidance=5.0, inside_rule="gt0", mask_rule="half",
                                             normalize_mask_targets=True)
    assert LAYOUT_PRESETS["visa"] == dict(augment=False, guidance=2.0, inside_rule="gt0", mask_rule="nonzero",
                                          normalize_mask_targets=True)


def test_behaviour_flags_override_the_preset(make_mvtec, capsys):
    root = make_mvtec()
    rc, out, _ = run_data(capsys, ["--data", root, "--product", "bottle", "--no-augment", "--guidance", "3",
                                   "--inside-rule", "gt0", "--no-check"])
    assert rc == 0
    assert "augment False  guidance 3.0  inside_rule gt0  mask_rule half" in out


@pytest.mark.parametrize("values, word", [
    (dict(layout="coco"), "--layout"),
    (dict(inside_rule="ge1"), "--inside-rule"),
    (dict(train_fraction=1.0), "--train-fraction"),
    (dict(max_normal_train=0), "--max-normal-train"),
    (dict(layout="folder"), "--normal"),
])
def test_config_errors(values, word, tmp_path):
    with pytest.raises(ConfigError, match=word):
        DataConfig(root=str(tmp_path), **values)


# ----------------------------------------------------------------------------- few-shot split


def table(type_counts: dict[str, int], n_normal_train: int, n_normal_test: int) -> list[Sample]:
    """A sample table with no files behind it (the split only looks at names and partitions)."""
    samples = [Sample(f"/d/{kind}/{i:03d}.png", f"/d/{kind}/{i:03d}_mask.png", "p", kind, "test")
               for kind, n in type_counts.items() for i in range(n)]
    samples += [Sample(f"/d/good/{i:03d}.png", None, "p", "good", "train") for i in range(n_normal_train)]
    samples += [Sample(f"/d/good_test/{i:03d}.png", None, "p", "good", "test") for i in range(n_normal_test)]
    return samples


def test_split_counts_follow_the_spec():
    n = {"a": 1, "b": 2, "c": 3, "d": 5, "e": 6, "f": 10}
    split = few_shot_split(table(n, n_normal_train=70, n_normal_test=4), DataConfig(root="/d"))
    assert split.types == ["a", "b", "c", "d", "e", "f"]
    assert {k: len(v) for k, v in split.train.items()} == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 3}
    assert [Path(s.image).name for s in split.train["f"]] == ["000.png", "001.png", "002.png"]
    assert len(split.normal_train) == 60 and split.unused_normals == 10
    assert [s.image for s in split.normal_train] == [f"/d/good/{i:03d}.png" for i in range(60)]
    trained = {s.image for v in split.train.values() for s in v}
    anomalies = {s.image for s in table(n, 0, 0)}
    normal_test = {f"/d/good_test/{i:03d}.png" for i in range(4)}
    assert sorted(s.image for s in split.test) == sorted((anomalies - trained) | normal_test)
    assert summary_rows(split) == [("a", 1, 1, 0), ("b", 2, 1, 1), ("c", 3, 1, 2), ("d", 5, 1, 4),
                                   ("e", 6, 2, 4), ("f", 10, 3, 7), ("good", 74, 60, 4)]


def test_split_orders_by_file_name_not_path():
    samples = [Sample("/z/001.png", "/m/1.png", "p", "scratch", "test"),
               Sample("/a/002.png", "/m/2.png", "p", "scratch", "test"),
               Sample("/b/003.png", "/m/3.png", "p", "scratch", "test"),
               Sample("/y/010.png", None, "p", "good", "train"),
               Sample("/x/011.png", None, "p", "good", "train")]
    split = few_shot_split(samples, DataConfig(root="/d", max_normal_train=1))
    assert [s.image for s in split.train["scratch"]] == ["/z/001.png"]
    assert [s.image for s in split.normal_train] == ["/y/010.png"]


def test_split_is_deterministic_and_written(tmp_path):
    samples = table({"crack": 7, "hole": 4}, n_normal_train=9, n_normal_test=3)
    cfg = DataConfig(root="/d")
    reference = few_shot_split(samples, cfg)
    for seed in range(3):
        shuffled = samples[:]
        random.Random(seed).shuffle(shuffled)
        assert few_shot_split(shuffled, cfg) == reference
    first, second = write_split(reference, cfg, tmp_path / "a.json"), write_split(reference, cfg, tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    payload = json.loads(first.read_text())
    assert payload["data"] == cfg.to_dict()
    assert Split.from_dict(payload) == reference
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]


def test_split_is_configurable():
    samples = table({"crack": 6}, n_normal_train=9, n_normal_test=0)
    split = few_shot_split(samples, DataConfig(root="/d", train_fraction=0.5, max_normal_train=3))
    assert len(split.train["crack"]) == 3
    assert len(split.normal_train) == 3 and split.unused_normals == 6


def test_split_needs_normal_training_images():
    with pytest.raises(DataError, match="no normal training images"):
        few_shot_split(table({"crack": 3}, n_normal_train=0, n_normal_test=2), DataConfig(root="/d"))


def test_seas_data_prints_the_summary_and_writes_the_split(make_mvtec, tmp_path, capsys):
    root = make_mvtec(types={"broken": 4, "crack": 2}, n_train=5, n_test_good=2)
    target = tmp_path / "split.json"
    args = ["--data", root, "--product", "bottle", "--max-normal-train", "3", "--write-split", target]
    rc, out, err = run_data(capsys, args)
    assert rc == 0, err
    assert summary(out) == {"broken": (4, 1, 3), "crack": (2, 1, 1), "good": (7, 3, 2)}
    assert "2 further normal training images are not used" in out
    assert "warning" not in out
    payload = json.loads(target.read_text())
    assert payload["types"] == ["broken", "crack"]
    assert [Path(s["image"]).name for s in payload["train"]["broken"]] == ["000.png"]
    assert payload["data"]["max_normal_train"] == 3
    rc, _, _ = run_data(capsys, args[:-1] + [tmp_path / "again.json"])
    assert rc == 0 and (tmp_path / "again.json").read_bytes() == target.read_bytes()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_mask(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    image, mask = anomaly_files(layout, root)
    mask.unlink()
    assert_refused(capsys, tmp_path, args, image, "missing mask", str(mask))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_mask_size_differs_from_image(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    _, mask = anomaly_files(layout, root)
    write_mask(mask, size=(SIZE[0] + 2, SIZE[1]))
    assert_refused(capsys, tmp_path, args, mask, "resize the mask", f"{SIZE[0] + 2}x{SIZE[1]}")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unreadable_image(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    image, _ = anomaly_files(layout, root)
    image.write_bytes(b"not an image")
    assert_refused(capsys, tmp_path, args, image, "unreadable")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_truncated_image(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    image = normal_file(layout, root)
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    assert_refused(capsys, tmp_path, args, image, "truncated")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_truncated_mask(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    _, mask = anomaly_files(layout, root)
    write_image(mask, seed=9)  # noisy, so that half of the file holds the header but not the pixels
    data = mask.read_bytes()
    mask.write_bytes(data[: len(data) // 2])
    assert_refused(capsys, tmp_path, args, mask, "truncated")


@pytest.mark.parametrize("layout, folder", [("mvtec", "bottle/test/scratch"), ("mvtec3d", "bagel/test/scratch/rgb")])
def test_empty_anomaly_type(layout, folder, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    (root / folder).mkdir(parents=True)
    assert_refused(capsys, tmp_path, args, root / folder, "anomaly type has no images")


def test_empty_anomaly_type_visa(make_visa, tmp_path, capsys):
    root = make_visa(labels=["chunk of wax missing", " "])
    args = ["--data", root, "--layout", "visa", "--product", "candle"]
    line = assert_refused(capsys, tmp_path, args, root / "candle/image_anno.csv", "empty label")
    assert "candle/Data/Images/Anomaly/001.JPG" in line


def test_visa_image_listed_but_absent(make_visa, tmp_path, capsys):
    root = make_visa()
    image = root / "candle/Data/Images/Normal/0001.JPG"
    image.unlink()
    args = ["--data", root, "--layout", "visa", "--product", "candle"]
    assert_refused(capsys, tmp_path, args, image, "file not found")


def test_visa_annotation_without_its_header(make_visa, tmp_path, capsys):
    root = make_visa()
    anno = root / "candle/image_anno.csv"
    anno.write_text("\n".join(anno.read_text().splitlines()[1:]) + "\n")
    args = ["--data", root, "--layout", "visa", "--product", "candle"]
    assert_refused(capsys, tmp_path, args, anno, "columns image,label,mask")


def test_empty_anomaly_type_folder_layout(make_folder, tmp_path, capsys):
    root = make_folder()
    (root / "MT_Crack/Imgs").mkdir(parents=True)
    args = ["--data", root, "--layout", "folder", *FOLDER_FLAGS, "--anomaly", "crack=MT_Crack/Imgs/*.jpg"]
    assert_refused(capsys, tmp_path, args, root, "no images match --anomaly crack=MT_Crack/Imgs/*.jpg")


@pytest.mark.parametrize("layout", ["mvtec", "mvtec3d", "visa"])
def test_product_not_found(layout, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    args[args.index("--product") + 1] = "nothing"
    line = assert_refused(capsys, tmp_path, args, root / "nothing", "product not found")
    assert PRODUCT[layout] in line  # the products that do exist are listed


def test_dataset_folder_not_found(tmp_path, capsys):
    assert_refused(capsys, tmp_path, ["--data", tmp_path / "missing"], tmp_path / "missing", "not found")


@pytest.mark.parametrize("layout, normals", [
    ("mvtec", ["bottle/train/good", "bottle/test/good"]),
    ("mvtec3d", ["bagel/train/good", "bagel/test/good"]),
])
def test_no_normal_images(layout, normals, request, tmp_path, capsys):
    root, args = make_dataset(request, layout)
    for folder in normals:
        for path in sorted((root / folder).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    product = root / PRODUCT[layout]
    assert_refused(capsys, tmp_path, args, product, "no normal images")


def test_no_normal_images_visa(make_visa, tmp_path, capsys):
    root = make_visa(n_normal=0)
    args = ["--data", root, "--layout", "visa", "--product", "candle"]
    assert_refused(capsys, tmp_path, args, root / "candle", "no normal images")


def test_no_normal_images_folder_layout(make_folder, tmp_path, capsys):
    root = make_folder()
    args = ["--data", root, "--layout", "folder", "--normal", "MT_None/*.jpg", "--anomaly", "break=MT_Break/Imgs/*.jpg"]
    assert_refused(capsys, tmp_path, args, root, "no images match --normal")


def test_no_normal_training_images(make_mvtec, tmp_path, capsys):
    root = make_mvtec(n_train=0, n_test_good=2)
    args = ["--data", root, "--product", "bottle"]
    assert_refused(capsys, tmp_path, args, root, "no normal training images")


def test_bad_anomaly_flag(make_folder, tmp_path, capsys):
    root = make_folder()
    args = ["--data", root, "--layout", "folder", "--normal", "MT_Free/Imgs/*.jpg", "--anomaly", "MT_Break/Imgs/*.jpg"]
    assert_refused(capsys, tmp_path, args, Path("MT_Break/Imgs/*.jpg"), "TYPE=GLOB")


def test_empty_mask_is_reported(make_mvtec, capsys):
    root = make_mvtec()
    mask = root / "bottle/ground_truth/crack/001_mask.png"
    write_mask(mask, box=None)
    rc, out, _ = run_data(capsys, ["--data", root, "--product", "bottle"])
    assert rc == 0
    assert [line for line in out.splitlines() if line.startswith("warning")] == [
        f"warning: {mask}: mask is empty (no defect pixel) for anomaly image {root / 'bottle/test/crack/001.png'}"]


def test_visa_masks_hold_small_label_values(make_visa, capsys):
    root = make_visa(mask_value=2)
    args = ["--data", root, "--layout", "visa", "--product", "candle"]
    rc, out, _ = run_data(capsys, args)
    assert rc == 0 and "mask is empty" not in out  # (the types of 1 image are warned of: nothing held out)
    # The same masks read at half range (0..255) are empty: the preset's "nonzero" matters.
    rc, out, _ = run_data(capsys, [*args, "--mask-rule", "half"])
    assert rc == 0 and out.count("mask is empty") == len(VISA_ANOMALIES)


# ----------------------------------------------------------------------------- conversions


def save(pixels_or_image, path: Path) -> Path:
    image = pixels_or_image if isinstance(pixels_or_image, Image.Image) else Image.fromarray(pixels_or_image)
    image.save(path)
    return path


def test_grayscale_image_becomes_rgb(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = read_rgb(save(gray, tmp_path / "g.png"))
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    assert all((rgb[..., c] == gray).all() for c in range(3))


def test_rgba_image_drops_alpha(tmp_path):
    pixels = np.zeros((3, 4, 4), np.uint8)
    pixels[...] = (10, 20, 30, 0)  # fully transparent: colour is kept, not blended
    rgb = read_rgb(save(pixels, tmp_path / "a.png"))
    assert rgb.shape == (3, 4, 3) and (rgb == (10, 20, 30)).all()


def test_palette_image_becomes_rgb(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    image.putpalette([0, 0, 0, 200, 10, 50] + [0] * 762)
    rgb = read_rgb(save(image, tmp_path / "p.png"))
    assert (rgb[0, 1] == (200, 10, 50)).all() and (rgb[0, 0] == 0).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_image_is_scaled_to_8_bit(suffix, tmp_path):
    path = save(np.array([[0, 257 * 100, 65535]], np.uint16), tmp_path / f"w{suffix}")
    assert Image.open(path).mode.startswith("I")
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb[0, :, 0].tolist() == [0, 100, 255]


def box_mask(value, dtype=np.uint8) -> np.ndarray:
    pixels = np.zeros((8, 8), dtype)
    pixels[2:5, 3:6] = value
    return pixels


@pytest.mark.parametrize("value, dtype", [(1, np.uint8), (255, np.uint8), (65535, np.uint16), (1, np.uint16)])
def test_mask_binarised_at_half_range(value, dtype, tmp_path):
    mask = read_mask(save(box_mask(value, dtype), tmp_path / "m.png"))
    assert mask.dtype == bool and (mask == box_mask(True, bool)).all()


def test_anti_aliased_mask_edges(tmp_path):
    pixels = np.array([[0, 60, 127, 128, 200, 255]], np.uint8)
    mask = read_mask(save(pixels, tmp_path / "aa.png"))
    assert mask.tolist() == [[False, False, False, True, True, True]]


def test_rgb_and_palette_masks(tmp_path):
    rgb = np.repeat(box_mask(255)[..., None], 3, axis=2)
    assert (read_mask(save(rgb, tmp_path / "rgb.png")) == box_mask(True, bool)).all()
    palette = Image.fromarray(box_mask(1), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    assert (read_mask(save(palette, tmp_path / "p.png")) == box_mask(True, bool)).all()


def test_nonzero_mask_rule(tmp_path):
    path = save(box_mask(3), tmp_path / "labels.png")
    assert not read_mask(path, "half").any()
    assert (read_mask(path, "nonzero") == box_mask(True, bool)).all()
    with pytest.raises(DataError, match="mask rule 'otsu'"):
        read_mask(path, "otsu")


def test_converted_files_pass_the_checks(make_mvtec, capsys):
    """A product whose images are grayscale, RGBA, palette or 16-bit and whose masks are 0/1."""
    root = make_mvtec(types={"broken": 3}, n_train=4, n_test_good=0)
    h, w = SIZE[1], SIZE[0]
    train = root / "bottle/train/good"
    save(np.full((h, w), 90, np.uint8), train / "000.png")
    save(np.full((h, w, 4), 90, np.uint8), train / "001.png")
    save(Image.new("P", (w, h)), train / "002.png")
    save(np.full((h, w), 40000, np.uint16), train / "003.png")
    for mask in (root / "bottle/ground_truth/broken").iterdir():
        save(box_mask(1).repeat(2, 0).repeat(3, 1)[:h, :w], mask)
    rc, out, err = run_data(capsys, ["--data", root, "--product", "bottle"])
    assert rc == 0, err
    assert "warning" not in out
    assert summary(out) == {"broken": (3, 1, 2), "good": (4, 4, 0)}


# ----------------------------------------------------------------------------- real data


@needs_magnetic_tile
def test_magnetic_tile_from_flags(capsys):
    args = ["--data", MAGNETIC_TILE, "--layout", "folder", "--normal", "MT_Free/Imgs/*.jpg",
            "--anomaly", "blowhole=MT_Blowhole/Imgs/*.jpg", "--anomaly", "break=MT_Break/Imgs/*.jpg",
            "--anomaly", "uneven=MT_Uneven/Imgs/*.jpg", "--no-check"]
    rc, out, err = run_data(capsys, args)
    assert rc == 0, err
    assert summary(out) == {"blowhole": (115, 38, 77), "break": (85, 28, 57), "uneven": (103, 34, 69),
                            "good": (200, 60, 67)}


@needs_magnetic_tile
def test_magnetic_tile_example_yaml(tmp_path, capsys):
    cfg = DataConfig.from_yaml(EXAMPLE_YAML)
    assert Path(cfg.root) == MAGNETIC_TILE.resolve()
    target = tmp_path / "split.json"
    rc, out, err = run_data(capsys, ["--data", EXAMPLE_YAML, "--write-split", target])
    assert rc == 0, err
    assert summary(out) == {"blowhole": (115, 38, 77), "break": (85, 28, 57), "uneven": (103, 34, 69),
                            "good": (200, 60, 67)}
    # The photographs are single-channel JPEGs; a few "uneven" masks are empty and reported.
    warnings = [line for line in out.splitlines() if line.startswith("warning")]
    assert warnings and all("MT_Uneven" in line and "mask is empty" in line for line in warnings)
    split = Split.from_dict(json.loads(target.read_text()))
    assert split.types == ["blowhole", "break", "uneven"]
    first = split.train["blowhole"][0]
    assert Path(first.mask) == Path(first.image).with_suffix(".png")
    assert read_rgb(first.image).shape[2] == 3
