"""Quality control of generated pairs: thresholds learned from the real training pairs, the
scores of one generated pair, and the accept/reject decision with its reasons."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from seas.data.foreground import product_foreground
from seas.data.readers import GOOD
from seas.data.transforms import sample_uint8
from seas.errors import ConfigError
from seas.files.images import as_mask, as_rgb
from seas.judge.classifier import TypeClassifier, crop, crop_box
from seas.judge.measures import anomaly_evidence, foreground_share
from seas.run import Run

ImageLike = np.ndarray | str | os.PathLike
MaskLike = np.ndarray | str | os.PathLike | None


def _image(image: ImageLike) -> np.ndarray:
    return as_rgb(image)


def _mask(mask: MaskLike, shape: tuple[int, int]) -> np.ndarray:
    return as_mask(mask, shape)

# ----------------------------------------------------------------------------
# Quality control
# ----------------------------------------------------------------------------


@dataclass
class QCThresholds:
    """Acceptance thresholds of generated pairs of one product (see :func:`learn_thresholds`).

    Attributes:
        classes: the classifier's classes (types, then ``"good"``), to name
            the predicted class in rejection reasons.
        min_confidence: ``{type or "good": p}``: the classifier's probability
            of the requested class must be at least ``p``.
        area_range: ``{type: (lo, hi)}``: accepted mask area fractions.
        min_foreground_share: ``{type: s}``: at least ``s`` of the mask's
            pixels must lie on the product (0: not checked).
        min_evidence_contrast: least :func:`anomaly_evidence` contrast, used
            only when a reference image is scored (not learned: real pairs have
            no reference; 0.2 means the change inside the mask is at least 1.5
            times the change outside).
        require_top_class: also require the requested class to be the
            classifier's most probable one.
    """

    classes: list[str]
    min_confidence: dict[str, float]
    area_range: dict[str, tuple[float, float]]
    min_foreground_share: dict[str, float] = field(default_factory=dict)
    min_evidence_contrast: float = 0.2
    require_top_class: bool = False

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        out = asdict(self)
        out["area_range"] = {k: [float(lo), float(hi)] for k, (lo, hi) in self.area_range.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> QCThresholds:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["area_range"] = {k: (float(v[0]), float(v[1])) for k, v in data["area_range"].items()}
        return cls(**data)


def learn_thresholds(classifier: TypeClassifier,
                     real_pairs_by_type: Mapping[str, Sequence[tuple[ImageLike, MaskLike]]],
                     normal_images: Sequence[ImageLike] = (), *, foreground: np.ndarray | None = None,
                     seed: int = 0, n_aug: int = 8, safety: float = 0.5, area_widen: float = 2.0,
                     min_evidence_contrast: float = 0.2, require_top_class: bool = False) -> QCThresholds:
    """Learn QC thresholds from the real training pairs (the only data known to be right).

    Args:
        classifier: fitted on these pairs (:meth:`TypeClassifier.fit`).
        real_pairs_by_type: ``{type: [(image, mask), ...]}`` real training
            anomalies (empty masks ignored).
        normal_images: real normal images, for the ``"good"`` threshold
            (without any, ``"good"`` gets the chance level ``1 / C``).
        foreground: ``(H, W)`` bool product region (:func:`seas.data.foreground.product_foreground`),
            or ``None`` to disable the foreground check.
        seed: seeds the augmented views.
        n_aug: augmented views per real example (plus its plain view).
        safety: factor (< 1) applied to the learned minima.
        area_widen: the area range is ``[min / area_widen, max * area_widen]``.
        min_evidence_contrast, require_top_class: copied to the result.

    Rules:
        * ``min_confidence[type] = safety * min`` over the real anomalies of
          the type and their ``n_aug`` augmented views (the training
          augmentation) of the probability of the type: a right generated
          pair should look at least about as typical as a perturbed real one.
          The classifier has seen these examples, so the minimum is
          optimistic; the safety factor absorbs that.  ``"good"`` likewise
          from whole-image views of the normal images.
        * ``area_range[type]``: the real areas' range, widened by ``area_widen``
          (few shots cover little of the true range).
        * ``min_foreground_share[type] = safety * min`` share of the real masks'
          pixels on the foreground (0 without a foreground).
    """
    rng = np.random.default_rng(seed)
    min_conf, area_range, min_share = {}, {}, {}
    for name, pairs in real_pairs_by_type.items():
        if name not in classifier.types:
            raise ValueError(f"type {name!r} is not a class of the classifier {classifier.classes}")
        true = classifier.classes.index(name)
        patches, areas, shares = [], [], []
        for image, mask in pairs:
            rgb = _image(image)
            binary = _mask(mask, rgb.shape[:2])
            if not binary.any():
                continue
            box = classifier.box(binary, rgb.shape[:2])
            patches.append(crop(rgb, box, classifier.size))
            patches.extend(classifier._augmented_crop(rgb, box, rng) for _ in range(n_aug))
            areas.append(float(binary.mean()))
            if foreground is not None:
                shares.append(foreground_share(binary, np.asarray(foreground, bool)))
        if not areas:
            raise ValueError(f"type {name!r} has no pair with a non-empty mask")
        probs = classifier.predict_crops(np.stack(patches))[:, true]
        min_conf[name] = safety * float(probs.min())
        area_range[name] = (min(areas) / area_widen, max(areas) * area_widen)
        min_share[name] = safety * min(shares) if shares else 0.0
    if normal_images:
        patches = []
        for image in normal_images:
            rgb = _image(image)
            box = crop_box(None, rgb.shape[:2])
            patches.append(crop(rgb, box, classifier.size))
            patches.extend(classifier._augmented_crop(rgb, box, rng) for _ in range(n_aug))
        good = classifier.classes.index(GOOD)
        min_conf[GOOD] = safety * float(classifier.predict_crops(np.stack(patches))[:, good].min())
    else:
        min_conf[GOOD] = 1.0 / len(classifier.classes)
    return QCThresholds(classes=list(classifier.classes), min_confidence=min_conf,
                        area_range=area_range, min_foreground_share=min_share,
                        min_evidence_contrast=float(min_evidence_contrast),
                        require_top_class=require_top_class)


def qc_scores(classifier: TypeClassifier, image: ImageLike, mask: MaskLike, kind: str,
              foreground: np.ndarray | None = None, reference: ImageLike | None = None) -> dict[str, float]:
    """Ground-truth-free scores of one generated pair, as plain floats.

    Args:
        classifier: fitted :class:`TypeClassifier`.
        image: ``(H, W, 3)`` uint8 generated image.
        mask: ``(H, W)`` bool generated mask (``None`` for a normal image).
        kind: the requested type, or ``"good"`` for a generated normal image.
        foreground: ``(H', W')`` bool product region, or ``None``.
        reference: the normal image the defect was placed on, if any.

    Returns ``{name: float}``: ``prob_kind`` (classifier probability of
    ``kind``), ``prob_good``, ``predicted_index`` (index into
    ``classifier.classes`` of the most probable class), ``area`` (mask area
    fraction); when the mask is non-empty, ``foreground_share`` (with a
    foreground) and ``evidence_inside`` / ``evidence_outside`` /
    ``evidence_contrast`` (with a reference).  Keys whose measure does not
    apply are left out, so every value is finite and strict-JSON safe.
    """
    if kind not in classifier.classes:
        raise ValueError(f"kind {kind!r} is not a class of the classifier {classifier.classes}")
    rgb = _image(image)
    binary = _mask(mask, rgb.shape[:2])
    probs = classifier.predict(rgb, binary)
    scores = {
        "prob_kind": float(probs[classifier.classes.index(kind)]),
        "prob_good": float(probs[classifier.classes.index(GOOD)]),
        "predicted_index": float(probs.argmax()),
        "area": float(binary.mean()),
    }
    if binary.any():
        if foreground is not None:
            scores["foreground_share"] = foreground_share(binary, np.asarray(foreground, bool))
        if reference is not None:
            ev = anomaly_evidence(rgb, reference, binary)
            scores.update(evidence_inside=float(ev["inside"]), evidence_outside=float(ev["outside"]),
                          evidence_contrast=float(ev["contrast"]))
    return scores


def qc_accept(scores: Mapping[str, float], kind: str, thresholds: QCThresholds) -> tuple[bool, list[str]]:
    """Accept or reject one generated pair from its :func:`qc_scores`.

    An anomaly pair is rejected for: an empty mask (never a mask), an area
    outside ``area_range[kind]``, a classifier probability of ``kind`` below
    ``min_confidence[kind]`` (or, with ``require_top_class``, another class
    ranked first), too few mask pixels on the product, or, when scored with a
    reference, an evidence contrast below ``min_evidence_contrast``.  A normal
    (``"good"``) image is rejected for a non-empty mask or a probability of
    ``"good"`` below ``min_confidence["good"]``.

    Returns ``(accepted, reasons)``; ``reasons`` is empty when accepted.
    """
    if kind not in thresholds.min_confidence:
        raise ValueError(f"no thresholds for kind {kind!r}")
    reasons = []
    predicted = thresholds.classes[int(scores["predicted_index"])]
    p, p_min = scores["prob_kind"], thresholds.min_confidence[kind]
    if kind == GOOD:
        if scores["area"] > 0:
            reasons.append(f"normal image with a non-empty mask (area {scores['area']:.4f})")
    elif scores["area"] <= 0:
        reasons.append("empty mask")
    else:
        lo, hi = thresholds.area_range[kind]
        if not lo <= scores["area"] <= hi:
            reasons.append(f"mask area {scores['area']:.4f} outside [{lo:.4f}, {hi:.4f}]")
    if p < p_min:
        reasons.append(f"classifier probability of {kind!r} {p:.3f} < {p_min:.3f} "
                       f"(reads as {predicted!r})")
    elif thresholds.require_top_class and predicted != kind:
        reasons.append(f"classifier ranks {predicted!r} above {kind!r}")
    share_min = thresholds.min_foreground_share.get(kind, 0.0)
    if "foreground_share" in scores and scores["foreground_share"] < share_min:
        reasons.append(f"only {scores['foreground_share']:.2f} of the mask on the product (< {share_min:.2f})")
    if "evidence_contrast" in scores and scores["evidence_contrast"] < thresholds.min_evidence_contrast:
        reasons.append(f"evidence contrast {scores['evidence_contrast']:.2f} "
                       f"< {thresholds.min_evidence_contrast:.2f} (the change is not in the mask)")
    return not reasons, reasons


# ----------------------------------------------------------------------------
# The judge of one run: what `seas generate --qc` scores with
# ----------------------------------------------------------------------------


@dataclass
class Judge:
    """Classifier, thresholds and product foreground of one run, all learned from its real
    training pairs and normal training images at the run's resolution (:func:`build_judge`).

    A mixture ``"A+B"`` has no class of its own: its ``prob_kind`` is the sum of its types'
    probabilities, its least confidence the smallest of theirs and its area range runs from the
    smallest lower bound to the sum of the upper bounds.
    """

    classifier: TypeClassifier
    thresholds: QCThresholds
    foreground: np.ndarray  # (R, R) bool

    def _parts(self, kind: str) -> list[str]:
        return [GOOD] if kind == GOOD else kind.split("+")

    def score(self, image: ImageLike, mask: MaskLike, kind: str, reference: ImageLike | None = None
              ) -> dict[str, float]:
        """:func:`qc_scores` of one pair; a mixture is scored as its first type, then its
        ``prob_kind`` replaced by the sum over its types."""
        parts = self._parts(kind)
        scores = qc_scores(self.classifier, image, mask, parts[0], self.foreground, reference)
        if len(parts) > 1:
            probs = self.classifier.predict(_image(image), _mask(mask, _image(image).shape[:2]))
            scores["prob_kind"] = float(sum(probs[self.classifier.classes.index(p)] for p in parts))
        return scores

    def decide(self, scores: Mapping[str, float], kind: str) -> tuple[bool, list[str]]:
        """:func:`qc_accept` with this judge's thresholds (a mixture's combined, see above)."""
        parts = self._parts(kind)
        if len(parts) == 1:
            return qc_accept(scores, kind, self.thresholds)
        t = self.thresholds
        mixed = QCThresholds(
            classes=t.classes, min_confidence={kind: min(t.min_confidence[p] for p in parts)},
            area_range={kind: (min(t.area_range[p][0] for p in parts), sum(t.area_range[p][1] for p in parts))},
            min_foreground_share={kind: min(t.min_foreground_share.get(p, 0.0) for p in parts)},
            min_evidence_contrast=t.min_evidence_contrast, require_top_class=False,
        )
        return qc_accept(scores, kind, mixed)

    def save(self, path: str | os.PathLike) -> None:
        """One file (``torch.save``), written atomically."""
        from seas.files.atomic import write_file

        state = {"classifier": self.classifier.state(), "thresholds": self.thresholds.to_dict(),
                 "foreground": torch.from_numpy(self.foreground.astype(np.uint8))}
        write_file(Path(path), lambda tmp: torch.save(state, tmp))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Judge:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(TypeClassifier.from_state(state["classifier"]), QCThresholds.from_dict(state["thresholds"]),
                   state["foreground"].numpy().astype(bool))


def build_judge(run: Run, grey: bool = False, seed: int = 0, steps: int = 300) -> Judge:
    """Train the judge of ``run`` on its real training anomalies (with masks) and normal training
    images, read as generated images are framed (the run's ``fit``, at its resolution; grey when
    the product is). The real test images are never seen."""
    data, size = run.data, run.resolution
    pairs = {name: [sample_uint8(s.image, s.mask, size, data.fit, data.mask_rule, grey) for s in run.split.train[name]]
             for name in run.types}
    pairs = {name: [(rgb, m) for rgb, m in read if m is not None and m.any()] for name, read in pairs.items()}
    empty = [name for name, read in pairs.items() if not read]
    if empty:
        raise ConfigError(f"--qc: type {empty[0]} has no training image with a non-empty mask at {size} px; "
                          f"quality control needs one per type (use --qc off)")
    normals = [sample_uint8(path, None, size, data.fit, data.mask_rule, grey)[0] for path in run.references]
    classifier = TypeClassifier().fit(pairs, normals, seed=seed, steps=steps)
    foreground = product_foreground(normals)
    thresholds = learn_thresholds(classifier, pairs, normals, foreground=foreground, seed=seed)
    return Judge(classifier, thresholds, foreground)
