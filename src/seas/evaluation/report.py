"""The evaluation report: one self-contained HTML file, readable offline.

No external CSS, scripts or fonts: styles are inline, images are base64 PNG data URIs made
with Pillow, plots are inline SVG. Every piece of text is escaped.

Sections in page order (element ids): ``downstream`` (the answer first: the verdict sentence and
its rule, every metric per training set), ``samples`` (real training pairs beside generated
pairs, red mask overlays), ``generated-measures`` ("Are the generated pairs right?": type
fidelity, mask agreement, area and position per kind, the confusion matrix, anomaly evidence),
``quality-control`` (only when quality control rejected pairs: counts, accepted beside rejected
examples with their reasons), ``baselines`` (each set minus ``real_only``), ``per-type``,
``curves`` (pixel ROC and PR), ``quality``, ``summary`` (run, configuration, split and generated
counts, training sets) and ``extra`` (sections added by the caller, ids ``extra-<n>``).
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seas.evaluation.verdict import metric_name
from seas.files.atomic import write_text

METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
           "iou", "iou_at_0.5", "aupro_0.3")
PER_TYPE_METRICS = ("pixel_ap", "iou")
QUALITY_KEYS = {"inception": ("is_mean", "is_std", "kid_mean", "kid_std"), "lpips": ("ic_lpips", "ic_lpips_anomaly")}
QUALITY_FAMILIES = {"inception": "IS and KID", "lpips": "IC-LPIPS"}
COMPARISON_KEYS = ("ic_lpips", "ic_lpips_anomaly")
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
THUMB = 128  # longer side of a grid image, pixels
OVERLAY_ALPHA = 0.4
RED = np.array([255, 0, 0], dtype=np.float32)

STYLE = """
body{font-family:sans-serif;margin:2em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f2f2f2}
figure{display:inline-block;margin:0 1.5em 1em 0;vertical-align:top}
figcaption{font-size:90%;color:#555}
nav a{margin-right:1em}
.note{color:#555;font-size:90%}
"""


# ----------------------------------------------------------------------------- text and tables


def _fmt(value, percent: bool = False) -> str:
    """A table value as text: numbers rounded (percent: x100, 2 decimals), None/NaN as '-'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.2f}" if percent else f"{value:.4g}"


def _cell(value, percent: bool = False, bold: bool = False, tag: str = "td") -> str:
    text = escape(_fmt(value, percent))
    return f"<{tag}>{'<b>' + text + '</b>' if bold else text}</{tag}>"


def _table(header: list[str], rows: list[list], percent: bool = False, bold_best: bool = False) -> str:
    """HTML table; the first column is a row label. ``bold_best``: bold each column's maximum."""
    best = {}
    if bold_best:
        for c in range(1, len(header)):
            finite = [r[c] for r in rows if isinstance(r[c], (int, float)) and math.isfinite(r[c])]
            best[c] = max(finite) if finite else None
    head = "".join(_cell(h, tag="th") for h in header)
    body = "".join(
        "<tr>" + "".join(_cell(v, percent and c > 0, bold=c in best and v is not None and v == best[c])
                         for c, v in enumerate(row)) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _key_values(pairs: dict) -> str:
    return _table(["", "value"], [[k, v if not isinstance(v, (list, dict)) else _compact(v)] for k, v in pairs.items()])


def _compact(value) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return ", ".join(f"{k}={v}" for k, v in value.items())


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{escape(section_id)}"><h2>{escape(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


# ----------------------------------------------------------------------------- images


def _overlay(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8 + (H, W) bool -> thumbnail, mask filled in semi-transparent red, outlined."""
    h, w = rgb.shape[:2]
    scale = THUMB / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    thumb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    if mask is not None:
        small = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        edge = small & ~(cv2.erode(small.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        thumb[small] = (1 - OVERLAY_ALPHA) * thumb[small] + OVERLAY_ALPHA * RED
        thumb[edge] = RED
    return thumb.round().astype(np.uint8)


def _strip(pairs: list[tuple[np.ndarray, np.ndarray | None]], gap: int = 4) -> str:
    """Overlaid thumbnails side by side on white -> PNG data URI."""
    thumbs = [_overlay(rgb, mask) for rgb, mask in pairs]
    height = max(t.shape[0] for t in thumbs)
    width = sum(t.shape[1] for t in thumbs) + gap * (len(thumbs) - 1)
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for t in thumbs:
        canvas[: t.shape[0], x: x + t.shape[1]] = t
        x += t.shape[1] + gap
    return _png_uri(canvas)


def _png_uri(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


# ----------------------------------------------------------------------------- plots


def _svg_plot(title: str, xlabel: str, ylabel: str, lines: dict[str, tuple[list, list]],
              diagonal: bool = False, legend_left: bool = False, width: int = 380, height: int = 330) -> str:
    """Inline SVG line plot on [0, 1] x [0, 1] with grid, ticks and a legend in a lower corner."""
    left, right, top, bottom = 50, 18, 28, 42
    pw, ph = width - left - right, height - top - bottom

    def px(x: float, y: float) -> str:
        return f"{left + x * pw:.1f},{top + (1 - y) * ph:.1f}"

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'font-family="sans-serif" font-size="11"><title>{escape(title)}</title>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="white"/>']
    for tick in np.linspace(0, 1, 6):
        gx, gy = left + tick * pw, top + (1 - tick) * ph
        parts.append(f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{top + ph}" stroke="#eee"/>'
                     f'<line x1="{left}" y1="{gy:.1f}" x2="{left + pw}" y2="{gy:.1f}" stroke="#eee"/>'
                     f'<text x="{gx:.1f}" y="{top + ph + 14}" text-anchor="middle">{tick:.1f}</text>'
                     f'<text x="{left - 5}" y="{gy + 4:.1f}" text-anchor="end">{tick:.1f}</text>')
    if diagonal:
        parts.append(f'<polyline points="{px(0, 0)} {px(1, 1)}" fill="none" stroke="#aaa" stroke-dasharray="4 3"/>')
    lx = left + 8 if legend_left else left + pw - 128
    legend = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>'
              f'<rect x="{lx - 4}" y="{top + ph - 10 - 14 * len(lines)}" width="124" '
              f'height="{14 * len(lines) + 4}" fill="white" fill-opacity="0.85" stroke="#ccc"/>']
    for i, (name, (xs, ys)) in enumerate(lines.items()):
        colour = COLOURS[i % len(COLOURS)]
        points = " ".join(px(x, y) for x, y in zip(xs, ys))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        ly = top + ph - 12 - 14 * (len(lines) - 1 - i)
        legend.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 16}" y2="{ly}" stroke="{colour}" '
                      f'stroke-width="2"/><text x="{lx + 20}" y="{ly + 4}">{escape(name)}</text>')
    parts += legend
    parts.append(f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}</text>'
                 f'<text x="14" y="{top + ph / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + ph / 2})">{escape(ylabel)}</text>'
                 f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text></svg>')
    return "".join(parts)


# ----------------------------------------------------------------------------- sections


def _summary(metrics: dict) -> str:
    run, cfg = metrics.get("run", {}), metrics.get("config", {})
    overview = {k: run.get(k) for k in ("product", "path", "generated", "layout", "root", "base", "guidance", "types")}
    body = "<h3>Run</h3>" + _key_values(overview)
    if run.get("stage1"):
        body += f"<details><summary>stage-1 configuration</summary>{_key_values(run['stage1'])}</details>"
    body += "<h3>Evaluation settings</h3>" + _key_values(cfg)
    body += "<h3>Few-shot split</h3>" + _table(
        ["type", "images", "train", "test"], [[r["type"], r["images"], r["train"], r["test"]] for r in metrics.get("split", [])])
    body += "<h3>Generated data</h3>" + _table(  # an empty mask is not a mask: counted apart
        ["kind", "rows", "used", "with a non-empty mask", "empty masks"],
        [[k, v["rows"], v["used"], v["with_mask"], v.get("empty_masks", 0)]
         for k, v in metrics.get("generated", {}).items()])
    sets = metrics.get("train_sets", {})
    columns = sorted({c for v in sets.values() for c in v if c != "seconds"}) + ["seconds"]
    body += "<h3>Training sets</h3>" + _table(["training set", *columns], [[n, *(v.get(c) for c in columns)] for n, v in sets.items()])
    if any(v.get("reused") for v in sets.values()):
        body += _note("reused: the model was read back from the run's segmenters/ folder, trained by an earlier "
                      "evaluation of this run with the same settings and real data (seconds: reading and scoring).")
    return _section("summary", "Run and configuration", body)


def _answer(metrics: dict) -> str:
    """The opening: the verdict sentence, its rule, and every metric of every training set."""
    results = metrics.get("downstream", {})
    keys = list(dict.fromkeys(k for r in results.values() for k in r))  # whatever all_metrics gives
    table = _table(["training set", *(metric_name(k) for k in keys)],
                   [[n, *(r.get(k) for k in keys)] for n, r in results.items()], bold_best=True)
    verdict = metrics.get("verdict") or {}
    body = f"<p><b>{escape(verdict.get('sentence', ''))}</b></p>" + _note(f"Rule: {verdict.get('rule', '')}.")
    note = _note("Each training set trains the same segmenter from scratch with the same seed; tested on the "
                 "held-out real split. Image score = maximum of the map; IoU = mean over anomalous test images "
                 "of the best-threshold IoU. Best per column in bold.")
    return _section("downstream", "Did the generated pairs help?", body + table + note)


def _baselines(metrics: dict) -> str:
    results = metrics.get("downstream", {})
    ref = results.get("real_only", {})

    def delta(r: dict, k: str):
        return None if r.get(k) is None or ref.get(k) is None else r[k] - ref[k]

    rows = [[n, *(delta(r, k) for k in METRICS)] for n, r in results.items() if n != "real_only"]
    note = _note("Difference to real_only in percentage points (positive: the added data helps).")
    return _section("baselines", "Baseline comparison", note + _table(["training set", *METRICS], rows, True, True))


def _per_type(metrics: dict) -> str:
    per_type = metrics.get("per_type", {})
    types = list(dict.fromkeys(t for v in per_type.values() for t in v))
    body = _note("Values in %. Each type: its held-out anomalies and all normal test images. "
                 "Best per column in bold.")
    for key in PER_TYPE_METRICS:
        rows = [[n, *(v.get(t, {}).get(key) for t in types)] for n, v in per_type.items()]
        body += f"<h3>{escape(key)}</h3>" + _table(["training set", *types], rows, percent=True, bold_best=True)
    return _section("per-type", "Per anomaly type", body)


def _curves(curves: dict) -> str:
    roc = {n: (c["roc"]["fpr"], c["roc"]["tpr"]) for n, c in curves.items() if c}
    pr = {n: (c["pr"]["recall"], c["pr"]["precision"]) for n, c in curves.items() if c}
    if not roc:
        return _section("curves", "Pixel-level curves", _note("undefined: the test set has no anomalous pixel"))
    body = (_svg_plot("Pixel ROC", "false positive rate", "true positive rate", roc, diagonal=True)
            + _svg_plot("Pixel precision-recall", "recall", "precision", pr, legend_left=True))
    return _section("curves", "Pixel-level curves", body)


def _quality(metrics: dict) -> str:
    quality = metrics.get("quality", {})
    computed = {f: v for f, v in quality.items() if isinstance(v, dict) and "skipped" not in v}
    notes = "".join(_note(f"{QUALITY_FAMILIES.get(f, f)} skipped: {v['skipped']}")
                    for f, v in quality.items() if isinstance(v, dict) and "skipped" in v)
    if not computed:
        return _section("quality", "Generation quality", notes)
    keys = [k for f in QUALITY_KEYS if f in computed for k in QUALITY_KEYS[f]]
    kinds = list(dict.fromkeys(k for v in computed.values() for k in v.get("per_kind", {})))
    rows, skipped = [], ""
    for kind in kinds:
        scores = {f: v["per_kind"].get(kind, {}) for f, v in computed.items()}
        reasons = sorted({s["skipped"] for s in scores.values() if "skipped" in s})
        skipped += "".join(_note(f"{kind}: skipped, {reason}") for reason in reasons)
        if not reasons:
            rows.append([kind, *(next((s[k] for s in scores.values() if k in s), None) for k in keys)])
    if any(v.get("mean") for v in computed.values()):
        mean = {k: v for f in computed.values() for k, v in f.get("mean", {}).items()}
        rows.append(["mean over types", *(mean.get(k) for k in keys)])
    note = _note("The protocol's scores: IS on generated images; KID and IC-LPIPS against all real anomaly "
                 "images of the type, training and test (mixtures: of their types). Paper (MVTec AD): IS 1.88, "
                 "IC-LPIPS 0.34.")
    body = notes + note + _table(["kind", *keys], rows) + skipped
    comparison = computed.get("lpips", {}).get("comparison")
    if comparison:
        body += _ic_lpips_comparison(comparison)
    return _section("quality", "Generation quality", body)


def _ic_lpips_comparison(comparison: dict) -> str:
    """IC-LPIPS rows per type around the real training anomalies, and their mean."""
    body = "<h3>IC-LPIPS compared, per type</h3>" + _note(
        "How to read: IC-LPIPS measures variety, the mean LPIPS distance between images that share "
        "the same nearest real training anomaly of the type (the few shots: the same clustering centres "
        "for every row, so the rows compare). Higher means more varied images. real_test (the held-out "
        "real anomalies) is the variety of real defects; cut_paste and perlin (as many pairs as generated "
        "images, made from the same training anomalies and normal images) are what classic augmentation "
        "reaches. Generated images near or below cut_paste add little variety beyond copying the few "
        "shots; near real_test they vary as much as real defects; far above real_test they vary more "
        "than real defects do, which usually means noise or artefacts rather than useful variety. "
        "ic_lpips_anomaly compares only the anomaly regions (pixels outside each image's own mask set "
        "to grey). The generated row differs from the table above, whose centres are all real anomaly "
        "images of the type, training and test (the paper's protocol). '-': fewer than 2 images, or no "
        "cluster with 2 images.")
    columns = ["images", *COMPARISON_KEYS]
    for kind, rows in comparison.get("per_type", {}).items():
        centres = comparison.get("centres", {}).get(kind)
        body += f"<h4>{escape(kind)} (centres: its {escape(str(centres))} real training anomalies)</h4>"
        body += _table(["images of", *columns], [[name, *(row.get(c) for c in columns)] for name, row in rows.items()])
    mean = comparison.get("mean", {})
    if mean:
        body += "<h4>mean over types</h4>" + _table(
            ["images of", *COMPARISON_KEYS], [[name, *(row.get(c) for c in COMPARISON_KEYS)] for name, row in mean.items()])
    return body


def _samples(grids: dict) -> str:
    """Per kind the real training pairs next to the generated ones."""
    body = _note("Masks in semi-transparent red with a red outline; real training pairs (normal training "
                 "images for good) on the left, generated pairs on the right.")
    for kind, grid in grids.items():
        body += f"<h3>{escape(kind)}</h3>"
        if grid["real"]:
            body += _figure(_strip(grid["real"]), "real training pairs")
        if grid["generated"]:
            body += _figure(_strip(grid["generated"]), f"generated ({len(grid['generated'])} of {grid['count']})")
    return _section("samples", "Real and generated pairs", body)


# ----------------------------------------------------------------------------- are the pairs right?


MEASURE_COLUMNS = ("n", "type fidelity", "read as good", "mask IoU", "mask found", "area in range",
                   "mask area", "real area", "empty masks", "on product", "real on product")


def _measure_row(kind: str, fidelity: dict, agreement: dict, area: dict) -> list:
    return [kind, agreement.get("n", fidelity.get("n", area.get("n"))), fidelity.get("accuracy"),
            fidelity.get("good_rate"), agreement.get("mean_iou"), agreement.get("found_rate"),
            area.get("in_range_rate"), area.get("area_mean"), area.get("real_area_mean"), area.get("empty_rate"),
            area.get("foreground_share"),
            area.get("real_foreground_share")]


def _skips(parts: dict) -> str:
    return "".join(_note(f"{name.replace('_', ' ')}: skipped, {part['skipped']}")
                   for name, part in parts.items() if isinstance(part, dict) and "skipped" in part)


def _measures(metrics: dict) -> str:
    """Type fidelity, mask agreement, area and position per kind; the confusion matrix; evidence."""
    parts = metrics.get("generated_measures") or {}
    fid, agr, area = (parts.get(k) or {} for k in ("type_fidelity", "mask_agreement", "area_position"))
    fid_rows, agr_rows, area_rows = fid.get("per_type", {}), agr.get("per_kind", {}), area.get("per_kind", {})
    kinds = list(dict.fromkeys([*area_rows, *agr_rows, *fid_rows]))
    rows = [_measure_row(k, fid_rows.get(k, {}), agr_rows.get(k, {}), area_rows.get(k, {})) for k in kinds]
    rows.append(_measure_row("all anomalies", fid, agr.get("all", {}), area.get("all", {})))
    held_out = fid.get("real_test") or {}  # the same classifier on the held-out real test images
    rows += [_measure_row(f"{k} (real test)", v, {}, {}) for k, v in held_out.get("per_type", {}).items()]
    if held_out.get("per_type"):
        rows.append(_measure_row("all real test anomalies", held_out, {}, {}))
    body = _skips(parts) + _note(
        "type fidelity: share of pairs a classifier trained only on the real training anomalies (and normal "
        f"training images as good) names as the requested kind (chance 1/K = {_fmt(fid.get('chance'))}; for good: "
        "read as good); read as good: share it calls normal; mask IoU and mask found (IoU > 0.1): the real_only "
        "segmenter's prediction against each generated mask; area in range: share of masks whose area lies in "
        "the real training masks' range of the type (an empty mask never does); mask area and real area: mean "
        "share of the image of the non-empty generated and real masks; on product: share of mask pixels "
        "on the product's region in the normal images (real: the same for the real masks). Rows marked real "
        "test: the same classifier on the held-out real test images, the reading real defects get, to read the "
        "generated rows against.")
    body += _table(["kind", *MEASURE_COLUMNS], rows)
    body += "".join(_note(f"{k}: no type fidelity, {why}") for k, why in fid.get("not_classified", {}).items())
    if fid.get("confusion"):
        body += "<h3>Confusion matrix (rows: requested kind; columns: predicted class)</h3>" + _table(
            ["requested \\ predicted", *fid["columns"]], [[r, *c] for r, c in zip(fid["rows"], fid["confusion"])])
    return _section("generated-measures", "Are the generated pairs right?", body + _evidence(parts))


def _evidence(parts: dict) -> str:
    evidence = parts.get("anomaly_evidence") or {}
    keys = ("n", "inside", "outside", "ring", "contrast", "ratio")
    body = "<h3>Anomaly evidence (change from the reference normal image)</h3>" + _note(
        "Mean absolute change from the row's reference normal image inside the mask, outside it and in a band "
        "around it; contrast = (inside - outside) / (inside + outside), near 1 when the change sits in the mask. "
        "Meaningful only for placed defects (placement real-masks or masks): with free placement the whole "
        "image is re-drawn, so every pixel changes.")
    if "skipped" in evidence:
        return body + _note(f"skipped: {evidence['skipped']}")
    rows = [[f"{kind} ({placement})", *(v.get(k) for k in keys)]
            for kind, per in evidence.get("per_kind", {}).items() for placement, v in per.items()]
    rows += [[f"all ({placement})", *(v.get(k) for k in keys)]
             for placement, v in evidence.get("per_placement", {}).items()]
    body += _table(["kind (placement)", *keys], rows)
    missing = ", ".join(f"{k} {n}" for k, n in evidence.get("without_reference", {}).items())
    return body + (_note(f"without a readable reference: {missing}") if missing else "")


def _quality_control(qc: dict, examples: dict) -> str:
    """Counts per kind, and accepted beside rejected examples with the reasons as captions."""
    rows = [[k, v["accepted"], v["rejected"], v["acceptance_rate"]] for k, v in qc.get("per_kind", {}).items()]
    body = _note("From manifest.jsonl (accepted) and rejected.jsonl (rejected by seas generate --qc filter); "
                 "only the accepted pairs are used above.")
    body += _table(["kind", "accepted", "rejected", "acceptance rate"], rows)
    if qc.get("skipped_lines"):
        body += _note(f"{qc['skipped_lines']} line(s) of rejected.jsonl skipped: not a row, or its image is missing")
    for kind, shown in examples.items():
        if not shown["accepted"] and not shown["rejected"]:
            continue
        body += f"<h3>{escape(kind)}</h3><div>"
        if shown["accepted"]:
            body += _figure(_strip(shown["accepted"]), "accepted")
        body += "".join(_figure(_strip([pair]), "rejected: " + ("; ".join(reasons) or "no reason given"))
                        for pair, reasons in shown["rejected"])
        body += "</div>"
    return _section("quality-control", "Quality control: accepted and rejected pairs", body)


def _extra_table(content) -> str:
    if not isinstance(content, dict):
        return _note(str(content))
    if content and all(isinstance(v, dict) for v in content.values()):
        columns = list(dict.fromkeys(c for v in content.values() for c in v))
        return _table(["", *columns], [[r, *(v.get(c) for c in columns)] for r, v in content.items()])
    return _key_values(content)


def _extra(extra: dict) -> str:
    sections = "".join(f'<div id="extra-{i}"><h3>{escape(str(title))}</h3>{_extra_table(content)}</div>'
                       for i, (title, content) in enumerate(extra.items()))
    return _section("extra", "Further results", sections or _note("none"))


# ----------------------------------------------------------------------------- entry point


def write_report(path: str | Path, metrics: dict, curves: dict, grids: dict, extra: dict | None = None,
                 qc_examples: dict | None = None) -> Path:
    """Write the report and return its path (temporary file, then rename).

    Args:
        metrics: the content of ``metrics.json`` (see :func:`seas.evaluation.evaluate.evaluate_run`).
        curves: ``{set: {"roc": {"fpr", "tpr"}, "pr": {"recall", "precision"}}}`` (lists in [0, 1]).
        grids: ``{kind: {"count": n, "generated": [(rgb, mask)], "real": [(rgb, mask)]}}`` with
            ``(H, W, 3)`` uint8 images and ``(H, W)`` bool masks or None.
        extra: further sections ``{title: {row: value or {column: value}}}``.
        qc_examples: ``{kind: {"accepted": [(rgb, mask)], "rejected": [((rgb, mask), reasons)]}}``
            (:func:`seas.evaluation.rejected.qc_examples`); the quality-control section is shown
            when ``metrics["quality_control"]`` is set.
    """
    path = Path(path)
    title = f"SeaS evaluation: {metrics.get('run', {}).get('product', '')}"
    qc = metrics.get("quality_control")
    links = [("downstream", "answer"), ("samples", "pairs"), ("generated-measures", "are the pairs right?"),
             *([("quality-control", "quality control")] if qc else []), ("baselines", "baselines"),
             ("per-type", "per type"), ("curves", "curves"), ("quality", "quality"), ("summary", "run"),
             ("extra", "further results")]
    nav = "<nav>" + "".join(f'<a href="#{i}">{escape(t)}</a>' for i, t in links) + "</nav>"
    body = (_answer(metrics) + _samples(grids) + _measures(metrics)
            + (_quality_control(qc, qc_examples or {}) if qc else "") + _baselines(metrics) + _per_type(metrics)
            + _curves(curves) + _quality(metrics) + _summary(metrics) + _extra(extra or {}))
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{nav}{body}</body></html>\n")
    return write_text(path, page)
