"""Shared fixtures: a tiny random Llama with a ChatML tokenizer built here (nothing downloaded), and the
real SmolLM2 base for the few slow tests. One pytest process shares them: importing torch+transformers+peft
costs seconds, and loading the real model more.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_CORPUS = [
    "The capital of France is Paris. The Normans conquered England in 1066.",
    "Answer the question using only the context. Reply with the short answer only.",
    "Question: What is the capital? Context: Paris is a city. I don't know.",
    "Force, mass and acceleration; the immune system; the European Union law; oil crisis of 1973.",
]


def build_tiny_model(folder: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0, context: int = 256) -> Path:
    """Save a random Llama and a trained-here BPE tokenizer with a ChatML template as a HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        unk_token="<|endoftext|>", pad_token="<|im_end|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# Gemma's text is plain (no chat template): its tokenizer also learns the plain template's line ends
_PLAIN_CORPUS = [*_CORPUS, "Context:\n[1] Paris is a city.\n\nQuestion: What is the capital?\nAnswer: Paris\n\n"]
GEMMA_LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention",
                "sliding_attention", "full_attention"]


def build_tiny_gemma(folder: Path, *, hidden: int = 64, seed: int = 0, sliding_window: int = 120,
                     context: int = 512) -> Path:
    """Save a random Gemma3ForCausalLM (sliding and full attention layers, as Gemma 3 interleaves them) and a
    Gemma-like tokenizer without a chat template (<bos> added to every text, <eos>, <pad>) as a HF folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids 0-3
    tok.train_from_iterator(_PLAIN_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        unk_token="<unk>", pad_token="<pad>")
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=len(GEMMA_LAYERS), layer_types=GEMMA_LAYERS,
                              sliding_window=sliding_window, num_attention_heads=4, num_key_value_heads=1,
                              head_dim=16, query_pre_attn_scalar=16, max_position_embeddings=context,
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
                              initializer_range=0.1)  # peaked next-token choices: no near-ties in greedy tests
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_lora(base_folder: Path, out: Path, *, seed: int, r: int = 4, targets=("q_proj", "v_proj"),
              layers: list[int] | None = None) -> Path:
    """A random, non-zero LoRA adapter for the tiny model, saved as a PEFT folder."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from council.engine import peft_wrapping

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_folder, local_files_only=True)
    # init_lora_weights=False: B is random too, so each adapter really changes the output
    with peft_wrapping():
        peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                      layers_to_transform=layers, init_lora_weights=False))
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_gemma_dir(tmp_path_factory) -> Path:
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma") / "model")


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: make_lora(tiny_model_dir, root / name, seed=i + 1)
            for i, name in enumerate(("history", "science", "law"))}


@pytest.fixture(scope="session")
def real_base():
    """The real SmolLM2-135M-Instruct, converted from the wheel's GGUF on first use (cached after)."""
    from council import base_model

    return base_model.load(base_model.BUILTIN_MODEL)


@pytest.fixture(scope="session")
def real_gemma():
    """The real Gemma 3 270M, the catalog's base, converted from its GGUF packages on first use (cached after)."""
    from council import base_model

    return base_model.load(base_model.GEMMA_MODEL)


# The tiny council's specialists: (description, typical questions) by name; adapters from `tiny_adapters`.
TOPICS = {
    "history": ("Wars and conquests of the past.", ["When did the Normans conquer England?", "Who won the war?"]),
    "science": ("Forces, mass and acceleration.", ["What is force?", "How does mass relate to acceleration?"]),
    "law": ("European Union law and parliaments.", ["What is EU law?", "Who passes laws in Scotland?"]),
}


@pytest.fixture(scope="session")
def tiny_catalog(tiny_model_dir, tiny_adapters, tmp_path_factory) -> Path:
    """A catalog folder: the tiny adapters with specialist cards that carry the tiny model's fingerprint."""
    import shutil

    from council import base_model
    from specialists.card import SpecialistCard

    root = tmp_path_factory.mktemp("catalog")
    fingerprint = base_model.load(tiny_model_dir).fingerprint
    for name, (description, examples) in TOPICS.items():
        shutil.copytree(tiny_adapters[name], root / name)
        SpecialistCard(name=name, domain=name, description=description,
                       base_model={"name": str(tiny_model_dir), "fingerprint": fingerprint},
                       training={}, routing={"examples": examples}, code_version="test",
                       eval={"answerable_f1": 50.0, "abstain_f1": 70.0}).save(root / name)
    return root


def make_store():
    """A three-passage store with the hashing embedder (no model)."""
    from council.retrieval import Document, DocumentStore

    s = DocumentStore(embedder=HashEmbedder())
    s.add_documents([Document("The Normans conquered England in 1066.", "normans.txt", "Normans"),
                     Document("Force equals mass times acceleration.", "force.txt", "Force"),
                     Document("EU law is made by the European Parliament and the Council.", "eu.txt", "EU law")])
    return s


class HashEmbedder:
    """A deterministic bag-of-words stand-in for the embedder: each lower-cased word adds 1 to a bucket chosen by
    its CRC32.

    Lexical only (no synonyms), instant and model-free: for unit tests of the store and the router.
    """

    def __init__(self, dim: int = 256) -> None:
        self.name = f"hash-bow-{dim}"
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1.0)
