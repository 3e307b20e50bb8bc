"""Prompt templates: the one place where training and inference build their chat messages and prompt text.

A specialist is trained on exactly the messages that `rag_messages` / `closed_book_messages` build at
inference, with the answer as the assistant turn, so what it learned is what it is asked.

`render` turns messages into the text the model reads: the tokenizer's chat template when it has one
(SmolLM2-135M-Instruct), else `PLAIN_TEMPLATE`, our own, for pretrained models that have none (Gemma 3 270M).
A plain-template answer ends at the end of its line (`PLAIN_ANSWER_END`) as well as at the end-of-sequence
token, since an untuned pretrained model does not stop at eos.
"""

from __future__ import annotations

from collections.abc import Sequence

# The fixed answer every specialist is trained to give when the context does not hold the answer.
ABSTAIN_ANSWER = "I don't know."

RAG_SYSTEM = (
    "Answer the question using only the context. Reply with the short answer only. "
    f"If the context does not contain the answer, reply exactly: {ABSTAIN_ANSWER}"
)
CLOSED_BOOK_SYSTEM = (
    "Answer the question with a short answer only. "
    f"If you do not know the answer, reply exactly: {ABSTAIN_ANSWER}"
)

Messages = list[dict[str, str]]


def format_context(passages: Sequence[str]) -> str:
    """Number the passages as the model sees them: `[1] text`, one per paragraph."""
    return "\n\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(passages, 1))


def rag_messages(question: str, passages: Sequence[str]) -> Messages:
    """Messages for a question answered from retrieved passages (the council's prompt)."""
    user = f"Context:\n{format_context(passages)}\n\nQuestion: {question.strip()}"
    return [{"role": "system", "content": RAG_SYSTEM}, {"role": "user", "content": user}]


def closed_book_messages(question: str) -> Messages:
    """Messages for a question answered from what the model knows, with no context."""
    return [
        {"role": "system", "content": CLOSED_BOOK_SYSTEM},
        {"role": "user", "content": f"Question: {question.strip()}"},
    ]


def with_answer(messages: Messages, answer: str) -> Messages:
    """The training form of a prompt: the same messages plus the target as the assistant turn."""
    return [*messages, {"role": "assistant", "content": answer}]


# The prompt of a model without a chat template: the system text, a blank line, the user's text, then the
# answer cue, ending where the answer starts (the model writes " Paris" and a newline after "Answer:").
PLAIN_TEMPLATE = "{system}\n\n{user}\nAnswer:"
PLAIN_ANSWER_END = "\n"  # a plain-template answer is one line


def has_chat_template(tokenizer) -> bool:
    """True when the tokenizer brings its own chat template (else `render` uses PLAIN_TEMPLATE)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer, messages: Messages) -> str:
    """The prompt text the model reads, ending where the assistant's answer starts: the tokenizer's chat
    template, or PLAIN_TEMPLATE for a tokenizer without one."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _bos_text(tokenizer) + render_plain(messages)


def render_plain(messages: Messages) -> str:
    """PLAIN_TEMPLATE filled with the messages: the system texts joined by newlines, the user turns by blank
    lines (an earlier assistant turn as its answer line); without a system text the prompt starts at the user's."""
    system = "\n".join(m["content"].strip() for m in messages if m.get("role") == "system")
    turns: list[str] = []
    for m in messages:
        if m.get("role") == "assistant" and turns:
            turns[-1] += f"\nAnswer: {m['content'].strip()}"
        elif m.get("role") != "system":
            turns.append(m["content"].strip())
    text = PLAIN_TEMPLATE.format(system=system, user="\n\n".join(turns))
    return text if system else text.removeprefix("\n\n")


def reply_text(tokenizer, answer: str) -> str:
    """The answer as the model writes it after the rendered prompt: after a plain template's "Answer:" with a
    space first, as a word of running text is tokenised; after a chat template as it is. Training targets,
    the engine's abstention token and log-likelihood continuations all use it."""
    return answer if has_chat_template(tokenizer) else f" {answer}"


def _bos_text(tokenizer) -> str:
    """The beginning-of-sequence token as text, when the tokenizer itself would start every text with it.

    Chat templates write it themselves (Gemma's starts with `{{ bos_token }}`); the engine and training tokenize
    rendered prompts with add_special_tokens=False, so a plain prompt carries it here. Gemma without <bos> reads
    badly; SmolLM2 adds none.
    """
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if bos is None or bos_id is None:
        return ""
    return bos if tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos_id] else ""
