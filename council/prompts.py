"""Prompt templates: the one place where training and inference build their chat messages.

A specialist is trained on exactly the messages that `rag_messages` / `closed_book_messages` build at
inference, with the answer as the assistant turn, so what it learned is what it is asked.
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


def render(tokenizer, messages: Messages) -> str:
    """The prompt text the model reads, ending where the assistant's answer starts (its chat template)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
