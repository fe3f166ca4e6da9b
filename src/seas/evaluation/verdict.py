"""Did the generated pairs help? One answer from every downstream metric together.

The rule (:data:`RULE`, also printed in the report): compare ``real+generated`` with
``real_only`` on every metric both define (all of :func:`seas.evaluation.metrics.all_metrics`);
a metric *improved* when it rose by more than :data:`TOLERANCE`, *worsened* when it fell by more
than that. The pairs **helped** (``"yes"``) when more than half of the compared metrics improved
and none fell by more than :data:`MAX_DROP`; they did **not** help (``"no"``) when no more
metrics improved than worsened; anything else is **mixed**. The same rule compares
``real+generated`` with ``cut_paste`` (as many classic cut-paste pairs instead of generated
ones), so that a gain is read against what a copy-paste augmentation already gives.
"""

from __future__ import annotations

import math

TOLERANCE = 0.005  # a change within half a percentage point is no change (seed noise)
MAX_DROP = 0.02  # a "yes" tolerates no metric falling by more than two percentage points
RULE = (f"a metric counts as improved (worsened) when it rises (falls) by more than {TOLERANCE:g}; "
        f"the pairs helped when more than half of the metrics improved and none fell by more than "
        f"{MAX_DROP:g}, did not help when no more metrics improved than worsened, and are mixed otherwise")
NAMES = {"image_auroc": "image AUROC", "image_ap": "image AP", "image_f1_max": "image F1-max",
         "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP", "pixel_f1_max": "pixel F1-max",
         "iou": "IoU", "iou_at_0.5": "IoU@0.5", "aupro_0.3": "AUPRO@0.3"}
ANSWERS = {"yes": "they helped", "no": "they did not help", "mixed": "mixed, no clear gain"}


def metric_name(key: str) -> str:
    return NAMES.get(key, key)


def _defined(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def compare(candidate: dict[str, float], reference: dict[str, float]) -> dict:
    """Per metric ``candidate - reference`` over the metrics both define, in ``reference``'s order.

    Returns ``{"deltas": {key: d}, "improved": [keys], "worsened": [keys], "compared": n,
    "undefined": [keys], "helped": "yes"|"no"|"mixed"}`` (:func:`answer`).
    """
    keys = [k for k in reference if k in candidate]
    deltas = {k: float(candidate[k] - reference[k]) for k in keys if _defined(candidate[k]) and _defined(reference[k])}
    result = {"deltas": deltas, "improved": [k for k, d in deltas.items() if d > TOLERANCE],
              "worsened": [k for k, d in deltas.items() if d < -TOLERANCE], "compared": len(deltas),
              "undefined": [k for k in keys if k not in deltas]}
    result["helped"] = answer(result)
    return result


def answer(comparison: dict) -> str:
    """The rule (module docstring) on a :func:`compare` result."""
    improved, worsened, deltas = comparison["improved"], comparison["worsened"], comparison["deltas"]
    if not deltas:
        return "mixed"  # nothing to compare: no claim either way
    largest_drop = -min(deltas.values())
    if len(improved) > len(deltas) / 2 and largest_drop <= MAX_DROP:
        return "yes"
    if len(improved) <= len(worsened):
        return "no"
    return "mixed"


def _changes(comparison: dict) -> str:
    """``pixel AP +0.120, AUPRO@0.3 -0.220``: the changed metrics, largest change first."""
    changed = comparison["improved"] + comparison["worsened"]
    changed.sort(key=lambda k: -abs(comparison["deltas"][k]))
    return ", ".join(f"{metric_name(k)} {comparison['deltas'][k]:+.3f}" for k in changed)


def _why_mixed(comparison: dict) -> str:
    drops = [k for k, d in comparison["deltas"].items() if d < -MAX_DROP]
    if drops:
        return f"{', '.join(metric_name(k) for k in drops)} fell by more than {MAX_DROP:g}"
    return "the improved metrics are not a majority"


def verdict(downstream: dict[str, dict[str, float]]) -> dict:
    """The answer from ``{training set: all_metrics}`` (needs ``real_only`` and ``real+generated``).

    Returns ``{"helped", "sentence", "improved", "worsened", "deltas", "compared", "rule",
    "vs_cut_paste"}``; ``vs_cut_paste`` is the :func:`compare` of ``real+generated`` with
    ``cut_paste`` (``None`` without the baselines).
    """
    main = compare(downstream["real+generated"], downstream["real_only"])
    if not main["compared"]:
        sentence = "No metric is defined for both real_only and real+generated: the help cannot be judged."
    else:
        sentence = (f"Adding the generated pairs improved {len(main['improved'])} of {main['compared']} metrics "
                    f"and worsened {len(main['worsened'])}")
        changes = _changes(main)
        sentence += (f" ({changes})" if changes else "") + f": {ANSWERS[main['helped']]}"
        sentence += f" ({_why_mixed(main)})." if main["helped"] == "mixed" else "."
    vs_cut = None
    if "cut_paste" in downstream:
        vs_cut = compare(downstream["real+generated"], downstream["cut_paste"])
        sentence += " " + _cut_paste_sentence(vs_cut)
    return {"helped": main["helped"], "sentence": sentence, "improved": main["improved"],
            "worsened": main["worsened"], "deltas": main["deltas"], "compared": main["compared"],
            "rule": RULE, "vs_cut_paste": vs_cut}


def _cut_paste_sentence(vs_cut: dict) -> str:
    if not vs_cut["compared"]:
        return "Against cut_paste nothing could be compared."
    outcome = {"yes": "the generated pairs beat cut-paste", "no": "cut-paste did at least as well",
               "mixed": "neither is clearly better"}[vs_cut["helped"]]
    return (f"Against as many cut-paste pairs, real+generated was better on {len(vs_cut['improved'])} of "
            f"{vs_cut['compared']} metrics and worse on {len(vs_cut['worsened'])}: {outcome}.")
