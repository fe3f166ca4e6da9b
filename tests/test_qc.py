"""Quality control of generated pairs (``seas generate --qc score|filter``): the judge learned from
a run's real training pairs, and the filtering folder writer (rejections kept apart, resumable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import seas.generation.folder as folder
from seas.config import GenerationConfig
from seas.data.transforms import sample_uint8
from seas.errors import RunError
from seas.generation.folder import generate_to_folder
from seas.generation.generated import REJECTED
from seas.judge.qc import Judge, build_judge
from seas.run import Run

FAST = dict(steps=2, guidance=2.0, batch_size=2)


# ----------------------------------------------------------------------------- the real judge


@pytest.fixture(scope="module")
def judge(gen_run):
    return build_judge(Run.load(gen_run), seed=0, steps=150)


def test_judge_keeps_right_pairs_and_rejects_wrong_ones(judge, gen_run, tmp_path):
    run = Run.load(gen_run)
    read = lambda s: sample_uint8(s.image, s.mask, 64, run.data.fit, run.data.mask_rule)  # noqa: E731
    for name in run.types:
        for sample in run.split.train[name]:
            image, mask = read(sample)
            ok, reasons = judge.decide(judge.score(image, mask, name), name)
            assert ok, (name, reasons)  # a real training pair is right by definition
            other = next(t for t in run.types if t != name)
            ok, reasons = judge.decide(judge.score(image, mask, other), other)
            assert not ok and any("classifier probability" in r for r in reasons)  # the wrong type
            ok, reasons = judge.decide(judge.score(image, np.zeros_like(mask), name), name)
            assert not ok and "empty mask" in reasons  # no mask
    normal = sample_uint8(run.references[0], None, 64, run.data.fit, run.data.mask_rule)[0]
    claimed = np.zeros((64, 64), bool)
    claimed[20:30, 20:30] = True
    ok, reasons = judge.decide(judge.score(normal, claimed, "hole"), "hole")
    assert not ok  # a mask on a defect-free surface shows no hole
    assert judge.decide(judge.score(normal, None, "good"), "good")[0]
    # a mixture is judged on the sum of its types' probabilities
    image, mask = read(run.split.train["hole"][0])
    assert judge.decide(judge.score(image, mask, "hole+scratch"), "hole+scratch")[0]
    # saved and loaded: the same decisions
    judge.save(tmp_path / "judge.pt")
    again = Judge.load(tmp_path / "judge.pt")
    assert again.score(image, mask, "hole") == judge.score(image, mask, "hole")


# ----------------------------------------------------------------------------- the filter


class ParityJudge:
    """Accepts an image when the sum of its pixels is even: a deterministic, image-dependent rule."""

    def score(self, image, mask, kind, reference=None):
        return {"parity": float(int(np.asarray(image, dtype=np.int64).sum()) % 2)}

    def decide(self, scores, kind):
        return (True, []) if scores["parity"] == 0 else (False, ["odd pixel sum"])


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def parity(monkeypatch):
    monkeypatch.setattr(folder, "_judge", lambda *args: ParityJudge())


def test_filter_keeps_the_first_accepted_candidates_and_the_rejected_apart(parity, gen_run, tmp_path):
    free = generate_to_folder(gen_run, tmp_path / "all", ["hole"], GenerationConfig(num=12, **FAST), progress=False)
    judge = ParityJudge()
    images = [np.asarray(Image.open(free / r["image"]).convert("RGB")) for r in rows(free / "manifest.jsonl")]
    verdicts = [judge.decide(judge.score(image, None, "hole"), "hole")[0] for image in images]
    wanted = [i for i, ok in enumerate(verdicts) if ok][:3]
    assert len(wanted) == 3, "the parity rule should accept some of 12 candidates"

    out = generate_to_folder(gen_run, tmp_path / "f", ["hole"], GenerationConfig(num=3, qc="filter", **FAST),
                             progress=False)
    kept = rows(out / "manifest.jsonl")
    assert [r["index"] for r in kept] == wanted
    assert all(r["qc"]["accepted"] and r["image"].startswith("hole/") for r in kept)
    dropped = rows(out / REJECTED)
    assert [r["index"] for r in dropped] == [i for i in range(wanted[-1]) if not verdicts[i]]
    assert all(r["qc"]["reasons"] == ["odd pixel sum"] and r["image"].startswith("rejected/hole/") for r in dropped)
    for r in kept + dropped:  # the candidate keeps its index: the same image as without QC
        assert (out / r["image"]).read_bytes() == (free / f"hole/image/{r['index']:03d}.png").read_bytes()


def test_filter_stops_at_the_cap_with_a_clear_error(monkeypatch, gen_run, tmp_path):
    class Nothing(ParityJudge):
        def decide(self, scores, kind):
            return False, ["never"]

    monkeypatch.setattr(folder, "_judge", lambda *args: Nothing())
    with pytest.raises(RunError, match=r"only hole 0 of 2 accepted after 4 candidates each \(--qc-attempts 2\)"):
        generate_to_folder(gen_run, tmp_path / "f", ["hole"], GenerationConfig(num=2, qc="filter", qc_attempts=2,
                                                                            **FAST), progress=False)
    assert [r["index"] for r in rows(tmp_path / "f" / REJECTED)] == [0, 1, 2, 3]
    assert rows(tmp_path / "f" / "manifest.jsonl") == []


def test_filter_interrupted_then_resumed_accepts_the_same_set(parity, monkeypatch, gen_run, tmp_path):
    cfg = GenerationConfig(num=3, qc="filter", **FAST)
    whole = generate_to_folder(gen_run, tmp_path / "whole", ["hole", "scratch"], cfg, progress=False)
    write, calls = folder._Writer.write, []

    def crash_on_third(self, kind, item):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return write(self, kind, item)

    monkeypatch.setattr(folder._Writer, "write", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        generate_to_folder(gen_run, tmp_path / "cut", ["hole", "scratch"], cfg, progress=False)
    monkeypatch.setattr(folder._Writer, "write", write)
    generate_to_folder(gen_run, tmp_path / "cut", ["hole", "scratch"], cfg, progress=False)
    assert tree(tmp_path / "cut") == tree(whole)


KILLABLE = """
import sys
import numpy as np
import seas.generation.folder as folder

class ParityJudge:
    def score(self, image, mask, kind, reference=None):
        return {"parity": float(int(np.asarray(image, dtype=np.int64).sum()) % 2)}
    def decide(self, scores, kind):
        return (True, []) if scores["parity"] == 0 else (False, ["odd pixel sum"])

folder._judge = lambda *args: ParityJudge()
from seas.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_filter_killed_then_resumed_accepts_the_same_set(gen_run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    argv = ["generate", "--run", str(gen_run), "--type", "hole", "--num", "4", "--sample-steps", "2", "--guidance", "2",
            "--batch-size", "2", "--qc", "filter", "--quiet"]
    command = [sys.executable, "-c", KILLABLE, *argv]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert subprocess.run([*command, "--out", str(whole)], env=env, capture_output=True, timeout=300).returncode == 0
    proc = subprocess.Popen([*command, "--out", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(list(cut.glob("**/image/[!.]*.png"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "manifest.jsonl").exists()
    assert subprocess.run([*command, "--out", str(cut)], env=env, capture_output=True, timeout=300).returncode == 0
    assert tree(cut) == tree(whole)


def test_score_mode_scores_every_pair_and_rejects_nothing(parity, gen_run, tmp_path):
    plain = generate_to_folder(gen_run, tmp_path / "plain", ["stain", "good"], GenerationConfig(num=3, **FAST),
                               progress=False)
    scored = generate_to_folder(gen_run, tmp_path / "scored", ["stain", "good"],
                                GenerationConfig(num=3, qc="score", **FAST), progress=False)
    got = rows(scored / "manifest.jsonl")
    assert len(got) == 6 and all("parity" in r["qc"]["scores"] for r in got)
    assert {r["qc"]["accepted"] for r in got} <= {True, False} and not (scored / REJECTED).exists()
    for r in got:
        assert (scored / r["image"]).read_bytes() == (plain / r["image"]).read_bytes()
