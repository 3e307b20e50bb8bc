import json

import pytest
import torch

from council import base_model
from council.engine import (AdapterError, AdapterMismatchError, Engine, PromptTooLongError, Request,
                            check_adapter_name)
from council.prompts import ABSTAIN_ANSWER, closed_book_messages, rag_messages
from tests.conftest import build_tiny_model, make_lora

PROMPTS = ["What is the capital of France?", "Who conquered England?", "What is force?",
           "Tell me about the oil crisis.", "Paris"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir, tiny_adapters):
    e = Engine(base_model.load(tiny_model_dir))
    for name, path in tiny_adapters.items():
        e.load_adapter(name, path)
    return e


def test_mixed_batch_rows_equal_each_request_alone(engine):
    adapters = ["history", None, "science", "law", "history"]
    requests = [Request(closed_book_messages(p), a) for p, a in zip(PROMPTS, adapters)]
    batched = engine.generate(requests, max_new_tokens=12)
    for request, row in zip(requests, batched):
        alone = engine.generate([request], max_new_tokens=12)[0]
        assert row.adapter == request.adapter
        assert row.token_ids == alone.token_ids
        assert row.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)


def test_adapters_change_the_answer(engine):
    rows = engine.generate([Request(closed_book_messages(PROMPTS[0]), a) for a in (None, "history", "science")],
                           max_new_tokens=10)
    # a random tiny model may pick the same tokens; their log-probs still tell the adapters apart
    assert len({(tuple(r.token_ids), round(r.token_logprobs[0], 4)) for r in rows}) == 3


def test_generation_fields(engine):
    g = engine.generate([Request(rag_messages("Capital?", ["Paris is the capital."]), "law")],
                        max_new_tokens=5)[0]
    assert g.new_tokens == len(g.token_ids) == len(g.token_logprobs) <= 5
    assert all(lp <= 0 for lp in g.token_logprobs)
    assert g.prompt_tokens > 10 and g.seconds > 0
    assert json.loads(json.dumps(g.to_dict()))["adapter"] == "law"


def test_per_request_token_limit(engine):
    rows = engine.generate([Request(closed_book_messages(PROMPTS[1]), None, max_new_tokens=3),
                            Request(closed_book_messages(PROMPTS[1]), None)], max_new_tokens=9)
    assert rows[0].new_tokens <= 3
    assert rows[0].token_ids == rows[1].token_ids[:rows[0].new_tokens]


def test_sampling_is_seeded(engine):
    r = [Request(closed_book_messages(PROMPTS[2]), "science")]
    a = engine.generate(r, max_new_tokens=8, temperature=1.5, seed=3)[0]
    b = engine.generate(r, max_new_tokens=8, temperature=1.5, seed=3)[0]
    assert a.token_ids == b.token_ids


def test_unknown_adapter_lists_loaded_ones(engine):
    with pytest.raises(AdapterError, match=r"unknown adapter 'poetry'; loaded adapters: history, science, law"):
        engine.generate([Request(closed_book_messages("hi"), "poetry")])


def test_empty_prompt_is_refused(engine):
    with pytest.raises(ValueError, match="request 1: the prompt is empty"):
        engine.generate([Request(closed_book_messages("hi")), Request([{"role": "user", "content": "  "}])])


def test_prompt_longer_than_context_is_refused(engine):
    with pytest.raises(PromptTooLongError, match=r"request 0: the prompt has \d+ tokens .* context of 256"):
        engine.generate([Request.from_prompt("Paris " * 300)])


@pytest.mark.parametrize("name", ["", "a", "lora", "__base__", "default", "has space", "x.y", "1st"])
def test_bad_adapter_names(name):
    with pytest.raises(AdapterError, match="adapter name"):
        check_adapter_name(name)


def test_adapter_folder_errors(engine, tiny_adapters, tmp_path):
    with pytest.raises(AdapterError, match="does not exist"):
        engine.load_adapter("ghost", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="no adapter_config.json"):
        engine.load_adapter("empty", tmp_path / "empty")
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        engine.load_adapter("badjson", bad)
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "adapter_config.json").write_text((tiny_adapters["law"] / "adapter_config.json").read_text())
    with pytest.raises(AdapterError, match="holds no adapter_model.safetensors"):
        engine.load_adapter("noweights", noweights)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "adapter_config.json").write_text((tiny_adapters["law"] / "adapter_config.json").read_text())
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(AdapterError, match="corrupt or not safetensors"):
        engine.load_adapter("corrupt", corrupt)
    with pytest.raises(AdapterError, match="already loaded"):
        engine.load_adapter("law", tiny_adapters["law"])
    assert engine.adapters == ["history", "science", "law"], "failed loads must leave the engine as it was"


def test_adapter_for_another_base_is_refused(engine, tmp_path):
    wider = build_tiny_model(tmp_path / "wider", hidden=32)
    with pytest.raises(AdapterMismatchError, match=r"made for another base model: .*lora_A.weight has shape"):
        engine.load_adapter("wider", make_lora(wider, tmp_path / "wider_lora", seed=1))
    deeper = build_tiny_model(tmp_path / "deeper", layers=3)
    with pytest.raises(AdapterMismatchError, match=r"adapts 'model.layers.2.self_attn.q_proj'"):
        engine.load_adapter("deeper", make_lora(deeper, tmp_path / "deeper_lora", seed=1))


def test_fingerprint_mismatch_is_refused(engine, tiny_adapters):
    with pytest.raises(AdapterMismatchError, match="fingerprint 0000.*retrain"):
        engine.load_adapter("fp", tiny_adapters["law"], base_fingerprint="0000")
    engine.load_adapter("fp", tiny_adapters["law"], base_fingerprint=engine.base.fingerprint)
    engine.unload_adapter("fp")


def test_unload_back_to_base(tiny_model_dir, tiny_adapters):
    e = Engine(base_model.load(tiny_model_dir))
    request = Request(closed_book_messages(PROMPTS[0]))
    plain = e.generate([request], max_new_tokens=8)[0].token_ids
    e.load_adapter("science", tiny_adapters["science"])
    e.load_adapter("law", tiny_adapters["law"])
    e.unload_adapter("law")
    with pytest.raises(AdapterError, match="unknown adapter 'law'"):
        e.generate([Request(closed_book_messages("x"), "law")])
    e.unload_adapter("science")
    assert e.adapters == []
    assert e.generate([request], max_new_tokens=8)[0].token_ids == plain


def test_int8_engine_runs_mixed_batches(tiny_model_dir, tiny_adapters):
    e = Engine(base_model.load(tiny_model_dir), quantize="int8", threads=torch.get_num_threads())
    e.load_adapter("history", tiny_adapters["history"])
    rows = e.generate([Request(closed_book_messages(p), a) for p, a in zip(PROMPTS, ["history", None])],
                      max_new_tokens=6)
    assert [r.adapter for r in rows] == ["history", None] and all(r.new_tokens > 0 for r in rows)


def test_bad_engine_options(tiny_model_dir):
    with pytest.raises(ValueError, match="quantize='int4'"):
        Engine(base_model.load(tiny_model_dir), quantize="int4")


@pytest.mark.slow
def test_real_model_answers_a_simple_question(real_base):
    e = Engine(real_base)
    g = e.generate([Request(closed_book_messages("What is the capital of France?"))], max_new_tokens=24)[0]
    assert "Paris" in g.text
    assert g.finished


def test_shared_trunk_prefill_equals_the_plain_path(tmp_path, monkeypatch):
    """Rows sharing a prompt prefill the unadapted lower layers once and equal the plain generate exactly."""
    base_dir = build_tiny_model(tmp_path / "deep", layers=4)
    engine = Engine(base_model.load(base_dir))
    for i, (name, layers) in enumerate((("top_a", [2, 3]), ("top_b", [3]), ("every", None))):
        engine.load_adapter(name, make_lora(base_dir, tmp_path / name, seed=i + 5, layers=layers,
                                            targets=("q_proj", "v_proj", "down_proj")))
    ctx = rag_messages(PROMPTS[1], [PROMPTS[0], PROMPTS[2]])
    other = closed_book_messages(PROMPTS[3])
    requests = [Request(ctx, "top_a"), Request(ctx, "top_b"), Request(ctx, None), Request(other, "top_a"),
                Request(other, "top_a"), Request(ctx, "top_b")]
    rows_seen = []
    hook = engine.base.model.model.layers[0].register_forward_hook(lambda m, a, out: rows_seen.append(out.shape))
    shared = engine.generate(requests, max_new_tokens=8, temperature=0)
    hook.remove()
    # the first prefill call of layer 0 sees each distinct prompt once, not each of the 6 rows
    assert rows_seen[0][0] == 2
    monkeypatch.setattr(engine, "_shared_prefill", lambda *a: None)
    plain = engine.generate(requests, max_new_tokens=8)
    for s, p in zip(shared, plain):
        assert s.token_ids == p.token_ids
        assert s.token_logprobs == pytest.approx(p.token_logprobs, abs=1e-4)
    # an adapter of every layer keeps only itself out of the trunk; identical (prompt, adapter) rows prefill once
    monkeypatch.undo()
    assert engine._first_layer == {"top_a": 2, "top_b": 3, "every": 0}
    mixed = [Request(ctx, "every"), Request(ctx, "every"), Request(ctx, "top_a"), Request(ctx, "top_b")]
    rows_seen.clear()
    hook = engine.base.model.model.layers[0].register_forward_hook(lambda m, a, out: rows_seen.append(out.shape))
    shared = engine.generate(mixed, max_new_tokens=8)
    hook.remove()
    assert rows_seen[0][0] == 2  # "every" once, and the trunk of top_a and top_b once
    monkeypatch.setattr(engine, "_shared_prefill", lambda *a: None)
    plain = engine.generate(mixed, max_new_tokens=8)
    assert [s.token_ids for s in shared] == [p.token_ids for p in plain]


def test_loglikelihood_matches_generation_and_batches_by_adapter(engine):
    request = Request(rag_messages(PROMPTS[1], [PROMPTS[0]]), "science")
    generated = engine.generate([request], max_new_tokens=4)[0]
    first = engine.tokenizer.decode(generated.token_ids[:1])
    alone = engine.loglikelihood([request], [first])[0]
    assert len(alone) == 2  # the token and the end of the turn
    assert alone[0] == pytest.approx(generated.token_logprobs[0], abs=1e-4)
    mixed = engine.loglikelihood([Request(request.messages, a) for a in (None, "science", "law")] + [request],
                                 [first, first, first, "a much longer option"])
    assert mixed[1] == pytest.approx(alone, abs=1e-4) and len(mixed[3]) > 2
    assert mixed[0] != pytest.approx(mixed[1], abs=1e-4)  # the adapter changes the likelihood
    with pytest.raises(AdapterError, match="unknown adapter"):
        engine.loglikelihood([Request(request.messages, "nope")], ["x"])


def test_peer_review_scores_each_answer_as_loglikelihood_does(engine):
    """Every row scores the answers of the rows sharing its prompt, and the abstention, from the generation's
    cache: the same mean log-prob that a full forward of prompt + answer gives, per adapter."""
    messages = rag_messages("Who conquered England?", ["The Normans conquered England in 1066."])
    other = rag_messages("What is force?", ["Force equals mass times acceleration."])
    requests = [Request(messages, a) for a in ("history", "science", "law")] + [Request(other, "law")]
    rows = engine.generate(requests, max_new_tokens=6, answer_only=True, review=True)
    plain = engine.generate(requests, max_new_tokens=6, answer_only=True)
    assert [r.token_ids for r in rows] == [r.token_ids for r in plain]  # reviewing changes no answer
    asked = {ABSTAIN_ANSWER, *(r.text for r in rows[:3] if r.text)}
    for request, row in zip(requests[:3], rows[:3]):
        assert set(row.review) == asked  # the last row's answer, to another prompt, is not among them
        for answer, score in row.review.items():
            lp = engine.loglikelihood([request], [answer])[0]
            assert score == pytest.approx(sum(lp) / len(lp), abs=1e-4)
    assert set(rows[3].review) == {ABSTAIN_ANSWER, rows[3].text} - {""}
    assert rows[0].review_seconds > 0 and plain[0].review is None
