"""Aggregator: pure functions from the specialists' votes to one verdict, or an abstention that says why.

    votes ──► drop the missing (error set: timeout, host died) ──► quorum?
          ──► normalise + cluster the answers (rapidfuzz matrix; numbers must match; abstentions apart)
          ──► weigh each vote (strategy) ──► cluster weight, share of the arrived weight
          ──► grounding of each answer cluster in the shared passages
          ──► winner = heaviest cluster ──► abstention won? agreement low? grounding low? ─► Aggregate

No model and no torch here: everything is a function of plain strings and numbers, testable alone. "Nothing
fits" is a return value (an abstaining Aggregate with its reason), never an exception. When in doubt the
clustering keeps answers apart: a wrong split costs an abstention, a wrong merge costs a hallucination.

Confidence is always the confidence in what the verdict did:
    answered:  confidence = agreement * grounding            (grounding = 1 when no passages were given)
    abstained: confidence = 1 - best_share * best_grounding  over the answer clusters (1 when there are none),
               i.e. one minus the confidence that the best answer on the table would have had.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal, NamedTuple

from rapidfuzz import fuzz, process

from council import strict
from council.calibrator import Calibrator, best_answer, features
from council.metrics import abstain_f1, is_abstention, normalize_answer, token_f1
from council.prompts import ABSTAIN_ANSWER

Strategy = Literal["grounded", "majority", "weighted"]
Reason = Literal["answered", "abstention_won", "low_agreement", "low_grounding", "not_an_answer", "no_quorum",
                 "no_votes", "low_confidence"]
Scorer = Callable[..., float]
Processor = Callable[[str], str] | None

CONFIG_VERSION = 1
GROUNDING_FLOOR = 0.05  # `grounded` strategy: an unsupported cluster keeps this fraction of its weight
# Tokens that say nothing about support: left out of the coverage part of grounding.
_FUNCTION_WORDS = frozenset("of in on at by for to and or with from as is are was were be".split())
_ROMAN = re.compile(r"^(?=[ivx])x{0,3}(ix|iv|v?i{0,3})$")  # i .. xxxix: "louis xiv" is not "louis xv"


# ---------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Vote:
    """One specialist's answer. A vote with `error` set (timeout, dead host) is a missing vote, not a vote."""

    specialist: str
    answer: str
    route_score: float = 1.0  # the router's score for this specialist (a cosine; negatives count as 0)
    reliability: float = 1.0  # from the specialist's card, 0-1 (e.g. its validation accuracy)
    mean_logprob: float | None = None  # mean token log-prob of the answer; exp() of it is a 0-1 confidence
    # log P(abstain) - log P(the answer's first token): the specialist abstains above its card's threshold
    no_answer_margin: float | None = None
    latency_s: float | None = None
    error: str | None = None
    # peer review: this voter's mean token log-prob of each candidate answer on the table, the abstention
    # included (its row of the council's support matrix)
    review: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if not self.specialist.strip():
            raise ValueError("specialist='': every vote needs the name of the specialist that cast it")
        if not math.isfinite(self.route_score):
            raise ValueError(f"route_score={self.route_score!r}: must be a finite number")
        if not 0.0 <= self.reliability <= 1.0:
            raise ValueError(f"reliability={self.reliability!r}: must be between 0 and 1")
        for name in ("mean_logprob", "no_answer_margin"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name}={value!r}: must be finite (or None when unknown)")

    @property
    def missing(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Vote:
        return cls(**data)


@dataclass(frozen=True)
class Cluster:
    """Votes that give the same answer: its best-weighted wording, who said it, and its weight."""

    answer: str  # the wording of its heaviest vote (ABSTAIN_ANSWER for the abstention cluster)
    members: list[str]  # specialist names
    weight: float  # summed vote weights (times the grounding factor under `grounded`)
    share: float  # weight / total weight of the votes that arrived, 0-1
    abstention: bool
    grounding: float | None = None  # support in the passages, 0-1; None for abstentions or without passages
    peer_support: float | None = None  # the voters' mean preference for it under peer review, 0-1; None without

    @property
    def support(self) -> float:
        """share x grounding (the share alone without passages): how well this answer stands."""
        return self.share * (1.0 if self.grounding is None else self.grounding)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Aggregate:
    """What the council concluded from its votes, and why. `answer` is None when it abstained."""

    answer: str | None
    abstained: bool
    reason: Reason
    agreement: float  # the winning cluster's share of the arrived weight, 0-1 (0 when no vote arrived)
    grounding: float | None  # the winning answer's support in the passages; None: no passages, or no answer
    confidence: float  # 0-1, in the answer when answered, in abstaining when abstained (module docstring)
    clusters: list[Cluster]  # heaviest first
    votes: list[Vote]  # every vote, the missing ones included, in the order given
    missing: list[str]  # specialists whose vote did not arrive
    strategy: Strategy

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Aggregate:
        data = dict(data)
        data["clusters"] = [Cluster(**c) for c in data["clusters"]]
        data["votes"] = [Vote.from_dict(v) for v in data["votes"]]
        return cls(**data)


@dataclass(frozen=True)
class AggregatorConfig:
    """How votes become a verdict: the weighting strategy and the thresholds under which the council abstains."""

    strategy: Strategy = "grounded"  # majority: 1 per vote; weighted: route * reliability * p; grounded: + support
    min_agreement: float = 0.6  # abstain when the winner's share of the weight is below this (2 of 3 passes)
    min_grounding: float = 0.5  # abstain when the winner's support in the passages is below this
    quorum: int = 1  # abstain when fewer votes than this arrived
    cluster_threshold: float = 85.0  # rapidfuzz score (0-100) at which two normalised answers are the same
    # Abstain when the winning answer is longer than this many words: grounding measures support, and a sentence
    # copied from the context is fully "supported" without answering anything. 1.7 % of SQuAD 2.0 dev gold answers
    # are longer than 15 words; the catalog's specialists gave such an answer on 0-3 of 150 unseen questions.
    max_answer_words: int = 15

    def __post_init__(self) -> None:
        strict.check_types(self, prefix="aggregator.")
        for name in ("min_agreement", "min_grounding"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"aggregator.{name}={value!r}: must be a number between 0 and 1 (0 turns the check off)")
        if self.max_answer_words < 1:
            raise ValueError(f"aggregator.max_answer_words={self.max_answer_words!r}: must be at least 1")
        if self.quorum < 1:
            raise ValueError(f"aggregator.quorum={self.quorum!r}: must be an integer of at least 1 (the votes that must arrive)")
        if not 0.0 <= self.cluster_threshold <= 100.0:
            raise ValueError(
                f"aggregator.cluster_threshold={self.cluster_threshold!r}: a rapidfuzz score, must be between 0 and 100"
            )

    def to_dict(self) -> dict:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> AggregatorConfig:
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ValueError(f"aggregator.version={version!r}: this code reads aggregator config version {CONFIG_VERSION}")
        return strict.from_dict(cls, data, what="aggregator config")


# ------------------------------------------------------------------------------------------------- weights


def vote_weight(vote: Vote, *, strategy: Strategy) -> float:
    """A vote's weight before grounding: 1 under `majority`; otherwise
    max(route_score, 0) * reliability * exp(mean_logprob), where exp(mean_logprob) is the geometric-mean
    probability of the answer's tokens (1 when unknown)."""
    if strategy == "majority":
        return 1.0
    p = 1.0 if vote.mean_logprob is None else math.exp(min(vote.mean_logprob, 0.0))
    return max(vote.route_score, 0.0) * vote.reliability * p


# ------------------------------------------------------------------------------------------------ clusters


def _numbers(tokens: Sequence[str]) -> frozenset[str]:
    """Tokens that must match exactly: anything with a digit ("1066", "9th") and roman numerals up to xxxix."""
    return frozenset(t for t in tokens if any(c.isdigit() for c in t) or _ROMAN.match(t))


def _numbers_agree(a: frozenset[str], b: frozenset[str]) -> bool:
    """Same numbers, or one answer's numbers within the other's ("1066" ~ "14 october 1066"); a number
    never matches its absence ("william" !~ "william i")."""
    return a == b or (bool(a) and bool(b) and (a <= b or b <= a))


def cluster_answers(
    answers: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    scorer: Scorer = fuzz.token_set_ratio,
    processor: Processor = normalize_answer,
    threshold: float = 85.0,
) -> list[list[int]]:
    """Group answers that say the same thing; returns groups of indices into `answers`, seed first.

    Answers are processed once (normalised by default) and compared in one `process.cdist` matrix. Two answers
    are linked when their score is at least `threshold` and their numbers agree (a fuzzy ratio puts "1066" and
    "1067" at 75). Groups grow around seeds (leader clustering): the seed is the unassigned answer linked to
    the most weight among the unassigned (shorter wording first on a tie), and it takes every unassigned
    answer linked to it. So "Paris" gathers "the city of Paris" and "Paris, France", while "France", linked
    only to "Paris, France", does not chain in. All abstentions form one group of their own, last.
    """
    n = len(answers)
    w = [1.0] * n if weights is None else [float(x) for x in weights]
    texts = [processor(a) if processor else a for a in answers]
    numbers = [_numbers(t.split()) for t in texts]
    abstains = [is_abstention(a) for a in answers]
    # (n, n) similarity matrix, 0-100; the texts are already processed, so no processor here.
    scores = process.cdist(texts, texts, scorer=scorer, processor=None) if n else None

    def linked(i: int, j: int) -> bool:
        return i == j or (scores[i, j] >= threshold and _numbers_agree(numbers[i], numbers[j]))

    groups: list[list[int]] = []
    left = [i for i in range(n) if not abstains[i]]
    while left:
        seed = min(left, key=lambda i: (-sum(w[j] for j in left if linked(i, j)), len(texts[i]), i))
        group = [seed] + [j for j in left if j != seed and linked(seed, j)]
        groups.append(group)
        left = [j for j in left if j not in group]
    if any(abstains):
        groups.append([i for i in range(n) if abstains[i]])
    return groups


# ----------------------------------------------------------------------------------------------- grounding


def _coverage(tokens: list[str], passage_tokens: list[str], *, token_threshold: float) -> float:
    """Share of the answer's content tokens found in the passage, words fuzzily (fuzz.ratio >= token_threshold,
    so "century" finds "centuries"); 0 when any of its numbers is missing (a wrong date is not half right)."""
    present = set(passage_tokens)
    if not present or not _numbers(tokens) <= present:
        return 0.0
    content = [t for t in tokens if t not in _FUNCTION_WORDS] or tokens
    vocab = sorted(present)
    best = process.cdist(content, vocab, scorer=fuzz.ratio, processor=None).max(axis=1)  # (len(content),)
    return float((best >= token_threshold).mean())


def grounding(
    answer: str,
    passages: Sequence[str],
    *,
    scorer: Scorer = fuzz.partial_ratio,
    processor: Processor = normalize_answer,
    token_threshold: float = 75.0,
) -> float:
    """How well the answer is supported by the passages, 0-1: the best passage's
    (scorer(answer, passage) / 100) * (share of the answer's content tokens found in that passage).

    The partial ratio finds the answer's best alignment inside a passage; the token coverage keeps a long
    invented sentence that shares a word or two from looking grounded, and every number must appear exactly
    ("1067" against a passage saying 1066 scores 0). An abstention claims nothing and needs no support: 1.0.
    No passages: 0.0.
    """
    if is_abstention(answer):
        return 1.0
    text = processor(answer) if processor else answer
    tokens = text.split()
    best = 0.0
    for passage in passages:
        ptext = processor(passage) if processor else passage
        if not ptext or not tokens:
            continue
        fuzzy = scorer(text, ptext) / 100.0
        if fuzzy > best:  # coverage is the costlier part: skip passages that cannot beat the best
            best = max(best, fuzzy * _coverage(tokens, ptext.split(), token_threshold=token_threshold))
    return best


# ----------------------------------------------------------------------------------------------- aggregate


def peer_support(votes: Sequence[Vote], answers: Sequence[set[str]]) -> list[float | None]:
    """Per group of answer wordings: the reviewers' mean probability of it, each reviewer's mean log-probs
    turned into a distribution over the candidates it scored (a softmax). None for all when nobody reviewed."""
    reviews = [v.review for v in votes if v.review]
    if not reviews:
        return [None] * len(answers)
    preferences = []
    for review in reviews:
        top = max(review.values())
        weights = {a: math.exp(lp - top) for a, lp in review.items()}
        total = sum(weights.values())
        preferences.append({a: w / total for a, w in weights.items()})
    return [sum(sum(p.get(a, 0.0) for a in group) for p in preferences) / len(preferences) for group in answers]


def _abstain_confidence(clusters: Sequence[Cluster]) -> float:
    """1 - (share * grounding) of the best answer cluster: how sure we are that no answer deserved to stand."""
    return 1.0 - max((c.support for c in clusters if not c.abstention), default=0.0)


def _clusters(
    arrived: Sequence[Vote],
    passages: Sequence[str] | None,
    config: AggregatorConfig,
    scorer: Scorer,
    grounding_scorer: Scorer,
) -> list[Cluster]:
    """Cluster the arrived votes, weigh them and ground each answer cluster."""
    weights = [vote_weight(v, strategy=config.strategy) for v in arrived]
    groups = cluster_answers(
        [v.answer for v in arrived], weights=weights, scorer=scorer, threshold=config.cluster_threshold
    )
    parts = []  # per group: (answer, members, weight, abstention, grounding)
    for g in groups:
        abstention = is_abstention(arrived[g[0]].answer)
        head = max(g, key=lambda i: weights[i])  # the first of equal weights: the seed
        ground = None
        if passages is not None and not abstention:
            # the best-supported wording speaks for the cluster: a literal paraphrase may be supported
            ground = max(grounding(a, passages, scorer=grounding_scorer) for a in {arrived[i].answer for i in g})
        weight = sum(weights[i] for i in g)
        if config.strategy == "grounded" and ground is not None:
            weight *= max(ground, GROUNDING_FLOOR)
        answer = ABSTAIN_ANSWER if abstention else arrived[head].answer.strip()
        parts.append((answer, [arrived[i].specialist for i in g], weight, abstention, ground))
    total = sum(p[2] for p in parts)
    support = peer_support(arrived, [{arrived[i].answer.strip() for i in g} for g in groups])
    clusters = [Cluster(a, m, w, w / total if total > 0 else 1.0 / len(parts), ab, gr, ps)
                for (a, m, w, ab, gr), ps in zip(parts, support)]
    # heaviest first; on a tie the abstention first (the conservative choice), then in seeding order (stable)
    return sorted(clusters, key=lambda c: (-c.weight, not c.abstention))


def aggregate(
    votes: Sequence[Vote],
    *,
    passages: Sequence[str] | None = None,
    config: AggregatorConfig | None = None,
    scorer: Scorer = fuzz.token_set_ratio,
    grounding_scorer: Scorer = fuzz.partial_ratio,
    calibrator: Calibrator | None = None,
) -> Aggregate:
    """Votes (and the shared passages, if any) to a verdict. With a `calibrator`, after the quorum: the best
    answer cluster (share x grounding) is given when its calibrated probability of being right reaches the
    calibrator's threshold (else `low_confidence`), unless it is `not_an_answer`; the confidence is that
    probability, or the calibrator's probability that abstaining is right when abstaining. Without one: Checks, in order: no vote arrived (`no_votes`),
    fewer than `quorum` arrived (`no_quorum`), the abstention cluster won (`abstention_won`), the winner's share
    is under `min_agreement` (`low_agreement`), its grounding is under `min_grounding` (`low_grounding`), it has
    more than `max_answer_words` words (`not_an_answer`: copied text, not an answer); else `answered`. `passages=None` skips grounding; an empty list means no support (grounding 0)."""
    config = AggregatorConfig() if config is None else config
    if not isinstance(config, AggregatorConfig):
        raise TypeError(f"config={config!r}: must be an AggregatorConfig (build one with AggregatorConfig(...))")
    bad = [v for v in votes if not isinstance(v, Vote)]
    if bad:
        raise TypeError(f"votes must be Vote objects, got {type(bad[0]).__name__}: {bad[0]!r}")
    votes = list(votes)
    arrived = [v for v in votes if not v.missing]
    missing = [v.specialist for v in votes if v.missing]

    def verdict(reason: Reason, clusters: list[Cluster], winner: Cluster | None = None,
                confidence: float | None = None) -> Aggregate:
        winner = winner or (clusters[0] if clusters else None)
        answered = reason == "answered"
        ground = winner.grounding if winner is not None else None
        if confidence is None and answered:
            confidence = winner.support
        elif confidence is None:
            confidence = _abstain_confidence(clusters)
        return Aggregate(
            answer=winner.answer if answered else None,
            abstained=not answered,
            reason=reason,
            agreement=winner.share if winner is not None else 0.0,
            grounding=ground,
            confidence=confidence,
            clusters=clusters,
            votes=votes,
            missing=missing,
            strategy=config.strategy,
        )

    if not arrived:
        return verdict("no_votes", [])
    clusters = _clusters(arrived, passages, config, scorer, grounding_scorer)
    winner = clusters[0]
    if len(arrived) < config.quorum:
        return verdict("no_quorum", clusters)
    if calibrator is not None:
        best = best_answer(clusters)
        if best is None:
            return verdict("abstention_won", clusters, confidence=calibrator.abstain_probability(None))
        f = features(clusters, arrived)
        p, q = calibrator.probability(f), calibrator.abstain_probability(f)
        if len(best.answer.split()) > config.max_answer_words:
            return verdict("not_an_answer", clusters, best, q)
        answered = p >= calibrator.threshold
        return verdict("answered" if answered else "low_confidence", clusters, best, p if answered else q)
    if winner.abstention:
        return verdict("abstention_won", clusters)
    if winner.share < config.min_agreement:
        return verdict("low_agreement", clusters)
    if winner.grounding is not None and winner.grounding < config.min_grounding:
        return verdict("low_grounding", clusters)
    if len(winner.answer.split()) > config.max_answer_words:
        return verdict("not_an_answer", clusters)
    return verdict("answered", clusters)


# ------------------------------------------------------------------------------------ fitting thresholds


class LabeledExample(NamedTuple):
    """One validation question: its votes and passages, the gold answers, and whether it is answerable."""

    votes: Sequence[Vote]
    passages: Sequence[str] | None
    golds: Sequence[str]
    answerable: bool


DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0.0, 0.05, ..., 1.0
CORRECT_F1 = 0.5  # an answer with token F1 under this against the golds counts as a hallucination


def _utility(answered: bool, answer: str | None, golds: Sequence[str], answerable: bool) -> tuple[float, bool]:
    """(F1 earned, hallucinated) for one example: an answer earns its token F1 when the question is
    answerable, and hallucinates when the question is not, or when its F1 is under CORRECT_F1."""
    if not answered:
        return 0.0, False
    f1 = token_f1(answer, golds) if answerable else 0.0
    return f1, (not answerable) or f1 < CORRECT_F1


def evaluate(examples: Sequence[LabeledExample], *, config: AggregatorConfig, penalty: float = 1.0) -> dict:
    """Run `aggregate` on labelled examples. objective = mean F1 earned - penalty * hallucination rate
    (both over all examples; an abstention earns 0 and hallucinates never)."""
    f1s, hallucinated, abstained = [], [], []
    for votes, passages, golds, answerable in examples:
        result = aggregate(votes, passages=passages, config=config)
        f1, bad = _utility(not result.abstained, result.answer, golds, answerable)
        f1s.append(f1)
        hallucinated.append(bad)
        abstained.append(result.abstained)
    n = max(len(f1s), 1)
    unanswerable = [not ex.answerable for ex in examples]
    return {
        "n": len(f1s),
        "objective": sum(f1s) / n - penalty * sum(hallucinated) / n,
        "answer_f1": sum(f1s) / n,
        "hallucination_rate": sum(hallucinated) / n,
        "coverage": 1.0 - sum(abstained) / n,
        "abstain_f1": abstain_f1(abstained, unanswerable),
    }


def fit_thresholds(
    examples: Sequence[LabeledExample],
    *,
    config: AggregatorConfig | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    penalty: float = 1.0,
) -> AggregatorConfig:
    """Choose min_agreement and min_grounding (each from `grid`) that maximise `evaluate`'s objective:
    mean F1 earned - penalty * hallucination rate. Strategy, quorum and cluster threshold stay as given.

    Each example is aggregated once with both thresholds at 0; a pair (a, g) then answers exactly those
    examples that answered there with agreement >= a and grounding >= g (or no grounding), so the grid costs
    no further aggregation. Ties go to the lowest thresholds (the most answers for the same objective).
    """
    config = AggregatorConfig() if config is None else config
    if not examples:
        raise ValueError("examples is empty: fit_thresholds needs labelled examples, answerable and not")
    if penalty < 0:
        raise ValueError(f"penalty={penalty!r}: must be at least 0 (the cost of one hallucination in F1 points)")
    open_config = replace(config, min_agreement=0.0, min_grounding=0.0)
    rows = []  # (could answer, agreement, grounding, f1 if answered, hallucinated if answered)
    for votes, passages, golds, answerable in examples:
        r = aggregate(votes, passages=passages, config=open_config)
        f1, bad = _utility(True, r.answer or "", golds, answerable)
        rows.append((r.reason == "answered", r.agreement, r.grounding, f1, bad))
    best, best_pair = -math.inf, (config.min_agreement, config.min_grounding)
    for a in sorted(grid):
        for g in sorted(grid):
            score = sum(f1 - penalty * bad for ok, agr, gr, f1, bad in rows
                        if ok and agr >= a and (gr is None or gr >= g))
            if score > best + 1e-12:
                best, best_pair = score, (a, g)
    return replace(config, min_agreement=float(best_pair[0]), min_grounding=float(best_pair[1]))
