"""A user's own data, safely (docs/RELIABILITY.md, docs/DATA.md), end to end through ``seas``:

* every input and the output folder are checked before any work, and every problem is
  reported in one list (``error: N problems:`` and one line each), exit 2, nothing written;
* a glob that matches the dataset's masks is refused, naming the pattern;
* an ``--out`` that holds the dataset is refused; a demo deletes only what it wrote, and an
  interrupted demo runs again into its folder;
* a long stage 1 on a CPU says how long first; the demo's summary counts empty masks apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import write_image, write_mask

import seas.cli.demo as demo
import seas.files.checks as checks
import seas.training.estimates as estimates
import seas.training.stage1 as stage1
from seas.cli import main
from seas.files.checks import MAX_SHOWN, format_problems

TINY = ["--resolution", "64", "--batch-size", "1", "--grad-accum", "1", "--steps", "1"]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys, *argv) -> list[str]:
    """Run ``seas ARGV``: exit 2, stderr is ``error: ...`` (one line, or a list); return its lines."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert not any("Traceback" in line for line in lines)
    assert [line for line in lines if line.startswith("error: ")] == lines[:1], lines
    return lines


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def no_model_load(monkeypatch) -> None:
    """Fail the test if stage 1 gets as far as loading its base model."""
    def load(*args, **kwargs):
        raise AssertionError("the base model was loaded before the inputs were refused")

    monkeypatch.setattr(stage1, "prepare_backbone", load)


@pytest.fixture
def data(tmp_path, product64):
    """A private copy of the synthetic product (types hole, scratch, stain; 3 images each)."""
    return shutil.copytree(product64, tmp_path / "data")


# ----------------------------------------------------------------------------- all problems at once


def test_two_broken_images_are_reported_together(capsys, monkeypatch, tmp_path, tiny16, data):
    no_model_load(monkeypatch)
    broken = [data / "test/scratch/000.png", data / "train/good/001.png"]  # both used for training
    for path in broken:
        truncate(path)
    before = files(data)
    out = tmp_path / "run"
    lines = refused(capsys, "train", "--data", data, "--base", tiny16, *TINY, "--out", out)
    assert lines[0] == "error: 2 problems:"
    assert len(lines) == 3
    for path, line in zip(broken, lines[1:]):
        assert line.startswith(f"  {path}: unreadable or truncated image")
        assert line.endswith("re-export the file or remove it from the dataset")
    assert not out.exists() and files(data) == before
    # seas data finds the same two, and writes no split
    lines = refused(capsys, "data", "--data", data, "--write-split", tmp_path / "split.json")
    assert lines[0] == "error: 2 problems:" and not (tmp_path / "split.json").exists()


def test_problems_of_every_kind_in_one_list(capsys, monkeypatch, tmp_path, data):
    no_model_load(monkeypatch)
    (data / "ground_truth/hole/000_mask.png").unlink()  # a missing mask (reader)
    truncate(data / "train/good/000.png")  # a broken training image (decoder)
    base = tmp_path / "no-such-model"
    lines = refused(capsys, "train", "--data", data, "--base", base, *TINY, "--out", tmp_path / "run")
    assert lines[0] == "error: 3 problems:"
    assert lines[1].startswith(f"  --base {base}: not found")
    assert lines[2].startswith(f"  {data}/test/hole/000.png: missing mask {data}/ground_truth/hole/000_mask.png")
    assert lines[3].startswith(f"  {data}/train/good/000.png: unreadable or truncated image")
    assert not (tmp_path / "run").exists()


def test_a_broken_test_image_stops_the_demo_before_its_first_stage(capsys, tmp_path, data):
    test_image = data / "test/stain/002.png"  # held out: only the evaluation reads it
    truncate(test_image)
    before = files(data)
    out = tmp_path / "demo"
    lines = refused(capsys, "demo", "--quick", "--data", data, "--out", out)
    assert len(lines) == 1 and lines[0].startswith(f"error: {test_image}: unreadable or truncated image")
    assert not out.exists() and files(data) == before


def test_long_lists_are_cut_at_the_limit():
    problems = [f"f{i}.png: unreadable" for i in range(MAX_SHOWN + 5)]
    lines = format_problems(problems).splitlines()
    assert lines[0] == f"{MAX_SHOWN + 5} problems:" and len(lines) == MAX_SHOWN + 2
    assert lines[-1].startswith("  ... and 5 more")
    assert format_problems(problems[:1]) == "f0.png: unreadable"  # one problem stays one line


# ----------------------------------------------------------------------------- globs that match masks


def test_a_glob_matching_the_masks_is_refused(capsys, tmp_path, make_folder):
    root = make_folder()  # MT_<Type>/Imgs/<stem>.jpg with <stem>.png masks beside them
    out = tmp_path / "out"
    out.mkdir()
    pattern = "MT_Blowhole/Imgs/*"
    lines = refused(capsys, "data", "--data", root, "--layout", "folder", "--normal", "MT_Free/Imgs/*.jpg",
                    "--anomaly", f"blowhole={pattern}", "--anomaly", "break=MT_Break/Imgs/*.jpg",
                    "--write-split", out / "split.json")
    assert len(lines) == 1
    assert lines[0].startswith(f"error: --anomaly blowhole={pattern}: matches mask files of the dataset too "
                               f"(3 files, e.g. {root}/MT_Blowhole/Imgs/exp1_num_0.png, the mask of exp1_num_0.jpg")
    assert lines[0].endswith(f"end the pattern with the images' suffix, e.g. '{pattern}.jpg', or fix --mask")
    assert list(out.iterdir()) == []
    # the normal images' folder holds (empty) masks too
    lines = refused(capsys, "data", "--data", root, "--layout", "folder", "--normal", "MT_Free/Imgs/*",
                    "--anomaly", "break=MT_Break/Imgs/*.jpg")
    assert len(lines) == 1 and lines[0].startswith("error: --normal MT_Free/Imgs/*: matches mask files")


def test_anomaly_images_whose_mask_is_themselves_are_refused(capsys, fresh_dir):
    root = fresh_dir("png")
    for i in range(3):
        write_image(root / "good" / f"{i}.png", seed=i)
        write_image(root / "bad" / f"{i}.png", seed=10 + i)
        write_mask(root / "masks" / f"{i}.png")
    lines = refused(capsys, "data", "--data", root, "--layout", "folder", "--normal", "good/*.png",
                    "--anomaly", "dent=bad/*.png")  # the default --mask {parent}/{stem}.png is the image
    assert len(lines) == 1
    assert lines[0].startswith(f"error: --anomaly dent=bad/*.png: matches mask files of the dataset too (3 files, "
                               f"e.g. {root}/bad/0.png, whose mask is itself by --mask '{{parent}}/{{stem}}.png')")
    assert main(["data", "--data", str(root), "--layout", "folder", "--normal", "good/*.png", "--anomaly",
                 "dent=bad/*.png", "--mask", "{root}/masks/{stem}.png"]) == 0  # the right pattern is accepted
    assert "dent" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the dataset is never an output


def previous_demo(folder: Path, created: list[str] | None) -> None:
    """A demo folder as a finished (or, with ``created`` listing more, interrupted) demo leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": "seas-demo-2", "status": "running"} | ({"created": created} if created is not None else {})
    (folder / "demo.json").write_text(json.dumps(record))


def test_out_holding_the_data_is_refused_and_nothing_deleted(capsys, tmp_path, product64):
    old = tmp_path / "old"
    data = shutil.copytree(product64, old / "data" / "tile")  # the case: a previous demo's data
    previous_demo(old, ["data", "base", "run", "evaluation"])
    (old / "run").mkdir()
    before = files(old)
    for out in (old, old / "data" / "tile"):
        lines = refused(capsys, "demo", "--quick", "--data", data, "--out", out)
        what = "is" if out == data else "contains"
        assert lines == [f"error: --out {out}: {what} the dataset --data {data}; choose an --out outside the dataset"]
        assert files(old) == before and (old / "run").is_dir()
    # an --out inside the dataset: training would mix its files into the data
    lines = refused(capsys, "train", "--data", data, "--base", "tiny", *TINY, "--out", data / "run")
    assert lines == [f"error: --out {data / 'run'}: lies inside the dataset --data {data}; choose an --out outside "
                     "the dataset"]
    assert files(old) == before


def test_yaml_description_root_counts_as_the_data(capsys, tmp_path, make_folder):
    root = make_folder()
    description = tmp_path / "tile.yaml"
    description.write_text(f"layout: folder\nroot: {root}\nnormal: MT_Free/Imgs/*.jpg\n"
                           "anomalies:\n  blowhole: MT_Blowhole/Imgs/*.jpg\n")
    before = files(root)
    lines = refused(capsys, "demo", "--quick", "--data", description, "--out", root.parent)
    assert lines == [f"error: --out {root.parent}: contains the dataset --data {root}; choose an --out outside "
                     "the dataset"]
    assert files(root) == before


def test_interrupted_demo_runs_again_into_its_folder(capsys, monkeypatch, tmp_path):
    out = tmp_path / "demo"
    previous_demo(out, ["data", "base", "run"])  # stopped during stage 1: no evaluation yet
    (out / "base" / "unet").mkdir(parents=True)
    (out / "base" / "unet" / "partial.bin").write_bytes(b"half")
    (out / "run" / ".tmp-unet").mkdir(parents=True)
    (out / ".demo.json.tmp").write_text("{")
    (out / "notes.txt").write_text("mine")  # not the demo's: kept

    class Stop(Exception):
        pass

    def stage_one(*args, **kwargs):  # stopped again, in stage 1
        raise Stop

    with monkeypatch.context() as patch:
        patch.setattr(stage1, "train_generator", stage_one)
        with pytest.raises(Stop):
            main(["demo", "--quick", "--out", str(out)])
    # the old demo's base is gone (the synthetic product starts from the shipped base, unadapted)
    assert sorted(p.name for p in out.iterdir()) == ["data", "demo.json", "notes.txt"]
    marker = json.loads((out / "demo.json").read_text())
    assert marker["status"] == "running" and marker["created"] == ["data", "run", "evaluation", "base"]
    capsys.readouterr()

    assert main(["demo", "--quick", "--out", str(out)]) == 0  # and once more, to its end
    assert sorted(p.name for p in out.iterdir()) == ["data", "demo.json", "evaluation", "notes.txt", "run"]
    assert (out / "notes.txt").read_text() == "mine"
    marker = json.loads((out / "demo.json").read_text())
    assert marker["status"] == "finished" and marker["created"] == ["data", "run", "evaluation"]
    printed = capsys.readouterr().out
    for kind in ("hole", "scratch", "stain"):
        assert re.search(rf"^{kind}: 2 generated, (\d) with a mask, (\d) empty$", printed, re.M), printed
    counts = json.loads((out / "evaluation" / "metrics.json").read_text())["generated"]
    for kind in ("hole", "scratch", "stain"):
        assert f"{kind}: 2 generated, {counts[kind]['with_mask']} with a mask, {counts[kind]['empty_masks']} empty" in printed


def test_demo_replaces_only_what_it_recorded(capsys, tmp_path):
    out = tmp_path / "demo"
    previous_demo(out, None)  # a demo of an earlier version: its marker lists nothing
    (out / "data" / "tile").mkdir(parents=True)
    (out / "data" / "tile" / "mine.png").write_bytes(b"user data")
    before = files(out)
    lines = refused(capsys, "demo", "--quick", "--out", out)  # the synthetic product would go to data/
    assert lines == [f"error: --out {out}: holds data, which the previous demo there did not write; move it away "
                     "or choose a new folder"]
    assert files(out) == before


# ----------------------------------------------------------------------------- output folders


def test_read_only_output_folder_found_before_training(capsys, monkeypatch, tmp_path, tiny16, data):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes into a read-only folder (root): see the simulated test below")
        no_model_load(monkeypatch)
        lines = refused(capsys, "train", "--data", data, "--base", tiny16, *TINY, "--out", locked)
        assert lines == [f"error: --out {locked}: is not writable; choose a writable --out or fix the folder's "
                         "permissions"]
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("command", ["train", "generate", "demo"])
def test_unwritable_output_folder_found_before_work(capsys, monkeypatch, tmp_path, tiny16, data, gen_run, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # simulated: the suite may run as root, which ignores folder modes
    monkeypatch.setattr(checks.os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    no_model_load(monkeypatch)
    monkeypatch.setattr(demo, "prepare_out", lambda *a: pytest.fail("the demo started"))
    out = locked / "out"
    argv = {
        "train": ["train", "--data", data, "--base", tiny16, *TINY, "--out", out],
        "generate": ["generate", "--run", gen_run, "--good", "--num", 1, "--out", out],
        "demo": ["demo", "--quick", "--out", out],
    }[command]
    lines = refused(capsys, *argv)
    assert lines == [f"error: --out {out}: cannot be created ({locked} is not writable); choose a writable --out or "
                     "fix the folder's permissions"]
    assert list(locked.iterdir()) == []


def test_too_little_free_space_found_before_generating(capsys, monkeypatch, tmp_path, gen_run):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: usage._replace(free=2**20))
    out = tmp_path / "g"
    lines = refused(capsys, "generate", "--run", gen_run, "--type", "all", "--num", 100, "--out", out)
    # 100 outputs x 3 types x 3 files x 64 x 64 x 3 bytes
    assert lines == [f"error: --out {out}: needs about 10.5 MiB for its outputs, 1.0 MiB free on that disk; "
                     "free space or choose another --out"]
    assert not out.exists()


def test_generate_lists_a_wrong_type_and_an_unwritable_out_together(capsys, monkeypatch, tmp_path, gen_run):
    real_access = os.access
    monkeypatch.setattr(checks.os, "access", lambda path, mode: tmp_path not in [Path(path), *Path(path).parents]
                        and real_access(path, mode))
    lines = refused(capsys, "generate", "--run", gen_run, "--type", "dent", "--out", tmp_path / "g")
    assert lines[0] == "error: 2 problems:"
    assert lines[1].startswith("  --type dent: the run") and "is not writable" in lines[2]


def test_evaluate_check_finds_a_broken_test_image_and_an_unwritable_out(monkeypatch, tmp_path, tiny16, data):
    """The check ``seas evaluate`` runs before its segmenters train (seas.cli.options.check_evaluate_inputs)."""
    from seas.cli.options import check_evaluate_inputs
    from seas.config import TrainConfig
    from seas.data.config import DataConfig
    from seas.errors import SeasError

    run = stage1.train_generator(DataConfig(root=str(data), layout="mvtec"),
                                 TrainConfig(base=str(tiny16), resolution=64, batch_size=1, grad_accum=1, steps=1),
                                 tmp_path / "run")
    check_evaluate_inputs(run, tmp_path / "evaluation")  # all well
    truncate(data / "test/hole/002.png")  # held out: training never read it
    real_access = os.access
    monkeypatch.setattr(checks.os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    with pytest.raises(SeasError) as caught:
        check_evaluate_inputs(run, tmp_path / "evaluation")
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 problems:"
    assert lines[1].startswith(f"  {data}/test/hole/002.png: unreadable or truncated image")
    assert lines[2].startswith(f"  --out {tmp_path / 'evaluation'}: cannot be created")
    assert not (tmp_path / "evaluation").exists()


# ----------------------------------------------------------------------------- no silent hours, honest summaries


def test_long_cpu_training_says_how_long_first(capsys, monkeypatch, tmp_path, tiny16, data):
    monkeypatch.setattr(estimates, "base_bytes", lambda base: 4 * 2**30)  # as if SD 1.5
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(stage1, "prepare_backbone", stop)
    with pytest.raises(Stop):  # default steps: 800 per type x 3 types, batch 2, 2 micro-batches per update
        main(["train", "--data", str(data), "--base", str(tiny16), "--resolution", "512", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert re.fullmatch(r"note: stage 1 runs 2400 updates at 512 px on a CPU: about (\d+) hours .*; use "
                        r"--steps/--resolution or a GPU\n", err), err
    assert int(re.search(r"about (\d+) hours", err).group(1)) == round(2400 * 2 * (4 + 25 * 4) / 3600)
    with pytest.raises(Stop):  # short runs say nothing
        main(["train", "--data", str(data), "--base", str(tiny16), *TINY, "--out", str(tmp_path / "r2")])
    assert capsys.readouterr().err == ""


def test_demo_summary_counts_empty_masks_apart(capsys, tmp_path):
    metrics = {"generated": {"hole": {"rows": 12, "used": 12, "with_mask": 9, "empty_masks": 3},
                             "good": {"rows": 4, "used": 4, "with_mask": 0, "empty_masks": 0}}}
    evidence = {"attention_pixel_auroc": 0.9, "mask_head_pixel_auroc": 0.8, "mask_head_pixel_ap": 0.5}
    demo.print_summary(tmp_path, metrics, evidence, {"generation": 1.0})
    printed = capsys.readouterr().out.splitlines()
    assert "hole: 12 generated, 9 with a mask, 3 empty" in printed
    assert "good: 4 generated (normal images, no masks)" in printed


def test_bootstrap_reports_a_broken_normal_image_and_an_out_inside_the_data_together(capsys, data):
    truncate(data / "train/good/001.png")
    before = files(data)
    out = data / "base"
    lines = refused(capsys, "bootstrap", "--data", data, "--out", out, "--vae-steps", 1, "--unet-steps", 1)
    assert lines[0] == "error: 2 problems:"
    assert any(f"{data}/train/good/001.png: unreadable or truncated image" in line for line in lines[1:])
    assert any(line.startswith(f"  --out {out}") for line in lines[1:])
    assert not out.exists() and files(data) == before
