"""`seas evaluate`: the downstream protocol on a fake finished run, the report, the quality scores.

The run folder is written by hand (seas_run.json with a real few-shot split of a tiny synthetic
product); the "generated" images are cut-paste composites with exact masks.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyInception
from PIL import Image

from seas.cli.evaluate import add_parsers
from seas.config import TrainConfig
from seas.data.config import DataConfig
from seas.data.readers import read_dataset
from seas.data.split import few_shot_split
from seas.data.synthetic import write_synthetic_product
from seas.errors import ConfigError, RunError, SeasError
from seas.evaluation import lpips_weights, quality
from seas.evaluation.baselines import cut_paste
from seas.evaluation.config import EvalConfig
from seas.evaluation.evaluate import evaluate_run
from seas.evaluation.inputs import build_train_sets, read_generated
from seas.generation.generated import GeneratedFolder
from seas.evaluation.lpips import LPIPS
from seas.evaluation.lpips_weights import lpips_weights_path
from seas.evaluation.quality import WEIGHT_FILES, MissingWeightsError
from seas.files.images import read_mask, read_rgb
from seas.model.prompts import PromptSpec
from seas.run import Run

SETS = ("real_only", "real+generated", "cut_paste", "perlin")
N_PER_TYPE = 8  # generated anomalies per type: more than the 6 real images, so clusters have pairs
EXTRA = {
    "Stage timings": {"stage 1": 12.5, "generation": 3.25},
    "Attention-map localisation": {"hole": {"pixel_auroc": 0.91, "iou": 0.4}, "<script>x</script>": {"iou": float("nan")}},
}
SECTIONS = {"summary", "downstream", "baselines", "per-type", "curves", "quality", "samples", "extra"}


def _cfg(**kw) -> EvalConfig:
    base = dict(segmenter="unet", size=64, steps=20, batch_size=4, width=0.25, device="cpu", progress=False,
                judge_steps=20)
    return EvalConfig(**{**base, **kw})


@pytest.fixture(scope="module", autouse=True)
def no_weights(tmp_path_factory):
    """The default weight folders point at empty temporary ones."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("TORCH_HOME", str(home / "torch"))
        mp.delenv("SEAS_WEIGHTS", raising=False)
        mp.delenv("SEAS_HOME", raising=False)
        yield


def _write_png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name


def _write_generated(folder: Path, split) -> None:
    """Cut-paste anomalies of every type, a mixture and two normals, with manifest.jsonl."""
    rng = np.random.default_rng(0)
    normals = [read_rgb(s.image) for s in split.normal_train]
    defects = {t: [(read_rgb(s.image), read_mask(s.mask)) for s in split.train[t]] for t in split.types}
    plan = [(t, N_PER_TYPE) for t in split.types] + [(f"{split.types[0]}+{split.types[1]}", 2), ("good", 2)]
    rows, index = [], 0
    for kind, count in plan:
        for _ in range(count):
            pick = int(rng.integers(len(normals)))
            normal = normals[pick]
            if kind == "good":
                image, mask = normal[:, ::-1].copy(), None
            else:
                pool = [d for t in kind.split("+") for d in defects[t]]
                image, mask = cut_paste(normal, *pool[rng.integers(len(pool))], rng)
            name = f"{index:04d}.png"
            _write_png(folder / "images" / name, image)
            if mask is not None:
                _write_png(folder / "masks" / name, mask.astype(np.uint8) * 255)
            rows.append({"kind": kind, "index": index, "image": f"images/{name}",
                         "mask": None if mask is None else f"masks/{name}", "prompt": f"a ob1 with {kind}",
                         "seed": index, "reference": split.normal_train[pick].image, "mask_area": 0 if mask is None else int(mask.sum())})
            index += 1
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished-run folder over a 64 px synthetic product (6 images per type: 2 train, 4 test)."""
    root = tmp_path_factory.mktemp("evaluate")
    write_synthetic_product(root / "data", size=64, n_train_good=6, n_test_good=4, n_per_type=6)
    data = DataConfig(root=str(root / "data"), product="tile")
    split = few_shot_split(read_dataset(data), data)
    run = root / "run"
    run.mkdir()
    Run(path=run, base="tiny", data=data, train=TrainConfig(base="tiny", steps=10, resolution=64),
        prompt=PromptSpec(split.types), split=split).save()
    _write_generated(run / "generated", split)
    return run


@pytest.fixture(scope="module")
def evaluation(run_dir):
    metrics = evaluate_run(run_dir, cfg=_cfg(), extra=EXTRA)
    return metrics, run_dir / "evaluation"


class _Page(HTMLParser):
    """Collects tags, ids, attributes and text of an HTML page."""

    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.attrs, self.text = [], set(), [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v) for k, v in attrs]
        self.ids |= {v for k, v in attrs if k == "id"}

    def handle_data(self, data):
        self.text.append(data)


def _numbers(tree):
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _numbers(v)]
    return [tree]


# ----------------------------------------------------------------------------- training sets


def test_real_plus_generated_follows_the_protocol_unless_asked_for_generated_normals():
    img = lambda v: np.full((8, 8, 3), v, np.uint8)
    real = [(img(1), np.ones((8, 8), bool))]
    normals = [img(2), img(3)]
    rows = [{"kind": "hole", "image": img(4), "mask": np.ones((8, 8), bool)},
            {"kind": "hole", "image": img(5), "mask": None},  # no mask: unusable
            {"kind": "good", "image": img(6), "mask": None}]
    sets, parts = build_train_sets(real, normals, rows, _cfg(baselines=False))
    values = [int(image[0, 0, 0]) for image, _ in sets["real+generated"]]
    assert values == [1, 2, 3, 4]
    assert parts["real+generated"] == {"real_anomalies": 1, "real_normals": 2,
                                       "generated_anomalies": 1, "generated_normals": 0}
    sets, parts = build_train_sets(real, normals, rows, _cfg(baselines=False, generated_normals=True))
    assert [int(image[0, 0, 0]) for image, _ in sets["real+generated"]] == [1, 2, 3, 4, 6]
    assert parts["real+generated"]["generated_normals"] == 1
    with pytest.raises(RunError, match="--generated-normals"):
        build_train_sets(real, normals, rows[2:], _cfg(baselines=False))


# ----------------------------------------------------------------------------- end to end


def test_metrics_are_finite_for_every_training_set(evaluation):
    metrics, out = evaluation
    on_disk = json.loads((out / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert on_disk == metrics
    assert set(metrics["downstream"]) == set(SETS)
    for name in SETS:
        values = metrics["downstream"][name]
        assert len(values) == 9 and all(isinstance(v, float) and math.isfinite(v) for v in values.values())
        assert set(metrics["per_type"][name]) == {"hole", "scratch", "stain"}
        assert all(math.isfinite(v) for v in _numbers(metrics["per_type"][name]))
        assert metrics["curves"][name]["roc"]["fpr"][0] == 0.0 and metrics["curves"][name]["roc"]["tpr"][-1] == 1.0
    sets = metrics["train_sets"]
    assert sets["real_only"] == {"real_anomalies": 6, "real_normals": 6, "seconds": sets["real_only"]["seconds"],
                                 "reused": False}
    assert sets["real+generated"]["generated_anomalies"] == 3 * N_PER_TYPE + 2
    assert sets["real+generated"]["generated_normals"] == 0  # protocol: real normals only
    assert sets["cut_paste"]["synthetic_anomalies"] == 3 * N_PER_TYPE + 2
    assert [r["test"] for r in metrics["split"]] == [4, 4, 4, 4]
    assert metrics["extra"]["Attention-map localisation"]["<script>x</script>"]["iou"] is None


def test_quality_skipped_per_family_names_the_weight_file_and_command(evaluation):
    metrics, _ = evaluation
    assert set(metrics["quality"]) == {"inception", "lpips"}
    inception, lpips = metrics["quality"]["inception"], metrics["quality"]["lpips"]
    assert set(inception) == {"skipped"} and set(lpips) == {"skipped"}
    assert WEIGHT_FILES["inception_v3"].file_name in inception["skipped"] and "\n" not in inception["skipped"]
    assert "`seas weights fetch lpips`" in lpips["skipped"] and "lpips-vgg-v0.1.safetensors" in lpips["skipped"]
    assert "\n" not in lpips["skipped"]


def test_report_is_self_contained_and_has_every_section(evaluation):
    metrics, out = evaluation
    html = (out / "report.html").read_text()
    page = _Page()
    page.feed(html)
    page.close()
    assert SECTIONS | {"extra-0", "extra-1"} <= page.ids
    assert page.tags.count("svg") == 2 and "script" not in page.tags and "link" not in page.tags
    sources = [v for tag, k, v in page.attrs if k == "src"]
    assert len(sources) == 2 * 5  # generated + real strip for 3 types, the mixture and good
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(v.startswith("#") for _, k, v in page.attrs if k == "href")
    assert "http://" not in html
    text = " ".join(page.text)
    assert metrics["quality"]["inception"]["skipped"] in text
    assert "IC-LPIPS skipped: " + metrics["quality"]["lpips"]["skipped"] in text
    assert "<script>x</script>" in text and "Stage timings" in text
    assert "<b>" in html
    assert "with a non-empty mask" in text and "empty masks" in text  # empty masks are counted apart


def test_answer_first_and_the_measures_of_the_generated_pairs(evaluation):
    metrics, out = evaluation
    verdict = metrics["verdict"]
    assert verdict["helped"] in {"yes", "no", "mixed"} and verdict["compared"] == 9
    assert set(verdict["improved"]) | set(verdict["worsened"]) <= set(metrics["downstream"]["real_only"])
    assert verdict["vs_cut_paste"]["compared"] == 9
    measures = metrics["generated_measures"]
    fidelity = measures["type_fidelity"]
    assert fidelity["rows"] == ["hole", "scratch", "stain", "good"] and fidelity["chance"] == pytest.approx(1 / 3)
    assert fidelity["classifier"] == {"seed": 0, "steps": 20, "trained_on": {"hole": 2, "scratch": 2, "stain": 2,
                                                                            "good": 6}}
    assert [sum(row) for row in fidelity["confusion"]] == [N_PER_TYPE] * 3 + [2]
    assert fidelity["not_classified"] == {"hole+scratch": "a mixture has no class of its own"}
    agreement = measures["mask_agreement"]
    assert agreement["segmenter"] == "real_only" and agreement["all"]["n"] == 3 * N_PER_TYPE + 2
    assert set(agreement["per_kind"]) == {"hole", "scratch", "stain", "hole+scratch"}
    assert set(measures["anomaly_evidence"]["per_placement"]) == {"free"}  # rows without a placement field
    assert measures["anomaly_evidence"]["per_kind"]["hole"]["free"]["n"] == N_PER_TYPE
    assert measures["area_position"]["all"]["n"] == 3 * N_PER_TYPE + 2
    assert metrics["quality_control"] is None
    html = (out / "report.html").read_text()
    assert re.findall(r'<section id="([^"]+)"', html)[:3] == ["downstream", "samples", "generated-measures"]
    assert "Did the generated pairs help?" in html.split('id="samples"')[0]
    assert "Are the generated pairs right?" in html and "Confusion matrix" in html


def test_rejected_pairs_are_shown_but_never_used(run_dir, tmp_path):
    gen = tmp_path / "gen"
    shutil.copytree(run_dir / "generated", gen)
    for kind in ("hole", "good"):
        (gen / "rejected" / kind / "image").mkdir(parents=True)
        shutil.copy(gen / "images" / "0000.png", gen / "rejected" / kind / "image" / "0000.png")
    rows = [{"kind": kind, "index": 0, "image": f"rejected/{kind}/image/0000.png", "mask": None,
             "qc": {"accepted": False, "reasons": [f"too odd for {kind}"], "scores": {}}} for kind in ("hole", "good")]
    (gen / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    cheap = _cfg(size=32, steps=1, baselines=False, quality=False, judge_steps=2)
    metrics = evaluate_run(run_dir, generated_dir=gen, out_dir=tmp_path / "out", cfg=cheap)
    assert metrics["train_sets"]["real+generated"]["generated_anomalies"] == 3 * N_PER_TYPE + 2
    assert metrics["train_sets"]["real+generated"]["generated_normals"] == 0
    qc = metrics["quality_control"]
    assert qc["per_kind"]["hole"] == {"accepted": N_PER_TYPE, "rejected": 1, "acceptance_rate": N_PER_TYPE / 9}
    assert qc["per_kind"]["good"]["rejected"] == 1 and qc["per_kind"]["stain"]["rejected"] == 0
    assert qc["skipped_lines"] == 1
    html = (tmp_path / "out" / "report.html").read_text()
    control = html.split('<section id="quality-control"')[1].split("</section>")[0]
    assert "rejected: too odd for hole" in control and 'alt="accepted"' in control


# ----------------------------------------------------------------------------- folders and errors


def test_previous_evaluation_is_replaced_and_other_folders_refused(run_dir, tmp_path):
    cheap = _cfg(size=32, steps=1, baselines=False, max_generated=1, quality=False)
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "metrics.json").write_text("{}")
    metrics = evaluate_run(run_dir, out_dir=previous, cfg=cheap)
    assert json.loads((previous / "metrics.json").read_text())["format"] == metrics["format"]
    assert set(metrics["downstream"]) == {"real_only", "real+generated"}
    assert metrics["generated"]["hole"] == {"rows": N_PER_TYPE, "used": 1, "with_mask": 1, "empty_masks": 0}
    assert metrics["quality"] == {"inception": {"skipped": "turned off (--no-quality)"},
                                  "lpips": {"skipped": "turned off (--no-quality)"}}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="notes.txt"):
        evaluate_run(run_dir, out_dir=foreign, cfg=cheap)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_real_only_segmenter_is_kept_and_reused_for_another_generated_folder(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("segmenters", "evaluation"))
    cheap = _cfg(size=32, steps=3, baselines=False, quality=False, judge_steps=2)
    first = evaluate_run(run, out_dir=tmp_path / "first", cfg=cheap)
    assert first["train_sets"]["real_only"]["reused"] is False
    assert len(list((run / "segmenters").iterdir())) == 1
    # another generated folder of the same run: the same real-only model, read back
    second = evaluate_run(run, out_dir=tmp_path / "second", cfg=_cfg(**{**cheap.to_dict(), "max_generated": 2}))
    assert second["train_sets"]["real_only"]["reused"] is True
    assert second["train_sets"]["real+generated"]["reused"] is False
    assert second["downstream"]["real_only"] == first["downstream"]["real_only"]
    assert second["downstream"]["real+generated"] != first["downstream"]["real+generated"]
    assert "read back from the run&#x27;s segmenters/ folder" in (tmp_path / "second" / "report.html").read_text()
    assert "segmenters/ folder" not in (tmp_path / "first" / "report.html").read_text()
    # turned off: trained afresh, same numbers
    third = evaluate_run(run, out_dir=tmp_path / "third", cfg=_cfg(**{**cheap.to_dict(), "reuse_segmenter": False}))
    assert third["train_sets"]["real_only"]["reused"] is False
    assert third["downstream"]["real_only"] == first["downstream"]["real_only"]
    # other settings: another model, kept beside the first
    evaluate_run(run, out_dir=tmp_path / "fourth", cfg=_cfg(**{**cheap.to_dict(), "steps": 4}))
    assert len(list((run / "segmenters").iterdir())) == 2


def test_required_quality_without_weights_fails_and_writes_nothing(run_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(MissingWeightsError) as err:
        evaluate_run(run_dir, out_dir=out, cfg=_cfg(quality=True, weights_dir=str(tmp_path / "w")))
    assert "\n" not in str(err.value) and WEIGHT_FILES["inception_v3"].file_name in str(err.value)
    assert "`seas weights fetch lpips`" in str(err.value)  # both families are named
    assert not out.exists()


def test_bad_generated_folders_give_one_line_errors(run_dir, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    with pytest.raises(RunError, match="manifest.jsonl"):
        read_generated(GeneratedFolder(gen))
    lines = (run_dir / "generated" / "manifest.jsonl").read_text().splitlines()
    (gen / "manifest.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(RunError, match=r"images/0000\.png.*line 1"):
        read_generated(GeneratedFolder(gen))
    (gen / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(RunError, match="line 1: not valid JSON") as err:
        read_generated(GeneratedFolder(gen))
    assert "\n" not in str(err.value)
    with pytest.raises(RunError):
        evaluate_run(run_dir, generated_dir=gen, out_dir=tmp_path / "out", cfg=_cfg())
    assert not (tmp_path / "out").exists()
    rows = read_generated(GeneratedFolder(run_dir / "generated"))
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in rows)
    assert rows[-1]["kind"] == "good" and rows[-1]["mask"] is None


def test_command_line_parser_and_command(run_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="seas")
    add_parsers(parser.add_subparsers(dest="command"))
    defaults = parser.parse_args(["evaluate", "--run", str(run_dir)])
    assert (defaults.segmenter, defaults.size, defaults.quality, defaults.generated) == ("bisenetv2", 256, None, None)
    args = parser.parse_args(["evaluate", "--run", str(run_dir), "--out", str(tmp_path / "cli"), "--segmenter", "unet",
                              "--size", "32", "--steps", "1", "--seg-width", "0.25", "--device", "cpu", "--no-baselines",
                              "--max-generated", "2", "--no-quality", "--judge-steps", "20"])
    assert (args.baselines, args.quality, args.max_generated) == (False, False, 2)
    assert EvalConfig.from_dict(EvalConfig.given(args)) == _cfg(
        size=32, steps=1, batch_size=8, seed=0, baselines=False, max_generated=2, quality=False, progress=True)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "real+generated" in printed and "IC-LPIPS (LPIPS-VGG) skipped: turned off (--no-quality)" in printed
    assert (tmp_path / "cli" / "report.html").is_file()
    with pytest.raises(SeasError, match="--segmenter"):
        EvalConfig(segmenter="upernet")


def test_command_line_options_come_from_the_config_fields(run_dir, capsys):
    parser = argparse.ArgumentParser(prog="seas")
    subparsers = parser.add_subparsers(dest="command")
    add_parsers(subparsers)
    args = parser.parse_args(["evaluate", "--run", str(run_dir), "--baselines", "--quality", "--quality-size", "64",
                              "--weights-dir", "w", "--batch-size", "2", "--seed", "3"])
    assert (args.baselines, args.quality, args.quality_size, args.weights_dir, args.batch_size, args.seed) == (
        True, True, 64, "w", 2, 3)
    assert not hasattr(args, "progress")  # set from code only
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--run", str(run_dir), "--segmenter", "upernet"])
    assert "choose from" in capsys.readouterr().err
    help_text = subparsers.choices["evaluate"].format_help()
    assert "--no-baselines" in help_text and "--no-quality" in help_text and "(default 256)" in help_text


def test_eval_config_dict_round_trip_is_strict():
    cfg = EvalConfig(segmenter="unet", size=64, max_generated=3, quality=True, weights_dir="w", width=0.5)
    assert EvalConfig.section == "evaluate"
    assert EvalConfig.from_dict(cfg.to_dict()) == cfg
    assert EvalConfig.from_dict(EvalConfig().to_dict()) == EvalConfig()
    assert EvalConfig.from_dict({"width": 2}).width == 2.0  # an int where a float is expected
    for values, message in [({"segmentr": "unet"}, "unknown key evaluate.segmentr"),
                            ({"steps": "10"}, "not a int"), ({"size": 8}, "at least 16"),
                            ({"max_generated": 0}, "at least 1"), ({"quality_size": 15}, "at least 16"),
                            ({"width": 0.0}, "must be positive"), ({"quality": "yes"}, "not a bool"),
                            ({"segmenter": "upernet"}, "choose one of bisenetv2, unet")]:
        with pytest.raises(ConfigError, match=message) as err:
            EvalConfig.from_dict(values, where="eval.yaml")
        assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- quality


def _stand_in_lpips() -> LPIPS:
    """LPIPS with random weights (non-negative heads, as the published ones)."""
    torch.manual_seed(0)
    model = LPIPS().eval()
    for head in model.heads:
        torch.nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    return model


FAMILY_KEYS = {"inception": {"is_mean", "is_std", "kid_mean", "kid_std"}, "lpips": {"ic_lpips", "ic_lpips_anomaly"}}


def test_quality_scores_with_stand_in_networks(run_dir, tmp_path, monkeypatch):
    lpips_model = _stand_in_lpips()
    monkeypatch.setattr(quality, "load_inception", lambda *args: TinyInception().eval())
    monkeypatch.setattr(quality, "load_lpips", lambda *args: lpips_model)
    weights = tmp_path / "weights"
    weights.mkdir()
    for entry in WEIGHT_FILES.values():  # present files; the stand-ins never read them
        (weights / entry.file_name).write_bytes(b"")
    cfg = _cfg(size=32, steps=1, baselines=False, quality=True, weights_dir=str(weights), quality_size=32)
    evaluate_run(run_dir, out_dir=tmp_path / "out", cfg=cfg)
    stored = json.loads((tmp_path / "out" / "metrics.json").read_text())["quality"]
    assert set(stored) == set(FAMILY_KEYS)
    for family, keys in FAMILY_KEYS.items():
        for kind in ("hole", "scratch", "stain"):
            assert set(stored[family]["per_kind"][kind]) == keys
            assert all(isinstance(v, float) and math.isfinite(v) for v in stored[family]["per_kind"][kind].values())
        assert set(stored[family]["mean"]) == keys and all(math.isfinite(v) for v in stored[family]["mean"].values())
        assert "hole+scratch" in stored[family]["per_kind"]
    assert stored["inception"]["mean"]["is_mean"] >= 1.0
    assert set(stored["lpips"]["comparison"]["per_type"]) == {"hole", "scratch", "stain"}
    report = (tmp_path / "out" / "report.html").read_text()
    assert "mean over types" in report and "IC-LPIPS compared, per type" in report
    assert "skipped" not in report.lower()


def _generated_and_centres(run_dir: Path, kind: str, size: int):
    """The images the comparison of ``kind`` must use, loaded independently of evaluate_run."""
    from seas.files.images import resize_image, resize_mask

    split = Run.load(run_dir, verify=False).split
    rows = [r for r in read_generated(GeneratedFolder(run_dir / "generated")) if r["kind"] == kind]
    test = [s for s in split.test if s.type == kind]

    def images(paths):
        return quality.images_to_tensor([resize_image(read_rgb(p), size) for p in paths], size)

    def masks(paths):
        return quality.masks_to_tensor([resize_mask(read_mask(p), size) for p in paths], size)

    return ((images([r["image"] for r in rows]), masks([r["mask"] for r in rows])),
            (images([s.image for s in test]), masks([s.mask for s in test])),
            images([s.image for s in split.train[kind]]))


def test_ic_lpips_without_inception_with_comparison_rows(run_dir, tmp_path, monkeypatch):
    """Only LPIPS weights (a file as `seas weights fetch lpips` stores it, random weights): IC-LPIPS
    and its comparison rows are computed through the real loading route; IS and KID are skipped,
    naming the Inception file; a damaged file is skipped by default and refused by --quality."""
    monkeypatch.setenv("SEAS_HOME", str(tmp_path / "seas_home"))
    model = _stand_in_lpips()
    lpips_weights._write_atomically(lpips_weights_path(), model.state_dict(), {"format": "pt"})
    cfg = _cfg(size=32, steps=1, baselines=False, quality_size=32)
    metrics = evaluate_run(run_dir, out_dir=tmp_path / "out", cfg=cfg)
    stored = metrics["quality"]
    assert WEIGHT_FILES["inception_v3"].file_name in stored["inception"]["skipped"]
    assert set(stored["inception"]) == {"skipped"}
    lpips = stored["lpips"]
    for kind in ("hole", "scratch", "stain"):
        assert set(lpips["per_kind"][kind]) == FAMILY_KEYS["lpips"]
        assert all(math.isfinite(v) for v in lpips["per_kind"][kind].values())
    assert set(lpips["mean"]) == FAMILY_KEYS["lpips"]

    comparison = lpips["comparison"]
    assert comparison["centres"] == {"hole": 2, "scratch": 2, "stain": 2}  # the real training anomalies
    for kind, rows in comparison["per_type"].items():
        assert list(rows) == ["generated", "real_test", "cut_paste", "perlin"]
        assert [rows[name]["images"] for name in rows] == [N_PER_TYPE, 4, N_PER_TYPE, N_PER_TYPE]
        for row in rows.values():  # >= 4 images around 2 centres: some cluster has a pair
            assert set(row) == {"images", "ic_lpips", "ic_lpips_anomaly"}
            assert all(isinstance(row[k], float) and row[k] > 0 for k in ("ic_lpips", "ic_lpips_anomaly"))
    for name, row in comparison["mean"].items():
        values = [comparison["per_type"][t][name]["ic_lpips"] for t in ("hole", "scratch", "stain")]
        assert row["ic_lpips"] == pytest.approx(np.mean(values))
    # the generated and real-test rows are IC-LPIPS around the type's training anomalies
    (gen, gen_masks), (test, test_masks), centres = _generated_and_centres(run_dir, "scratch", 32)
    expected = quality.ic_lpips_scores(model, gen, centres, gen_masks)
    assert comparison["per_type"]["scratch"]["generated"] == pytest.approx({"images": N_PER_TYPE, **expected})
    expected = quality.ic_lpips_scores(model, test, centres, test_masks)
    assert comparison["per_type"]["scratch"]["real_test"] == pytest.approx({"images": 4, **expected})

    page = _Page()
    page.feed((tmp_path / "out" / "report.html").read_text())
    text = " ".join(page.text)
    assert "IS and KID skipped: " + stored["inception"]["skipped"] in text
    assert "IC-LPIPS compared, per type" in text and "How to read" in text and "real_test" in text
    assert "scratch (centres: its 2 real training anomalies)" in text

    with pytest.raises(MissingWeightsError) as err:  # --quality: Inception is still required
        evaluate_run(run_dir, out_dir=tmp_path / "required", cfg=_cfg(quality=True))
    # one family's error: the Inception file, not the LPIPS one (the searched folders may contain the test's name)
    assert WEIGHT_FILES["inception_v3"].file_name in str(err.value) and lpips_weights_path().name not in str(err.value)

    path = lpips_weights_path()
    path.write_bytes(path.read_bytes()[:-1] + b"x")
    damaged = evaluate_run(run_dir, out_dir=tmp_path / "damaged", cfg=_cfg(size=32, steps=1, baselines=False,
                                                                           max_generated=2))
    assert "re-run `seas weights fetch lpips`" in damaged["quality"]["lpips"]["skipped"]
    with pytest.raises(lpips_weights.LpipsWeightsHashError) as err:  # required: both failures in one line
        evaluate_run(run_dir, out_dir=tmp_path / "required", cfg=_cfg(quality=True))
    assert WEIGHT_FILES["inception_v3"].file_name in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value) and not (tmp_path / "required").exists()


def test_is_and_kid_without_lpips(run_dir, tmp_path, monkeypatch):
    """Only the Inception file: IS and KID computed, IC-LPIPS skipped naming the fetch command."""
    monkeypatch.setattr(quality, "load_inception", lambda *args: TinyInception().eval())
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / WEIGHT_FILES["inception_v3"].file_name).write_bytes(b"")
    cfg = _cfg(size=32, steps=1, baselines=False, weights_dir=str(weights), quality_size=32, max_generated=3)
    stored = evaluate_run(run_dir, out_dir=tmp_path / "out", cfg=cfg)["quality"]
    assert set(stored["inception"]["per_kind"]["hole"]) == FAMILY_KEYS["inception"]
    assert set(stored["lpips"]) == {"skipped"} and "run `seas weights fetch lpips`" in stored["lpips"]["skipped"]
    with pytest.raises(MissingWeightsError, match="seas weights fetch lpips") as err:
        evaluate_run(run_dir, out_dir=tmp_path / "required", cfg=_cfg(quality=True, weights_dir=str(weights)))
    assert WEIGHT_FILES["inception_v3"].file_name not in str(err.value)
