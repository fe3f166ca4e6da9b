"""Reliability, end to end through the ``seas`` command (docs/RELIABILITY.md).

* crash safety: ``seas train``, ``seas train-mask`` and ``seas generate`` killed with SIGKILL
  (at an arbitrary moment, and at exact moments inside a checkpoint and an export), then
  resumed, end with the artifacts of an uninterrupted run;
* bad input: one test per case of the table, each asserting exit code 2, a one-line message
  that names the file or option, and that nothing was written;
* several processes: training under ``accelerate launch`` and generation under ``torchrun``
  (2 CPU processes, gloo); the generated files equal those of one process.

The uninterrupted references run in this process (one thread, see conftest), the killed runs
in subprocesses with one thread and no GPU: both add floats alike.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import seas.training.loop as training_loop
from seas.cli import main
from seas.errors import RunError
from seas.run import Run
from seas.run import RunFolder
from seas.training.checkpoints import verify_checkpoint

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
SEAS = [sys.executable, "-m", "seas.cli"]
TINY = ["--resolution", "64", "--batch-size", "1", "--grad-accum", "1"]
EXPORTS = ["unet", "text_encoder", "tokenizer", "scheduler", "vae", "model_index.json", "seas_run.json", "split.json"]

# Runs `seas ARGV...` with a SIGKILL at an exact point: "before:NAME" / "after:NAME" of the
# rename that puts a finished checkpoint or export folder NAME in place.
KILL_AT = """
import os, signal, sys
import seas.files.atomic as atomic
import seas.training.checkpoints as checkpoints
point, argv = sys.argv[1], sys.argv[2:]
rename = atomic.replace_dir
def replace_dir(tmp, final):
    if point == "before:" + final.name:
        os.kill(os.getpid(), signal.SIGKILL)
    rename(tmp, final)
    if point == "after:" + final.name:
        os.kill(os.getpid(), signal.SIGKILL)
atomic.replace_dir = replace_dir  # folders written by write_dir (exports)
checkpoints.replace_dir = replace_dir  # checkpoint folders
from seas.cli import main
sys.exit(main(argv))
"""


# ----------------------------------------------------------------------------- helpers


def seas(*argv, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``seas ARGV`` in a new process to its end; fail with its output unless it succeeds."""
    done = subprocess.run([*SEAS, *map(str, argv)], env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def kill_when(ready, *argv, cwd: Path) -> None:
    """Start ``seas ARGV`` and SIGKILL it as soon as ``ready()`` holds (polled every 10 ms)."""
    proc = subprocess.Popen([*SEAS, *map(str, argv)], env=ENV, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def kill_at(point: str, *argv, cwd: Path) -> str:
    """Run ``seas ARGV`` until the exact ``point`` (see KILL_AT) and SIGKILL it there; return its stdout."""
    done = subprocess.run([sys.executable, "-c", KILL_AT, point, *map(str, argv)], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, but the top-level names in ``skip``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def assert_equal_tensors(a_file: Path, b_file: Path) -> None:
    a, b = load_file(a_file), load_file(b_file)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_whole(run: Path) -> None:
    """Nothing under a final name is partial: checkpoints pass their check, JSON files parse."""
    for checkpoint in sorted((run / "checkpoints").glob("[!.]*")):
        verify_checkpoint(checkpoint)
    for path in run.glob("[!.]*.json"):
        json.loads(path.read_text())


def fails(capsys, *argv) -> str:
    """Run ``seas ARGV`` in this process; assert exit code 2 and one error line (the last); return it."""
    code = main([str(a) for a in argv])
    lines = re.split(r"[\r\n]+", capsys.readouterr().err.strip())  # progress bars end lines with \r
    assert code == 2
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines[-5:]
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(launcher: str, *argv, cwd: Path) -> subprocess.CompletedProcess:
    """``seas ARGV`` in 2 CPU processes (gloo) under ``torchrun`` or ``accelerate launch --multi_gpu``
    (which starts them through torch's elastic launcher; without a GPU each takes the CPU)."""
    argv = [str(a) for a in argv]
    if launcher == "torchrun":  # bash -c: torchrun's own parser would take --run, --num as its options
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                   "--no-python", "bash", "-c", shlex.join([*SEAS, *argv])]
    else:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                   "--main_process_port", str(free_port()), "-m", "seas.cli", *argv]
    done = subprocess.run(command, env=ENV, cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reliability")


def train_args(tiny16, product64, *extra) -> list:
    return ["train", "--data", product64, "--base", tiny16, *TINY, *extra]


def seas_here(*argv) -> None:
    assert main([str(a) for a in argv]) == 0


STAGE1 = ["--steps", 6, "--checkpoint-every", 1, "--keep-checkpoints", 3]
GENERATE = ["--type", "hole", "--good", "--num", 6, "--sample-steps", 3, "--batch-size", 2, "--quiet"]


@pytest.fixture(scope="module")
def full_generator(work, tiny16, product64):
    """An uninterrupted stage-1 run: 6 updates, a checkpoint after each."""
    out = work / "full"
    seas_here(*train_args(tiny16, product64, *STAGE1, "--out", out))
    return out


@pytest.fixture(scope="module")
def one_process_generation(work, gen_run):
    out = work / "generated-1"
    seas_here("generate", "--run", gen_run, "--out", out, *GENERATE)
    return out


# ----------------------------------------------------------------------------- crash safety


def test_train_killed_then_resumed_equals_uninterrupted(work, tiny16, product64, full_generator):
    args = [*train_args(tiny16, product64, *STAGE1), "--out", work / "cut"]
    cut = work / "cut"
    # 1. SIGKILL at an arbitrary moment of training, once the third checkpoint exists
    kill_when(lambda: (cut / "checkpoints" / "generator-000003").is_dir(), *args, cwd=work)
    assert not (cut / "seas_run.json").exists()
    assert_whole(cut)
    # 2. the newest checkpoint damaged (truncated weights): skipped, with a message; the resumed
    #    run is SIGKILLed inside its first checkpoint, complete but not yet renamed
    newest = RunFolder(cut).checkpoint_dirs("generator")[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = kill_at(f"before:{newest.name}", *args, "--resume", "latest", cwd=work)
    assert f"checkpoint {newest} is damaged (model.safetensors has 1000 bytes, " in out
    assert "trying the previous one" in out and "resumed from" in out
    assert (cut / "checkpoints" / f".tmp-{newest.name}").is_dir()
    assert RunFolder(cut).checkpoint_dirs("generator")[-1] == newest
    # 3. resumed, then SIGKILLed inside the export: text_encoder/ in place, the marker not written
    kill_at("after:text_encoder", *args, "--resume", "latest", cwd=work)
    assert (cut / "generator-state.json").is_file() and (cut / "text_encoder").is_dir()
    assert not (cut / "seas_run.json").exists()
    assert_whole(cut)
    # 4. resumed again: finishes with the uninterrupted run's artifacts
    seas(*args, "--resume", "latest", cwd=work)
    for part in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert_equal_tensors(full_generator / part, cut / part)
    assert files(full_generator, skip=("checkpoints", "logs")) == files(cut, skip=("checkpoints", "logs"))
    assert temporaries(cut) == []


def test_checkpoint_check_finds_missing_truncated_and_altered_files(tmp_path, unfinished_run):
    checkpoint = unfinished_run / "checkpoints" / "generator-000002"
    assert verify_checkpoint(checkpoint)["step"] == 2
    damages = {  # what is done to a copy -> what the check says
        "optimizer.bin altered: checksum differs": lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:]),
        "optimizer.bin has 10 bytes": lambda f: f.write_bytes(f.read_bytes()[:10]),
        "optimizer.bin missing": Path.unlink,
    }
    for i, (problem, damage) in enumerate(damages.items()):
        copy = shutil.copytree(checkpoint, tmp_path / str(i))
        damage(copy / "optimizer.bin")
        with pytest.raises(RunError, match=problem):
            verify_checkpoint(copy)


def test_train_mask_killed_then_resumed_equals_uninterrupted(work, tiny_run):
    runs = {name: shutil.copytree(tiny_run, work / f"mask-{name}", ignore=shutil.ignore_patterns("checkpoints", "mask*"))
            for name in ("full", "cut")}
    args = ["train-mask", "--steps", 5, "--batch-size", 1, "--checkpoint-every", 1, "--keep-checkpoints", 2]
    seas_here(*args, "--run", runs["full"])
    cut = runs["cut"]
    kill_when(lambda: (cut / "checkpoints" / "mask-000002").is_dir(), *args, "--run", cut, cwd=work)
    assert not (cut / "mask_head.json").exists()
    assert_whole(cut)
    kill_at("after:mask_head", *args, "--run", cut, "--resume", "latest", cwd=work)
    assert (cut / "mask-state.json").is_file() and (cut / "mask_head").is_dir()
    assert not (cut / "mask_head.json").exists()
    seas(*args, "--run", cut, "--resume", "latest", cwd=work)
    head = "mask_head/diffusion_pytorch_model.safetensors"
    assert_equal_tensors(runs["full"] / head, cut / head)
    assert files(runs["full"] / "mask_head") == files(cut / "mask_head")
    assert (runs["full"] / "mask_head.json").read_bytes() == (cut / "mask_head.json").read_bytes()
    assert temporaries(cut) == []


def test_generate_killed_then_rerun_equals_uninterrupted(work, gen_run, one_process_generation):
    cut = work / "generated-cut"
    # killed once 3 anomaly images exist: in the middle of the batch [2, 3]
    kill_when(lambda: len(list((cut / "hole" / "image").glob("[!.]*.png"))) >= 3,
              "generate", "--run", gen_run, "--out", cut, *GENERATE, cwd=work)
    assert not (cut / "manifest.jsonl").exists()  # written when the work is done, never partial
    for png in cut.rglob("[!.]*.png"):
        Image.open(png).verify()
    seas("generate", "--run", gen_run, "--out", cut, *GENERATE, cwd=work)
    assert files(one_process_generation) == files(cut)  # images, masks, manifest, settings: byte-identical


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def data(tmp_path, product64):
    """A private copy of the synthetic product, to damage."""
    return shutil.copytree(product64, tmp_path / "data")


def train_fails(capsys, tiny16, data: Path, out: Path, *extra) -> str:
    before = files(data)
    message = fails(capsys, *train_args(tiny16, data, "--steps", 1, "--out", out, *extra))
    assert files(data) == before and not out.exists()
    return message


def test_missing_mask(capsys, tmp_path, tiny16, data):
    (data / "ground_truth" / "scratch" / "002_mask.png").unlink()
    message = train_fails(capsys, tiny16, data, tmp_path / "run")
    assert message == (f"error: {data}/test/scratch/002.png: missing mask {data}/ground_truth/scratch/002_mask.png; "
                       "add it (0 = normal, 255 = defect) or remove the image")


def test_mismatched_mask(capsys, tmp_path, tiny16, data):
    mask = data / "ground_truth" / "hole" / "000_mask.png"
    Image.new("L", (32, 32)).save(mask)
    message = train_fails(capsys, tiny16, data, tmp_path / "run")
    assert message.startswith(f"error: {mask}: mask is 32x32 but its image ")
    assert message.endswith("is 64x64; resize the mask to the image size")


def test_unreadable_image(capsys, tmp_path, tiny16, data):
    image = data / "train" / "good" / "001.png"
    image.write_bytes(image.read_bytes()[:100])
    message = train_fails(capsys, tiny16, data, tmp_path / "run")
    assert message.startswith(f"error: {image}: unreadable or truncated image")
    assert message.endswith("re-export the file or remove it from the dataset")


def test_empty_type(capsys, tmp_path, tiny16, data):
    for image in (data / "test" / "stain").iterdir():
        image.unlink()
    message = train_fails(capsys, tiny16, data, tmp_path / "run")
    assert message == f"error: {data}/test/stain: anomaly type has no images; add its images or remove the empty folder"


def test_unknown_type_at_generation(capsys, tmp_path, gen_run):
    for option in (["--type", "dent"], ["--mix", "hole+dent"]):
        message = fails(capsys, "generate", "--run", gen_run, "--out", tmp_path / "g", *option, "--num", 1)
        assert message == (f"error: {option[0]} dent: the run {gen_run} has no such type; "
                           "choose from hole, scratch, stain (or --type all)")
    assert not (tmp_path / "g").exists()


@pytest.fixture(scope="module")
def unfinished_run(work, tiny16, product64):
    """A stage-1 run stopped after its checkpoint at step 2 of 6 (same options as ``train_args``)."""
    out = work / "unfinished"
    real = training_loop.save_checkpoint

    def save_then_stop(*args):
        real(*args)
        raise KeyboardInterrupt

    training_loop.save_checkpoint = save_then_stop
    try:
        # seas says what is kept and how to resume, in one line, and exits 130
        assert main([str(a) for a in train_args(tiny16, product64, "--steps", 6, "--checkpoint-every", 2,
                                                "--out", out)]) == 130
    finally:
        training_loop.save_checkpoint = real
    return out


@pytest.mark.parametrize("command", ["train-mask", "generate"])
def test_run_is_not_a_finished_run(capsys, tmp_path, command, unfinished_run, product64, gen_run):
    extra = ["--type", "all", "--out", tmp_path / "g"] if command == "generate" else []
    expected = {  # each names a command that 'seas train' accepts for the folder
        unfinished_run: (f"stage 1 has not finished here (no seas_run.json); continue it with 'seas train --out "
                         f"{unfinished_run} --resume latest' and the options it was started with"),
        product64: ("not a SeaS run (no seas_run.json); give the --out folder of a finished 'seas train' (this folder "
                    "holds other files, so 'seas train' will not write here either)"),
    }
    for run in (unfinished_run, product64):
        before = files(run)
        message = fails(capsys, command, "--run", run, *extra)
        assert message == f"error: --run {run}: {expected[run]}"
        assert files(run) == before
    if command == "generate":  # stage 1 finished, stage 2 not
        bare = shutil.copytree(gen_run, tmp_path / "bare", ignore=shutil.ignore_patterns("mask*", "generated"))
        message = fails(capsys, command, "--run", bare, *extra)
        assert message == f"error: --run {bare}: has no trained mask head; run 'seas train-mask --run {bare}' first"
        assert not (tmp_path / "g").exists()


def test_checkpoint_from_another_backbone(capsys, tmp_path, tiny16, product64, unfinished_run):
    from seas.model.backbone import build_tiny_components, save_components

    other = save_components(build_tiny_components(seed=1, width=16), tmp_path / "other")
    args = train_args(other, product64, "--steps", 6, "--checkpoint-every", 2)
    before = files(unfinished_run)
    message = fails(capsys, *args, "--out", unfinished_run, "--resume", "latest")
    assert message == (f"error: --resume latest: {unfinished_run} was started with other options "
                       f"(--base was {tiny16}, now {other}); repeat the original options or choose another --out")
    checkpoint = unfinished_run / "checkpoints" / "generator-000002"
    message = fails(capsys, *args, "--out", tmp_path / "new", "--resume", checkpoint)
    assert message == (f"error: --resume {checkpoint}: checkpoint {checkpoint} was taken with other options "
                       f"(--base was {tiny16}, now {other}); repeat the original options or start a new run")
    assert files(unfinished_run) == before and not (tmp_path / "new").exists()


def test_out_holds_another_run(capsys, tmp_path, tiny16, product64, gen_run, one_process_generation):
    cases = [  # (command, the folder given as --out, the message's end)
        (train_args(tiny16, product64, "--steps", 1), gen_run,
         "holds a finished generator run; choose another --out or pass --overwrite"),
        (train_args(tiny16, product64, "--steps", 1), one_process_generation,
         "not empty and not a SeaS generator run (holds generation.json, good, hole); choose a new folder"),
        (["generate", "--run", gen_run, "--good", "--num", 1], gen_run,
         "not empty and not a 'seas generate' folder; choose a new --out"),
        (["generate", "--run", gen_run, "--good", "--num", 2, "--sample-steps", 3], one_process_generation,
         (f"holds outputs generated with a different --type/--good/--mix, --num (see {one_process_generation}"
          "/generation.json); choose a new --out or repeat the original options")),
    ]
    for argv, out, end in cases:
        before = files(out)
        assert fails(capsys, *argv, "--out", out) == f"error: --out {out}: {end}"
        assert files(out) == before


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "0"], "--steps 0: must be at least 1"),
    (["train", "--batch-size", "-1"], "--batch-size -1: must be at least 1"),
    (["train", "--checkpoint-every", "0"], "--checkpoint-every 0: must be at least 1"),
    (["train-mask", "--steps", "0"], "--steps 0: must be at least 1"),
    (["generate", "--num", "0"], "--num 0: must be at least 1"),
    (["generate", "--sample-steps", "-2"], "--sample-steps -2: must be at least 1"),
    (["generate", "--batch-size", "0"], "--batch-size 0: must be at least 1"),
])
def test_counts_and_steps_must_be_positive(capsys, tmp_path, tiny16, product64, gen_run, argv, message):
    command, *option = argv
    before = files(gen_run)
    if command == "train":
        argv = ["train", "--data", product64, "--base", tiny16, "--resolution", 64, *option, "--out", tmp_path / "o"]
    elif command == "train-mask":
        argv = ["train-mask", "--run", gen_run, *option]
    else:
        argv = ["generate", "--run", gen_run, "--good", *option, "--out", tmp_path / "o"]
    assert fails(capsys, *argv) == f"error: {message}"
    assert not (tmp_path / "o").exists() and files(gen_run) == before


def test_resolution_not_divisible_by_the_backbone_factor(capsys, tmp_path, tiny16, data):
    message = train_fails(capsys, tiny16, data, tmp_path / "run", "--resolution", 72)
    assert message == (f"error: --resolution 72 is not a positive multiple of 64 (VAE factor 8 x U-Net "
                       f"down-sampling) for backbone {tiny16}; use e.g. 64")


def test_out_of_disk_space_while_training(capsys, monkeypatch, tmp_path, tiny16, product64, unfinished_run):
    run = shutil.copytree(unfinished_run, tmp_path / "run")
    before = files(run, skip=("logs",))

    def disk_full(obj, f, *args, **kwargs):  # what torch.save does on a full disk
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", disk_full)
    message = fails(capsys, *train_args(tiny16, product64, "--steps", 6, "--checkpoint-every", 2),
                    "--out", run, "--resume", "latest")
    target = run / "checkpoints" / "generator-000004"
    assert message.startswith(f"error: cannot write {target}: [enforce fail at inline_container.cc:672] ")
    assert message.endswith("free on that disk); free space or choose another --out")
    assert files(run, skip=("logs",)) == before  # earlier checkpoints, state and split untouched
    assert temporaries(run) == [] and not target.exists()


def test_out_of_disk_space_while_generating(capsys, monkeypatch, tmp_path, gen_run):
    out = tmp_path / "g"
    argv = ["generate", "--run", gen_run, "--out", out, "--good", "--num", 3, "--sample-steps", 2, "--quiet"]
    assert main([str(a) for a in argv]) == 0
    (out / "good" / "image" / "002.png").unlink()  # to be made again by the next run
    before = files(out)
    real_save = Image.Image.save

    def disk_full(self, fp, *args, **kwargs):
        if str(fp).endswith(".tmp"):
            Path(fp).write_bytes(b"\x89PNG partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full)
    message = fails(capsys, *argv)
    assert message == (f"error: cannot write {out}/good/image/002.png: No space left on device; "
                       "free space or choose another --out")
    after = files(out)
    assert {name: after[name] for name in before} == before  # previous outputs untouched
    assert set(after) - set(before) <= {"manifest.rank0.jsonl"}  # at most the journal of finished outputs
    assert temporaries(out) == []


@pytest.mark.parametrize("command", ["train", "generate"])
def test_unwritable_output_folder(capsys, monkeypatch, tmp_path, tiny16, product64, gen_run, command):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # simulated: this suite may run as root, which ignores modes
        if locked in Path(self).absolute().parents:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    out = locked / "out"
    if command == "train":
        argv = train_args(tiny16, product64, "--steps", 1, "--out", out)
    else:
        argv = ["generate", "--run", gen_run, "--good", "--num", 1, "--out", out]
    assert fails(capsys, *argv) == f"error: cannot write {out}: Permission denied; free space or choose another --out"
    assert list(locked.iterdir()) == []


# ----------------------------------------------------------------------------- several processes


def test_two_process_training_exports_once(work, tiny16, product64):
    out = work / "two-processes"
    args = train_args(tiny16, product64, "--steps", 4, "--checkpoint-every", 2, "--keep-checkpoints", 2)
    two_processes("accelerate", *args, "--out", out, cwd=work)
    (checkpoint,) = RunFolder(out).checkpoint_dirs("generator")  # step 2 (step 4 is the export)
    verify_checkpoint(checkpoint)
    assert sorted(p.name for p in checkpoint.glob("random_states_*")) == ["random_states_0.pkl", "random_states_1.pkl"]
    assert Run.load(out).types == ["hole", "scratch", "stain"]
    assert temporaries(out) == []


def test_two_process_augment_equals_one_process(work, gen_run, product64):
    """``seas augment`` under torchrun: the processes share the batches and the folder equals one
    process's, byte for byte."""
    args = ["augment", "--run", gen_run, "--images", product64 / "train" / "good", "--placement", "real-masks",
            "--type", "hole,scratch", "--num-per-image", 2, "--sample-steps", 2, "--batch-size", 2, "--quiet"]
    seas_here(*args, "--out", work / "augment-1")
    two_processes("torchrun", *args, "--out", work / "augment-2", cwd=work)
    assert len((work / "augment-2" / "manifest.jsonl").read_text().splitlines()) == 8
    assert files(work / "augment-1") == files(work / "augment-2")


def test_two_process_generation_equals_one_process(work, gen_run, one_process_generation):
    out = work / "generated-2"
    two_processes("torchrun", "generate", "--run", gen_run, "--out", out, *GENERATE, cwd=work)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    keys = [(row["kind"], row["index"]) for row in rows]
    assert keys == [(kind, i) for kind in ("good", "hole") for i in range(6)]  # none missing, none twice
    assert files(one_process_generation) == files(out)  # byte-identical, manifest and settings included
