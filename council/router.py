"""Router: which specialists should answer a question, with every score visible.

    Profile (name, description, example questions) ──► embedded once: example rows + a centroid per profile
    question ──► embed ──► score per profile = w * mean(top-m example cosines) + (1 - w) * centroid cosine
             ──► profiles at or above their threshold, best first, at most max_k
             ──► seats left to min_k: the reserve (general readers), never a profile on a score below its
                 threshold ──► RouteChoice

Nearest examples catch a question close to a few typical ones (a named entity, a phrasing); the centroid
catches the domain as a whole and is harder to fool by one stray example. Thresholds are data: one per
specialist with a global fallback, fitted on labelled validation questions that include out-of-scope ones.
"Nothing fits" is a RouteChoice with no specialists and a reason, never an exception.

Who sits: a specialist whose score is below its threshold is noise for this question (asked where Normandy
is, history, then two closed-book specialists that answered with invented names), so it does not vote. When
fewer than min_k pass, the seats left go to the reserve: specialists that read any context and are never
routed (the catalog's general reader). `top_up="next_best"` restores filling with the next best scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from council import strict
from council.embedder import TextEncoder, get_embedder


@dataclass(frozen=True)
class Profile:
    """What a specialist is for: its name, a one-line description and typical questions (from its card)."""

    name: str
    description: str
    examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("profile name is empty: give every specialist a name")
        if not self.description.strip() and not any(e.strip() for e in self.examples):
            raise ValueError(f"profile {self.name!r} has neither a description nor examples: give it at least one")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RouterConfig:
    """How questions are scored and how many specialists are chosen."""

    threshold: float = 0.35  # global fallback: a specialist needs at least this score to be chosen
    thresholds: dict[str, float] = field(default_factory=dict)  # per specialist, overriding the global one
    min_k: int = 1  # when at least one passes, seat others up to min_k (for a second opinion)
    max_k: int = 3
    # who fills the seats left to min_k: the reserve (general readers), or the next best scores whatever they are
    top_up: Literal["reserve", "next_best"] = "reserve"
    top_m: int = 1  # nearest examples averaged; 1 (the max) beat 3 and 10 on benchmarks/routing.py validation
    example_weight: float = 0.5  # share of the nearest-example score (1 - share for the centroid)

    def __post_init__(self) -> None:
        strict.check_types(self, prefix="router.")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"router.threshold={self.threshold!r}: a cosine score, must be between -1 and 1")
        if not 0 <= self.min_k <= self.max_k or self.max_k < 1:
            raise ValueError(f"router.min_k={self.min_k!r}, max_k={self.max_k!r}: need 0 <= min_k <= max_k and max_k >= 1 "
                             "(a council seats min_k=3 by default: set both)")
        if self.top_m < 1:
            raise ValueError(f"router.top_m={self.top_m!r}: must be at least 1 (1 = the nearest example only)")
        if self.top_up not in ("reserve", "next_best"):
            raise ValueError(f"router.top_up={self.top_up!r}: must be 'reserve' or 'next_best'")
        if not 0.0 <= self.example_weight <= 1.0:
            raise ValueError(f"router.example_weight={self.example_weight!r}: must be between 0 and 1")

    def threshold_of(self, name: str) -> float:
        return self.thresholds.get(name, self.threshold)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RouterConfig:
        return strict.from_dict(cls, data, what="router config")


@dataclass(frozen=True)
class RouteChoice:
    """The specialists chosen for one question, every profile's score, and why nothing was chosen if so."""

    question: str
    chosen: list[str]  # best first, the reserve seated last; empty = nothing fits
    scores: dict[str, float]  # every profile, best first
    thresholds: dict[str, float]  # the threshold each profile was held to
    reason: str | None = None  # set when nothing fits
    reserve: list[str] = field(default_factory=list)  # the chosen that sit as reserve, not by their score

    @property
    def fallback(self) -> bool:
        """True when no specialist fits and the council must fall back (base model or abstain)."""
        return not self.chosen

    def to_dict(self) -> dict:
        return {**asdict(self), "fallback": self.fallback}


@dataclass(frozen=True)
class FitReport:
    """What `Router.fit` chose, and the routing accuracy on the fitting questions before and after."""

    thresholds: dict[str, float]
    accuracy_before: float
    accuracy_after: float
    questions: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check_question(question: object) -> str:
    if not isinstance(question, str):
        raise TypeError(f"question must be a str, got {type(question).__name__}")
    if not question.strip():
        raise ValueError(f"empty question {question!r}: give a non-blank question to route")
    return question


class Router:
    """Scores questions against specialist profiles and picks the ones that fit."""

    def __init__(
        self,
        profiles: Sequence[Profile],
        *,
        config: RouterConfig | None = None,
        embedder: TextEncoder | None = None,
        reserve: Sequence[str] = (),
    ) -> None:
        """`reserve`: specialists without a profile that fill the seats left to min_k, in this order."""
        if not profiles:
            raise ValueError("a router needs at least one profile")
        self.names = [p.name for p in profiles]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate profile names in {self.names}: every specialist needs its own name")
        self.reserve = list(reserve)
        if set(self.reserve) & set(self.names) or len(set(self.reserve)) != len(self.reserve):
            raise ValueError(f"reserve {self.reserve} repeats a name or names a routed profile {self.names}: "
                             "a reserve specialist is seated only when the routed ones leave seats")
        self.profiles = list(profiles)
        self.embedder = embedder if embedder is not None else get_embedder()
        self.config = config or RouterConfig()
        # Examples of all profiles in one matrix, so a question is scored against all of them in one product.
        # The description is one more example: it is the card's own summary of what the specialist is for.
        texts, owners = [], []
        for i, p in enumerate(self.profiles):
            rows = [t for t in [p.description, *p.examples] if t.strip()]
            texts.extend(rows)
            owners.extend([i] * len(rows))
        self._examples = self.embedder.encode(texts)  # (E, dim) unit rows
        self._owner = np.asarray(owners)  # (E,) profile index of each example row
        centroids = np.stack([self._examples[self._owner == i].mean(axis=0) for i in range(len(self.profiles))])
        self._centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)  # (P, dim)

    @property
    def config(self) -> RouterConfig:
        return self._config

    @config.setter
    def config(self, config: RouterConfig) -> None:
        """Checked whenever it is set: a threshold for a name the router does not know is a typo, not a no-op."""
        unknown = sorted(set(config.thresholds) - set(self.names))
        if unknown:
            raise ValueError(f"thresholds for unknown specialists {unknown}; known: {self.names}")
        self._config = config

    def score_matrix(self, questions: Sequence[str]) -> np.ndarray:
        """(len(questions), P) combined scores, in profile order; one embedding call for all questions."""
        q = self.embedder.encode([_check_question(x) for x in questions])  # (Q, dim)
        sims = q @ self._examples.T  # (Q, E)
        m = self.config.top_m
        nearest = np.empty((len(q), len(self.profiles)), dtype=np.float32)
        for i in range(len(self.profiles)):
            own = sims[:, self._owner == i]
            top = -np.partition(-own, min(m, own.shape[1]) - 1, axis=1)[:, :m]  # the m largest, any order
            nearest[:, i] = top.mean(axis=1)
        w = self.config.example_weight
        return w * nearest + (1 - w) * (q @ self._centroids.T)

    def scores(self, question: str) -> dict[str, float]:
        """Every profile's score for one question, best first."""
        return self._choose(question, self.score_matrix([question])[0]).scores

    def route(self, question: str) -> RouteChoice:
        """The specialists for one question; an empty choice with a reason when none fits."""
        return self._choose(question, self.score_matrix([question])[0])

    def route_many(self, questions: Sequence[str]) -> list[RouteChoice]:
        return [self._choose(q, row) for q, row in zip(questions, self.score_matrix(questions))]

    def _choose(self, question: str, row: np.ndarray) -> RouteChoice:
        limits = self._threshold_vector()
        cfg = self.config
        chosen = _select(row[None, :], limits, cfg.min_k, cfg.max_k, next_best=cfg.top_up == "next_best")[0]
        order = np.argsort(-row, kind="stable")
        best = int(order[0])
        reserve = self.reserve[:max(cfg.min_k - len(chosen), 0)] if chosen else []
        reason = None
        if not chosen:
            reason = (
                f"no specialist reaches its threshold (best: {self.names[best]} "
                f"{row[best]:.3f} < {limits[best]:.3f})"
            )
        return RouteChoice(
            question=question,
            chosen=[self.names[i] for i in chosen] + reserve,
            scores={self.names[i]: round(float(row[i]), 4) for i in order},
            thresholds={n: float(t) for n, t in zip(self.names, limits)},
            reason=reason,
            reserve=reserve,
        )

    def _threshold_vector(self) -> np.ndarray:
        return np.array([self.config.threshold_of(n) for n in self.names], dtype=np.float64)

    def fit(self, questions: Sequence[str], labels: Sequence[str | None], *, rounds: int = 3) -> FitReport:
        """Fit one threshold per specialist on labelled questions (label None = out of scope, route nowhere).

        A question is routed right when its specialist is among the chosen, or, out of scope, when none is.
        First the one shared threshold that maximises that accuracy, then coordinate ascent from it: each
        specialist's threshold in turn is set to its best value with the others fixed. A best value is the
        middle of the widest best interval, for a margin on unseen questions.
        """
        if len(questions) != len(labels) or not questions:
            raise ValueError(f"fit needs as many labels as questions, at least one: {len(questions)} vs {len(labels)}")
        unknown = sorted({lb for lb in labels if lb is not None} - set(self.names))
        if unknown:
            raise ValueError(f"labels name unknown specialists {unknown}; known: {self.names} (None = out of scope)")
        scores = self.score_matrix(questions)  # (Q, P)
        target = np.array([self.names.index(lb) if lb is not None else -1 for lb in labels])
        limits = self._threshold_vector()
        before = self._accuracy(scores, target, limits)
        limits[:] = self._best_threshold(scores, target, limits, None)
        for _ in range(rounds):
            for p in range(len(self.names)):
                limits[p] = self._best_threshold(scores, target, limits, p)
        thresholds = {n: round(float(t), 4) for n, t in zip(self.names, limits)}
        self.config = replace(self.config, thresholds=thresholds)
        after = self._accuracy(scores, target, self._threshold_vector())
        return FitReport(thresholds, before, after, len(questions))

    def _best_threshold(self, scores: np.ndarray, target: np.ndarray, limits: np.ndarray, p: int | None) -> float:
        """The best threshold for profile p with the others fixed, or for all profiles at once (p None)."""
        values = np.unique(scores if p is None else scores[:, p])
        # Candidates between consecutive observed scores, plus one below all and one above all.
        cands = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
        accs = np.empty(len(cands))
        trial = limits.copy()
        for i, c in enumerate(cands):
            trial[slice(None) if p is None else p] = c
            accs[i] = self._accuracy(scores, target, trial)
        best = np.flatnonzero(accs == accs.max())
        # The best candidates may form several runs; take the widest run (in score units) and its middle.
        runs = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
        run = max(runs, key=lambda r: cands[r[-1]] - cands[r[0]])
        return float((cands[run[0]] + cands[run[-1]]) / 2)

    def _accuracy(self, scores: np.ndarray, target: np.ndarray, limits: np.ndarray) -> float:
        cfg = self.config
        return _accuracy(scores, target, limits, cfg.min_k, cfg.max_k, next_best=cfg.top_up == "next_best")


def _select(scores: np.ndarray, limits: np.ndarray, min_k: int, max_k: int, *, next_best: bool) -> list[list[int]]:
    """Chosen profile indices per row: those at or above their limit, best first, at most max_k; when any
    passes and `next_best`, topped up with the next best to min_k."""
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")
        passing = [int(i) for i in order if row[i] >= limits[i]][:max_k]
        if next_best and passing and len(passing) < min_k:
            passing += [int(i) for i in order if int(i) not in passing][: min_k - len(passing)]
        out.append(passing)
    return out


def _accuracy(scores: np.ndarray, target: np.ndarray, limits: np.ndarray, min_k: int, max_k: int, *,
              next_best: bool) -> float:
    """Share routed right: the labelled specialist among the chosen, or nothing chosen for out of scope (-1).

    The same decision as `_select`, vectorised over questions, because `fit` calls it thousands of times
    (tests check the two agree)."""
    passing = scores >= limits  # (Q, P)
    n_pass = passing.sum(axis=1)
    rank = np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1)  # (Q, P) 0 = best
    rows = np.arange(len(scores))
    t = np.maximum(target, 0)
    above = rank < rank[rows, t][:, None]  # profiles ranked above the target
    t_passes = passing[rows, t]
    kept = t_passes & ((passing & above).sum(axis=1) < max_k)
    topped_up = next_best & ~t_passes & (n_pass >= 1) & ((~passing & above).sum(axis=1) < min_k - n_pass)
    right = np.where(target >= 0, kept | topped_up, n_pass == 0)
    return float(right.mean())
