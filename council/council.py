"""The Council: route, retrieve once, fan out to the specialists in one batch, aggregate.

    question ─► check ─► Router.route ─► DocumentStore.search + pack (once, shared by all k)
             ─► one RAG prompt ─► HostGroup.generate (one mixed-adapter batch per host, the hosts in parallel,
                                   up to a deadline; a host that timed out or died gives missing votes)
             ─► votes ─► aggregate ─► Verdict

`ask` runs those stages in that order for one question; `ask_many` routes and retrieves every question,
then answers all their rows in a few large batches.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from council.aggregator import Aggregate, Vote, aggregate, grounding
from council.base_model import builtin, resolve, same_base
from council.calibrator import Calibrator
from council.config import ConfigError, CouncilConfig
from council.engine import Request
from council.hosts import AdapterSpec, Host, HostFailure, HostGroup, HostSpec
from council.prompts import ABSTAIN_ANSWER, rag_messages
from council.retrieval import Context, pack
from council.router import Profile, RouteChoice, Router

BASE_VOTER = "base"  # the name of the base model's vote when no specialist fits and fallback is "base"
READING_DOMAIN = "reading"  # the card domain of general readers: the council's reserve by default


class QuestionError(ValueError):
    """A question that cannot be asked: empty, not text, or too long under the "error" policy."""


def check_question(question: str, *, max_chars: int, overlong: str = "error") -> tuple[str, bool]:
    """The question stripped (and cut to max_chars when overlong="truncate"), and whether it was cut."""
    if not isinstance(question, str):
        raise QuestionError(f"the question must be text, got {type(question).__name__}")
    try:  # bytes that are not UTF-8 reach us from argv or files as lone surrogates
        question.encode("utf-8")
    except UnicodeEncodeError as e:
        raise QuestionError(f"the question is not valid UTF-8 text (byte {e.start}): re-encode it as UTF-8") from e
    question = question.strip()
    if not question:
        raise QuestionError("the question is empty: ask something")
    if len(question) <= max_chars:
        return question, False
    if overlong == "truncate":
        return question[:max_chars], True
    raise QuestionError(f"the question has {len(question)} characters, more than max_question_chars={max_chars}: "
                        "shorten it, or set overlong='truncate'")


@dataclass(frozen=True)
class Citation:
    """A passage of the shared context that supports the answer."""

    id: str
    source: str
    title: str | None
    support: float  # grounding of the answer in this passage alone, 0-1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """The council's answer to one question, or its abstention, with everything that led to it."""

    question: str
    answer: str | None  # None when abstaining
    abstained: bool
    reason: str  # answered, abstention_won, low_agreement, low_grounding, no_quorum, no_votes, no_route
    agreement: float
    confidence: float
    grounding: float | None
    votes: list[Vote]
    citations: list[Citation]
    context: list[str]  # ids of every passage the specialists read
    route: RouteChoice
    timings: dict[str, float]  # seconds per stage
    missing: list[str] = field(default_factory=list)  # specialists whose vote did not arrive
    truncated: bool = False  # the question was cut to max_question_chars (overlong="truncate")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["route"] = self.route.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def _chunks(sizes: Sequence[int], limit: int) -> list[tuple[int, int]]:
    """Row ranges of at most `limit` rows that never split one question's rows (its peer review needs them
    together), unless that question alone has more."""
    chunks, start, rows = [], 0, 0
    for n in sizes:
        if rows and rows + n > limit:
            chunks.append((start, start + rows))
            start, rows = start + rows, 0
        rows += n
    if rows:
        chunks.append((start, start + rows))
    return chunks


class Council:
    """A council of specialists on one base model, a router, a shared document store and an aggregator."""

    def __init__(self, config: CouncilConfig | None = None, *, store=None, host: Host | HostGroup | None = None,
                 embedder=None):
        """Parts not given are built from the config; `embedder` (router and demo store) defaults to MiniLM.

        Hosts come from `config.hosts` (in-process, or Ray actors placed as it says), unless `host` gives a
        Host or a HostGroup already loaded (the council then does not close it)."""
        from specialists.registry import CATALOG_DIR, get, load_catalog

        self.config = config = config or CouncilConfig()
        if host is None and builtin(config.base_model) is None:
            resolve(config.base_model)  # a missing model is named now, not as "no specialists trained on it"
        catalog_dir = Path(config.catalog) if config.catalog else CATALOG_DIR
        if not catalog_dir.is_dir():
            raise ConfigError(f"catalog={str(catalog_dir)!r}: no such folder of specialists")
        catalog = load_catalog(catalog_dir)
        # by default the routable specialists trained on this council's base (one base per council for now)
        on_base = lambda s: same_base(s.card.base_model.get("name", ""), config.base_model)  # noqa: E731
        names = config.specialists or [n for n, s in catalog.items() if s.card.routing.get("routable", True)
                                       and on_base(s)]
        reserve = config.reserve if config.reserve is not None else [
            n for n, s in catalog.items() if s.card.domain == READING_DOMAIN and on_base(s)]
        self.reserve = [n for n in reserve if n not in names]  # a routed specialist sits by its score
        self.specialists = {n: get(catalog, n) for n in [*names, *self.reserve]}
        if not self.specialists:
            bases = sorted({str(s.card.base_model.get("name")) for s in catalog.values()})
            raise ConfigError(f"no specialists to seat: the catalog {catalog_dir} holds none" + (
                f" trained on base_model={config.base_model!r} (its specialists' bases: {', '.join(bases)}); "
                "choose one of those bases or name the specialists" if catalog else ""))
        self.calibrator = Calibrator.load(config.calibrator) if config.calibrator else None
        self.router = Router([Profile(n, s.card.description, list(s.card.routing.get("examples", [])))
                              for n, s in self.specialists.items() if n not in self.reserve],
                             config=config.router, embedder=embedder, reserve=self.reserve)
        self.store = store if store is not None else self._open_store()
        self._owns_host = host is None
        self.host = HostGroup.of(host) if isinstance(host, Host) else host or HostGroup.start(HostSpec(
            base_model=config.base_model, threads=config.threads, quantize=config.quantize,
            adapters=tuple(AdapterSpec(n, str(s.path), s.card.base_model.get("fingerprint"))
                           for n, s in self.specialists.items())), config.hosts)

    @classmethod
    def from_config(cls, path: str | Path) -> Council:
        """A council built from a JSON or TOML config file."""
        return cls(CouncilConfig.from_file(path))

    @classmethod
    def demo(cls, **overrides) -> Council:
        """The built-in demo: the catalog's specialists, SmolLM2-135M-Instruct and the packaged corpus."""
        return cls(CouncilConfig(**overrides))

    def _open_store(self):
        from council.retrieval import DocumentStore

        if self.config.store:
            return DocumentStore.load(self.config.store)
        from council.demo import demo_store

        return demo_store()

    # ---- the stages, in the order a question meets them

    def check(self, question: str) -> tuple[str, bool]:
        """The question as it will be asked, and whether it was truncated; QuestionError when unusable."""
        return check_question(question, max_chars=self.config.max_question_chars, overlong=self.config.overlong)

    def retrieve(self, question: str) -> Context:
        """The shared context: the best passages, packed into the prompt's token budget."""
        hits = self.store.search(question, self.config.retrieve_k)
        return pack(hits, self.config.context_tokens, self.host.count_tokens, overhead_tokens=4)

    def seat(self, route: RouteChoice, who: str | None) -> RouteChoice:
        """The route as asked: the router's choice (`who` None), one specialist by name, or the base model
        alone (BASE_VOTER); still with the shared context. ValueError names the known voters."""
        if who is None:
            return route
        if who == BASE_VOTER:
            return replace(route, chosen=[BASE_VOTER], reserve=[], reason=None)
        if who not in self.specialists:
            raise ValueError(f"unknown specialist {who!r}: this council seats {', '.join(self.specialists)} "
                             f"(or {BASE_VOTER!r}, the base model)")
        return replace(route, chosen=[who], reserve=[], reason=None)

    def requests(self, question: str, route: RouteChoice, context: Context) -> list[Request]:
        """One request per chosen specialist (BASE_VOTER: the base model), all with the same prompt; the base
        model when none fits and the fallback is "base"."""
        messages = rag_messages(question, context.texts)
        voters = [None if n == BASE_VOTER else n for n in route.chosen] or (
            [None] if self.config.fallback == "base" else [])
        return [Request(messages, name, self.config.max_new_tokens) for name in voters]

    def votes(self, route: RouteChoice, requests: Sequence[Request], generations) -> list[Vote]:
        """A vote per row; a row whose host timed out or died (a HostFailure) is a missing vote.

        Rows come from `answer_only` generation: each holds its best answer and its no-answer margin, and a
        specialist abstains when the margin is above its card's threshold (0, plain greedy, without one)."""
        votes = []
        for r, g in zip(requests, generations):
            card = self.specialists[r.adapter].card if r.adapter else None
            # the base model stands in for every profile; a reserve seat was not routed
            score = route.scores.get(r.adapter, 0.0) if r.adapter else 1.0
            who = dict(specialist=r.adapter or BASE_VOTER, route_score=max(score, 0.0),
                       reliability=card.reliability if card else 0.5)
            if isinstance(g, HostFailure):
                votes.append(Vote(answer="", error=g.error, **who))
                continue
            margin = g.no_answer_margin
            abstains = margin > (card.no_answer_threshold if card else 0.0)
            votes.append(Vote(answer=ABSTAIN_ANSWER if abstains else g.text,
                              mean_logprob=g.abstain_logprob if abstains else g.mean_logprob,
                              no_answer_margin=round(margin, 4) if math.isfinite(margin) else None,
                              latency_s=round(g.seconds, 4),
                              review={a: round(lp, 4) for a, lp in g.review.items()} if g.review else None, **who))
        return votes

    def verdict(self, question: str, truncated: bool, route: RouteChoice, context: Context, votes: list[Vote],
                timings: dict[str, float]) -> Verdict:
        t0 = time.perf_counter()
        if votes:
            agg = aggregate(votes, passages=context.texts, config=self.config.aggregator, calibrator=self.calibrator)
        else:
            agg = Aggregate(answer=None, abstained=True, reason="no_votes", agreement=0.0, grounding=None,
                            confidence=1.0, clusters=[], votes=[], missing=[],
                            strategy=self.config.aggregator.strategy)
        reason = "no_route" if route.fallback and not votes else agg.reason
        citations = [] if agg.abstained else self._citations(agg.answer, context)
        timings["aggregate"] = time.perf_counter() - t0
        timings["total"] = sum(s for k, s in timings.items() if k != "review")  # review is inside generate
        return Verdict(question=question, answer=agg.answer, abstained=agg.abstained, reason=reason,
                       agreement=agg.agreement, confidence=agg.confidence, grounding=agg.grounding,
                       votes=votes, citations=citations, context=context.ids, route=route,
                       timings={k: round(v, 4) for k, v in timings.items()}, missing=agg.missing,
                       truncated=truncated)

    def _citations(self, answer: str, context: Context) -> list[Citation]:
        min_support = self.config.aggregator.min_grounding
        cited = [Citation(p.id, p.source, p.title, round(grounding(answer, [p.text]), 3)) for p in context.passages]
        return sorted((c for c in cited if c.support >= min_support), key=lambda c: -c.support)

    # ---- the public calls

    def ask(self, question: str) -> Verdict:
        """Route, retrieve once, ask the chosen specialists in one batch, aggregate."""
        return self.ask_many([question])[0]

    def ask_many(self, questions: Sequence[str], *, seats: Sequence[str | None] | None = None) -> list[Verdict]:
        """Answer many questions; their specialists' rows share large batched generate calls.

        `seats`, one per question: None lets the router choose, a specialist's name or "base" asks that voter
        alone (see `seat`)."""
        seats = list(seats) if seats is not None else [None] * len(questions)
        if len(seats) != len(questions):
            raise ValueError(f"{len(seats)} seats for {len(questions)} questions: give one per question (None: route)")
        checked = [self.check(q) for q in questions]
        t0 = time.perf_counter()
        routes = [self.seat(r, who) for r, who in zip(self.router.route_many([q for q, _ in checked]), seats)]
        t_route = (time.perf_counter() - t0) / max(len(checked), 1)
        contexts, t_retrieve = [], []
        for q, _ in checked:
            t1 = time.perf_counter()
            contexts.append(self.retrieve(q))
            t_retrieve.append(time.perf_counter() - t1)
        per_question = [self.requests(q, r, c) for (q, _), r, c in zip(checked, routes, contexts)]
        rows = [(i, req) for i, reqs in enumerate(per_question) for req in reqs]
        generations = [None] * len(rows)
        t_generate = [0.0] * len(checked)
        for start, end in _chunks([len(reqs) for reqs in per_question], self.config.max_batch_rows):
            chunk = rows[start:end]
            t1 = time.perf_counter()
            outs = self.host.generate([req for _, req in chunk], max_new_tokens=self.config.max_new_tokens,
                                      answer_only=True, review=self.config.peer_review)
            elapsed = time.perf_counter() - t1
            for j, ((i, _), g) in enumerate(zip(chunk, outs)):
                generations[start + j] = g
                t_generate[i] = elapsed
        verdicts, at = [], 0
        for i, ((q, truncated), route, context) in enumerate(zip(checked, routes, contexts)):
            n = len(per_question[i])
            votes = self.votes(route, per_question[i], generations[at:at + n])
            at += n
            timings = {"route": t_route, "retrieve": t_retrieve[i], "generate": t_generate[i]}
            if self.config.peer_review:  # inside the generate call: its share of that time
                timings["review"] = max((g.review_seconds for g in generations[at - n:at]
                                         if not isinstance(g, HostFailure)), default=0.0)
            verdicts.append(self.verdict(q, truncated, route, context, votes, timings))
        return verdicts

    async def aask(self, question: str) -> Verdict:
        """`ask` without blocking the event loop (runs in a worker thread)."""
        return await asyncio.to_thread(self.ask, question)

    async def aask_many(self, questions: Sequence[str]) -> list[Verdict]:
        return await asyncio.to_thread(self.ask_many, questions)

    def close(self) -> None:
        """Release the hosts it built: stop their Ray actors, and the embedded Ray instance it started."""
        if self._owns_host:
            self.host.close()

    def __enter__(self) -> Council:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
