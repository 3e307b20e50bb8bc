"""The Council end to end on a tiny random model: stages, fallbacks, bad input, config files, the CLI."""

import json

import pytest


from council.aggregator import AggregatorConfig
from council.cli import main
from council.config import ConfigError, CouncilConfig
from council.council import BASE_VOTER, Council, QuestionError, Verdict
from council.engine import AdapterMismatchError
from council.hosts import AdapterSpec, Host, HostSpec
from council.prompts import ABSTAIN_ANSWER
from specialists.card import SpecialistCard
from specialists.registry import UnknownSpecialistError
from tests.conftest import TOPICS, HashEmbedder, make_store

@pytest.fixture(scope="module")
def store():
    return make_store()


def make(tiny_model_dir, tiny_catalog, store, **overrides) -> Council:
    config = CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), quantize="none",
                           max_new_tokens=6, context_tokens=120, **overrides)
    return Council(config, store=store, embedder=HashEmbedder())


@pytest.fixture(scope="module")
def council(tiny_model_dir, tiny_catalog, store):
    return make(tiny_model_dir, tiny_catalog, store, router={"threshold": 0.0, "min_k": 2, "max_k": 3})


def test_ask_runs_every_stage_and_shows_its_work(council):
    v = council.ask("When did the Normans conquer England?")
    assert isinstance(v, Verdict)
    assert v.route.chosen[0] == "history" and 2 <= len(v.route.chosen) <= 3
    assert [vote.specialist for vote in v.votes] == v.route.chosen  # one vote per chosen specialist
    assert set(v.route.scores) == set(TOPICS)
    assert v.context and v.context[0] == store_id(council, "normans.txt")
    assert set(v.timings) == {"route", "retrieve", "generate", "review", "aggregate", "total"}
    assert 0 < v.timings["review"] < v.timings["generate"]
    # peer review: every voter scored every distinct answer on the table and the abstention (the k x m matrix)
    table = {ABSTAIN_ANSWER} | {x.answer for x in v.votes if x.answer}  # an empty answer is no candidate
    assert all(table <= set(x.review) for x in v.votes)
    assert v.abstained == (v.answer is None)
    assert all(vote.mean_logprob is not None and vote.reliability == 0.6 for vote in v.votes)
    assert json.loads(v.to_json())["route"]["chosen"] == v.route.chosen


def store_id(council, source):
    return next(p.id for p in council.store.passages if p.source == source)


def test_ask_many_equals_ask_one_by_one(council):
    questions = ["What is force?", "When did the Normans conquer England?", "Who passes laws in Scotland?"]
    many = council.ask_many(questions)
    for q, v in zip(questions, many):
        alone = council.ask(q)
        assert [x.answer for x in v.votes] == [x.answer for x in alone.votes]
        assert (v.answer, v.reason) == (alone.answer, alone.reason)


def test_async_api(council):
    import asyncio

    v = asyncio.run(council.aask("What is force?"))
    assert v.question == "What is force?"


@pytest.mark.parametrize("question", ["", "   \n"])
def test_empty_question_is_refused(council, question):
    with pytest.raises(QuestionError, match="the question is empty"):
        council.ask(question)


def test_question_that_is_not_utf8_is_refused(council):
    not_utf8 = b"Who r\xe9igned?".decode("utf-8", errors="surrogateescape")  # what argv gives for Latin-1 bytes
    with pytest.raises(QuestionError, match=r"not valid UTF-8 text \(byte 5\)"):
        council.ask(not_utf8)


def test_overlong_question_error_or_truncate(tiny_model_dir, tiny_catalog, store, council):
    with pytest.raises(QuestionError, match=r"more than max_question_chars=1000.*overlong='truncate'"):
        council.ask("why " * 400)
    cut = make(tiny_model_dir, tiny_catalog, store, max_question_chars=20, overlong="truncate")
    v = cut.ask("What is force? " * 5)
    assert v.truncated and len(v.question) == 20


def test_no_route_falls_back_to_base_or_abstains(tiny_model_dir, tiny_catalog, store):
    base = make(tiny_model_dir, tiny_catalog, store, router={"threshold": 0.99})
    v = base.ask("What is the colour of a zebra's dreams?")
    assert v.route.fallback and [x.specialist for x in v.votes] == [BASE_VOTER]
    host = base.host  # reuse the loaded host: only the fallback policy differs
    abstain = Council(CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tiny_catalog), fallback="abstain",
                                    router={"threshold": 0.99}), store=store, host=host, embedder=HashEmbedder())
    v = abstain.ask("What is the colour of a zebra's dreams?")
    assert v.abstained and v.reason == "no_route" and v.votes == [] and v.answer is None


def test_unknown_specialist_lists_the_known_ones(tiny_model_dir, tiny_catalog, store):
    with pytest.raises(UnknownSpecialistError, match=r"unknown specialist 'poetry'; known: history, law, science"):
        make(tiny_model_dir, tiny_catalog, store, specialists=["history", "poetry"])


def test_adapter_for_another_base_is_refused(tiny_model_dir, tiny_catalog, tmp_path):
    card = SpecialistCard.load(tiny_catalog / "law")
    with pytest.raises(AdapterMismatchError, match="fingerprint ffff"):
        Host(HostSpec(str(tiny_model_dir), (AdapterSpec("law", str(tiny_catalog / "law"), "ffff"),),
                      quantize="none"))
    assert card.base_model["fingerprint"] != "ffff"


def test_config_files(tmp_path, tiny_catalog):
    (tmp_path / "c.json").write_text(json.dumps({"catalog": "cat", "k_typo": 3}))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['k_typo'\]"):
        CouncilConfig.from_file(tmp_path / "c.json")
    (tmp_path / "c.toml").write_text('catalog = "cat"\nfallback = "abstain"\n[router]\nmin_k = 1\nmax_k = 2\n')
    c = CouncilConfig.from_file(tmp_path / "c.toml")
    assert c.catalog == str((tmp_path / "cat").resolve()) and c.router.max_k == 2 and c.fallback == "abstain"
    # a table is laid over the council's own default for it: the README's `[router] max_k = 3` keeps min_k=3
    (tmp_path / "k.toml").write_text('[router]\nmax_k = 3\n')
    assert CouncilConfig.from_file(tmp_path / "k.toml").router == CouncilConfig().router
    (tmp_path / "k.toml").write_text('[router]\nmax_k = 2\n')
    with pytest.raises(ConfigError, match=r"router.min_k=3, max_k=2: need .*set both"):
        CouncilConfig.from_file(tmp_path / "k.toml")
    (tmp_path / "bad.json").write_text(json.dumps({"fallback": "guess"}))
    with pytest.raises(ConfigError, match=r"bad.json: fallback='guess': must be one of 'base', 'abstain', not str"):
        CouncilConfig.from_file(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ConfigError, match="cannot be parsed as JSON"):
        CouncilConfig.from_file(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match="does not exist"):
        CouncilConfig.from_file(tmp_path / "none.json")
    assert CouncilConfig.from_dict(c.to_dict()) == c
    # an [aggregator] table changes what it names; the fitted thresholds stay
    weighted = CouncilConfig.from_dict({"aggregator": {"strategy": "weighted"}}).aggregator
    default = CouncilConfig().aggregator
    assert weighted.strategy == "weighted" and weighted.strategy != default.strategy
    assert (weighted.min_agreement, weighted.min_grounding) == (default.min_agreement, default.min_grounding)
    assert (weighted.min_agreement, weighted.min_grounding) != (AggregatorConfig().min_agreement,
                                                                AggregatorConfig().min_grounding)


def test_missing_catalog_folder(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="no such folder of specialists"):
        Council(CouncilConfig(base_model=str(tiny_model_dir), catalog=str(tmp_path / "nope")))


def test_cli_errors_and_listing(tiny_catalog, capsys, tmp_path):
    assert main(["ask", "  "]) == 2
    assert "the question is empty" in capsys.readouterr().err
    assert main(["specialists", "--catalog", str(tiny_catalog)]) == 0
    out = capsys.readouterr().out
    assert "history" in out and "50.0" in out
    (tmp_path / "c.json").write_text("[1]")
    assert main(["ask", "--config", str(tmp_path / "c.json"), "hi"]) == 2
    assert "top level must be an object" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_council_on_the_real_model(real_gemma, tmp_path, monkeypatch):
    """The shipped demo: the real Gemma 3 270M, the catalog's specialists, the packaged corpus indexed on first
    use, and the README's question."""
    from specialists.registry import load_catalog

    (tmp_path / "models").symlink_to(real_gemma.path.parent)  # reuse the converted model, build a fresh store
    monkeypatch.setenv("COUNCIL_CACHE", str(tmp_path))
    with Council.demo(threads=2) as council:
        assert set(council.specialists) <= set(load_catalog())
        v = council.ask("When did the Normans conquer England?")
    assert (tmp_path / "stores" / "demo" / "manifest.json").is_file()
    assert v.route.chosen and v.route.chosen[0] == "history"
    assert any(council.store.get(i).title == "Normans" for i in v.context)
    assert len(v.votes) == len(v.route.chosen) and all(vote.answer for vote in v.votes)
    assert not v.abstained and "1066" in v.answer


def test_a_specialist_abstains_above_its_cards_no_answer_threshold(tiny_model_dir, tiny_catalog, store, tmp_path):
    import shutil

    from council.prompts import ABSTAIN_ANSWER

    question = "When did the Normans conquer England?"
    plain = make(tiny_model_dir, tiny_catalog, store, specialists=["history"])
    vote = plain.ask(question).votes[0]
    assert vote.no_answer_margin is not None  # every vote shows how close it came to abstaining
    for threshold, abstains in ((vote.no_answer_margin - 1, True), (vote.no_answer_margin + 1, False)):
        root = tmp_path / f"t{threshold}"
        shutil.copytree(tiny_catalog, root)
        card = SpecialistCard.load(root / "history")
        card.eval["no_answer"] = {"threshold": threshold}
        card.save(root / "history")
        again = make(tiny_model_dir, root, store, specialists=["history"]).ask(question).votes[0]
        assert (again.answer == ABSTAIN_ANSWER) is abstains
        assert again.no_answer_margin == vote.no_answer_margin
    assert plain.ask(question).votes[0].answer == vote.answer  # threshold 0 is plain greedy: unchanged


def test_by_default_a_council_seats_the_specialists_of_its_own_base(tiny_model_dir, tiny_catalog, store, tmp_path):
    import shutil

    from council.base_model import same_base

    assert same_base("SmolLM2-135M-Instruct", "smollm2") and not same_base("gemma-3-270m", "smollm2")
    root = tmp_path / "mixed"
    shutil.copytree(tiny_catalog, root)
    card = SpecialistCard.load(root / "law")
    card.base_model["name"] = "gemma-3-270m"
    card.save(root / "law")
    assert set(make(tiny_model_dir, root, store).specialists) == {"history", "science"}
    with pytest.raises(ConfigError, match=r"none trained on base_model='smollm2' \(its specialists' bases: "):
        Council(CouncilConfig(base_model="smollm2", catalog=str(tiny_catalog)), store=store, embedder=HashEmbedder())


def test_a_general_reader_fills_the_seats_that_no_routed_specialist_earns(tiny_model_dir, tiny_catalog, store,
                                                                          tmp_path):
    import shutil

    root = tmp_path / "with_reader"
    shutil.copytree(tiny_catalog, root)
    card = SpecialistCard.load(root / "law")  # law's adapter, carded as the catalog's general reader
    card.domain, card.routing = "reading", {"routable": False}
    card.save(root / "law")
    question = "When did the Normans conquer England?"
    c = make(tiny_model_dir, root, store, router={"threshold": 0.2, "min_k": 3, "max_k": 3})
    assert c.reserve == ["law"] and set(c.router.names) == {"history", "science"}
    v = c.ask(question)
    passing = [n for n, s in v.route.scores.items() if s >= 0.2]
    assert v.route.chosen == passing + ["law"] and v.route.reserve == ["law"]  # no noise score sits
    assert [x.specialist for x in v.votes] == v.route.chosen and v.votes[-1].route_score == 0.0
    alone = make(tiny_model_dir, root, store, reserve=[], router={"threshold": 0.2, "min_k": 3, "max_k": 3})
    assert alone.reserve == [] and alone.ask(question).route.chosen == passing
    with pytest.raises(Exception, match="nobody"):
        make(tiny_model_dir, root, store, reserve=["nobody"])


def test_chunks_never_split_a_questions_rows():
    from council.council import _chunks

    assert _chunks([3, 3, 3, 3, 3], 12) == [(0, 12), (12, 15)]
    assert _chunks([8, 8, 1], 12) == [(0, 8), (8, 17)]
    assert _chunks([14, 2], 12) == [(0, 14), (14, 16)]  # one question over the limit stays whole
    assert _chunks([], 12) == []
