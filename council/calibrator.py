"""Calibrator: from what the votes carry to the probability that the council's answer is right.

    votes ─► aggregator clusters ─► features of the best answer cluster ─► standardise ─► logistic ─► P(right)
    answer when P(right) >= threshold, the threshold set on validation ballots for a stated risk
    abstaining, the confidence is a second logistic on the same features: P(no answer is right), the chance
    that abstaining is right, which is not 1 - P(right) (the best answer can be wrong on an answerable question)

A logistic regression on a dozen features: few weights, monotone in each signal, and its output is a
probability by construction of its loss, which is what the verdict's confidence must be. It is fitted with
scikit-learn (already installed with sentence-transformers, the embedder's package; L2-regularised, no tuning
loop of our own); applying it needs nothing but arithmetic, so the council never imports scikit-learn. The
weights are a small versioned JSON file beside the catalog, with what they were fitted on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT_NAME, FORMAT_VERSION = "council-calibrator", 2  # 2 added the abstention head; 1 still loads
# What each feature measures, of the best answer cluster (the one of most share x grounding) unless said
FEATURES = {
    "share": "its share of the arrived vote weight",
    "grounding": "its support in the shared passages (1 without passages)",
    "peer_support": "the voters' mean preference for it under peer review (its share without review)",
    "abstain_share": "the abstention cluster's share of the weight",
    "abstain_peer_support": "the voters' mean preference for the abstention under peer review",
    "mean_logprob": "its members' mean token log-prob",
    "route_score": "its members' mean route score",
    "no_answer_margin": "all voters' mean no-answer margin, clipped to [-10, 10]",
    "answer_words": "log(1 + its words)",
    "answer_clusters": "how many distinct answers were given",
    "arrived": "how many votes arrived",
}
FEATURE_NAMES = tuple(FEATURES)


class CalibratorError(ValueError):
    """A calibrator file that cannot be used: unreadable, another format or version, or malformed weights."""


@dataclass(frozen=True)
class Calibrator:
    """Weights over standardised features; `probability` is all the council needs at run time."""

    weights: dict[str, float]
    bias: float
    mean: dict[str, float]
    scale: dict[str, float]
    threshold: float = 0.5  # answer when the probability is at least this
    max_risk: float | None = None  # the share of wrong answers the threshold was set for, on validation
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on: ballots, questions, config, scores
    # P(abstaining is right) over the same standardised features; None: 1 - P(right) (version 1 files)
    abstain_weights: dict[str, float] | None = None
    abstain_bias: float | None = None
    all_abstained: float | None = None  # P(abstaining is right) when every vote abstained; None: 1

    def __post_init__(self) -> None:
        for name in ("weights", "mean", "scale"):
            keys = set(getattr(self, name))
            if keys != set(FEATURE_NAMES):
                raise CalibratorError(f"calibrator {name}: features {sorted(keys)}, expected {sorted(FEATURE_NAMES)}")
        if any(not s > 0 for s in self.scale.values()):
            raise CalibratorError("calibrator scale: every feature's scale must be above 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise CalibratorError(f"calibrator threshold={self.threshold!r}: must be a probability")
        if (self.abstain_weights is None) != (self.abstain_bias is None) or (
                self.abstain_weights is not None and set(self.abstain_weights) != set(FEATURE_NAMES)):
            raise CalibratorError("calibrator abstain_weights and abstain_bias: give both, over the features "
                                  f"{sorted(FEATURE_NAMES)}, or neither")
        if self.all_abstained is not None and not 0.0 <= self.all_abstained <= 1.0:
            raise CalibratorError(f"calibrator all_abstained={self.all_abstained!r}: must be a probability")

    def probability(self, features: dict[str, float]) -> float:
        """P(the answer is right) for one question's features (FEATURE_NAMES, each a number)."""
        return self._logistic(self.weights, self.bias, features)

    def abstain_probability(self, features: dict[str, float] | None) -> float:
        """P(abstaining is right) for one question's features; None: every vote abstained."""
        if features is None:
            return 1.0 if self.all_abstained is None else self.all_abstained
        if self.abstain_weights is None:
            return 1.0 - self.probability(features)
        return self._logistic(self.abstain_weights, self.abstain_bias, features)

    def _logistic(self, weights: dict[str, float], bias: float, features: dict[str, float]) -> float:
        z = bias + sum(weights[n] * (features[n] - self.mean[n]) / self.scale[n] for n in FEATURE_NAMES)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "features": FEATURES, **asdict(self)}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> Calibrator:
        if data.get("format") != FORMAT_NAME or data.get("version") not in (1, FORMAT_VERSION):
            raise CalibratorError(f"not a {FORMAT_NAME} file of version {FORMAT_VERSION} "
                                  f"(format={data.get('format')!r}, version={data.get('version')!r})")
        try:
            return cls(**{k: v for k, v in data.items() if k not in ("format", "version", "features")})
        except TypeError as e:
            raise CalibratorError(f"malformed calibrator: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibratorError(f"calibrator file {path} does not exist") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CalibratorError(f"{path}: not a JSON calibrator ({e})") from None
        try:
            return cls.from_dict(data)
        except CalibratorError as e:
            raise CalibratorError(f"{path}: {e}") from None


def best_answer(clusters: Sequence):
    """The answer cluster of most share x grounding (the one a calibrated council may give), or None."""
    answers = [c for c in clusters if not c.abstention]
    return max(answers, key=lambda c: c.support, default=None)


def features(clusters: Sequence, arrived: Sequence) -> dict[str, float] | None:
    """The features of the best answer cluster among the aggregator's `clusters`, with the `arrived` votes;
    None when no answer cluster exists (every vote abstained): there is nothing to be right about."""
    best = best_answer(clusters)
    if best is None:
        return None
    answers = [c for c in clusters if not c.abstention]
    abstention = next((c for c in clusters if c.abstention), None)
    members = [v for v in arrived if v.specialist in best.members]
    margins = [max(-10.0, min(10.0, v.no_answer_margin)) for v in arrived if v.no_answer_margin is not None]
    mean = lambda xs, empty=0.0: sum(xs) / len(xs) if xs else empty  # noqa: E731
    return {
        "share": best.share,
        "grounding": 1.0 if best.grounding is None else best.grounding,
        "peer_support": best.share if best.peer_support is None else best.peer_support,
        "abstain_share": abstention.share if abstention else 0.0,
        "abstain_peer_support": (abstention.peer_support or 0.0) if abstention else 0.0,
        "mean_logprob": mean([v.mean_logprob for v in members if v.mean_logprob is not None]),
        "route_score": mean([v.route_score for v in members]),
        "no_answer_margin": mean(margins),
        "answer_words": math.log1p(len(best.answer.split())),
        "answer_clusters": float(len(answers)),
        "arrived": float(len(arrived)),
    }


def threshold_for_risk(probabilities: Sequence[float], right: Sequence[bool], max_risk: float) -> float:
    """The lowest threshold at which the answers kept (probability at least it) are wrong at most `max_risk`
    of the time, on these validation figures; 1.0 (answer nothing) when no threshold keeps the risk."""
    ranked = sorted(zip(probabilities, right), key=lambda x: -x[0])
    best, wrong = 1.0, 0
    for n, (p, ok) in enumerate(ranked, start=1):
        wrong += not ok
        if wrong / n <= max_risk and (n == len(ranked) or ranked[n][0] < p):  # cut only between distinct values
            best = p
    return best


def fit(rows: Sequence[dict[str, float]], right: Sequence[bool], *, max_risk: float = 0.1, c: float = 1.0,
        abstain_right: Sequence[bool] | None = None, all_abstained: float | None = None,
        fitted_on: dict | None = None) -> Calibrator:
    """A Calibrator fitted on validation `rows` (features) labelled `right`, its threshold set for `max_risk`.
    `abstain_right` (per row: abstaining was right, i.e. no answer exists) fits the abstention head, when both
    labels occur; `all_abstained` is kept as given. `c` is the inverse L2 strength of scikit-learn's
    LogisticRegression."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if len(rows) != len(right) or len(set(right)) < 2:
        raise ValueError(f"fit needs rows and labels of one length, right and wrong both present "
                         f"(got {len(rows)} rows, {sum(right)} right of {len(right)})")
    x = np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature keeps weight 0 instead of dividing by 0
    z = (x - mean) / scale
    model = LogisticRegression(C=c, max_iter=1000).fit(z, np.array(right, dtype=int))
    head = {}
    if abstain_right is not None and len(abstain_right) == len(rows) and len(set(abstain_right)) == 2:
        abstain = LogisticRegression(C=c, max_iter=1000).fit(z, np.array(abstain_right, dtype=int))
        head = {"abstain_weights": dict(zip(FEATURE_NAMES, map(float, abstain.coef_[0]))),
                "abstain_bias": float(abstain.intercept_[0])}
    calibrator = Calibrator(weights=dict(zip(FEATURE_NAMES, map(float, model.coef_[0]))),
                            bias=float(model.intercept_[0]), mean=dict(zip(FEATURE_NAMES, map(float, mean))),
                            scale=dict(zip(FEATURE_NAMES, map(float, scale))), fitted_on=dict(fitted_on or {}),
                            all_abstained=all_abstained, **head)
    threshold = threshold_for_risk([calibrator.probability(r) for r in rows], right, max_risk)
    return Calibrator(**{**asdict(calibrator), "threshold": threshold, "max_risk": max_risk})
