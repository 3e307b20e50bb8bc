"""One Engine or Council used from many threads (and many `aask` calls) gives every caller its own answer."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from council import base_model
from council.engine import Engine, Request
from tests.test_council import make

PROMPTS = ["Tell me about the sea.", "What is a law?", "Name a planet.", "Who wrote this?"]


def test_engine_threads_each_get_their_own_adapter_rows(tiny_model_dir, tiny_adapters):
    engine = Engine(base_model.load(tiny_model_dir))
    for name, path in tiny_adapters.items():
        engine.load_adapter(name, path)
    asks = [(p, a) for p in PROMPTS for a in [None, *tiny_adapters]]
    expected = {ask: engine.generate([Request.from_prompt(*ask)], max_new_tokens=6)[0].text for ask in asks}
    assert len(set(expected.values())) > len(PROMPTS)  # the adapters answer differently: a mix-up would show

    def one(ask):
        return ask, engine.generate([Request.from_prompt(*ask)], max_new_tokens=6)[0].text

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, asks * 4))
    assert [text for _, text in got] == [expected[ask] for ask, _ in got]


def test_council_threads_and_aask_get_their_own_labelled_votes(tiny_model_dir, tiny_catalog):
    from tests.conftest import make_store

    council = make(tiny_model_dir, tiny_catalog, make_store(),
                   router={"threshold": 0.0, "min_k": 2, "max_k": 3})
    questions = ["What is force?", "When did the Normans conquer England?", "Who passes laws in Scotland?",
                 "What is the capital of France?"]
    expected = {q: [(v.specialist, v.answer) for v in council.ask(q).votes] for q in questions}
    with ThreadPoolExecutor(6) as pool:
        verdicts = list(pool.map(council.ask, questions * 3))
    assert [[(v.specialist, v.answer) for v in x.votes] for x in verdicts] == [expected[x.question] for x in verdicts]

    async def many():
        return await asyncio.gather(*(council.aask(q) for q in questions * 2))

    verdicts = asyncio.run(many())
    assert [[(v.specialist, v.answer) for v in x.votes] for x in verdicts] == [expected[x.question] for x in verdicts]
    council.close()
