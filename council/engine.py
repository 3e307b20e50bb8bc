"""The engine: one base model plus named LoRA adapters, answering a batch with a different adapter per row.

Every request of a `generate` call runs in ONE batched generation (peft's mixed-adapter batch: each row
passes through its own adapter, `"__base__"` rows through none), so k specialists cost one generate call,
not k. Rows are left-padded, greedy unless a temperature is given, and stop at the end of their turn: the
end-of-sequence token, and for a model without a chat template (prompts.PLAIN_TEMPLATE) also the end of the
answer's line, since an untuned pretrained model writes on past its answer instead of stopping.

The shared trunk: the council asks k specialists one prompt, and the catalog's SQuAD specialists adapt only
the top 10 of 30 layers, so the prompt's prefill runs once through the layers no adapter of the batch changes
and k times only above them (`_shared_prefill`): with a long shared context, prefill is most of the cost.
It follows the decoder's own forward (Llama-style stacks, and Gemma 3's interleaved sliding-window layers
while the prompt fits the window).

Optional int8 weights: decoding streams every weight once per token, and this CPU's fp32 matrix routines
are slow for 2-4 rows (docs/environment.md); int8 dynamic quantisation of the base Linear layers cuts both
(decode 75 -> ~50 ms a token, and 3 rows cost about what 1 does). The LoRA weights stay fp32.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import math
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from council.base_model import BaseModel
from council.prompts import ABSTAIN_ANSWER, PLAIN_ANSWER_END, Messages, has_chat_template, render, reply_text

Quantize = Literal["none", "fp16", "int8"]
QUANTIZE: tuple[str, ...] = ("none", "fp16", "int8")
BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class AdapterError(ValueError):
    """An adapter folder that cannot be used: missing, corrupt, badly named or unknown."""


class AdapterMismatchError(AdapterError):
    """An adapter made for another base model (other shapes, modules or fingerprint)."""


class PromptTooLongError(ValueError):
    """A prompt that, with its new tokens, does not fit the model's context."""


@dataclass(frozen=True)
class Request:
    """One row of a batch: chat messages (or a plain prompt) and the adapter to answer with (None = base)."""

    messages: Messages
    adapter: str | None = None
    max_new_tokens: int | None = None

    @classmethod
    def from_prompt(cls, prompt: str, adapter: str | None = None, **kw) -> Request:
        return cls([{"role": "user", "content": prompt}], adapter, **kw)


@dataclass
class Generation:
    """What one row produced: its text, the log-probs of its tokens, token counts and the batch time."""

    text: str
    adapter: str | None
    token_ids: list[int]
    token_logprobs: list[float]
    prompt_tokens: int
    finished: bool  # stopped at the end of its turn, not at the token limit
    seconds: float  # wall time of the batched call this row ran in
    # log P(the abstention's first token) at the answer's first step, before any suppression: the row's
    # no-answer score, for deciding abstention apart from the answer (see `generate(answer_only=True)`)
    abstain_logprob: float | None = None
    # peer review (`generate(review=True)`): the mean token log-prob, end of turn included, that this row's
    # adapter gives each distinct answer of the rows sharing its prompt and the abstention; and its cost
    review: dict[str, float] | None = None
    review_seconds: float = 0.0
    new_tokens: int = field(init=False)

    def __post_init__(self):
        self.new_tokens = len(self.token_ids)

    @property
    def no_answer_margin(self) -> float:
        """The log-odds of abstaining at the first step, log P(abstain) - log(1 - P(abstain)), for a row
        generated with `answer_only`: above 0 the model puts more than half its probability on the abstention.
        Greedy decoding abstains sooner, whenever the abstention beats the single likeliest other token, so an
        answer whose probability is spread over several first tokens loses to it (`greedy_abstains`).
        -inf without an abstention score; +inf when no answer token came."""
        if self.abstain_logprob is None:
            return float("-inf")
        if not self.token_logprobs or self.abstain_logprob >= 0.0:
            return float("inf")
        return self.abstain_logprob - math.log1p(-math.exp(self.abstain_logprob))

    @property
    def greedy_abstains(self) -> bool:
        """What plain greedy decoding would have said: the abstention's first token beats the answer's."""
        if self.abstain_logprob is None:
            return False
        return not self.token_logprobs or self.abstain_logprob > self.token_logprobs[0]

    @property
    def mean_logprob(self) -> float:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def peft_wrapping():
    """Around peft's wrapping of a base model: peft 0.21 reads transformers' deprecated
    `is_gradient_checkpointing` there, whose FutureWarning is peft's to fix, not the user's; only that one
    warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


class PackedLinear(torch.nn.Linear):
    """An nn.Linear whose product runs on packed low-precision weights: int8 per channel (activations
    quantised per call) or fp16 (activations stay fp32).

    It stays an nn.Linear and keeps its fp32 weight, so peft can still wrap it with LoRA layers and the
    LoRA path keeps full precision; only the base product uses the packed weights.
    """

    def __init__(self, linear: torch.nn.Linear, precision: Literal["int8", "fp16"]):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.precision = precision
        if precision == "fp16":
            packed = torch.ops.quantized.linear_prepack_fp16(linear.weight.detach(), _detached(linear.bias))
        else:
            from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
            from torch.ao.quantization import per_channel_dynamic_qconfig

            linear.qconfig = per_channel_dynamic_qconfig
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "quantize_per_channel is deprecated"
                packed = DynamicLinear.from_float(linear)._packed_params._packed_params
        self._packed = (packed,)  # a tuple keeps it out of the module's parameters and state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "fp16":
            return torch.ops.quantized.linear_dynamic_fp16(x, self._packed[0])
        return torch.ops.quantized.linear_dynamic(x, self._packed[0], True)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def pack_linears(model: torch.nn.Module, precision: Literal["int8", "fp16"]) -> int:
    """Swap every plain nn.Linear of `model` for a PackedLinear in place; returns how many."""
    targets = [(n, m) for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, PackedLinear(module, precision))
    return len(targets)


def _serialised(method):
    """One call at a time per engine: peft routes rows to adapters through state of the model (hooks set for
    the call), not of the call, so two threads generating at once would read each other's adapters."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return call


class Engine:
    """One base model and its named LoRA adapters; `generate` answers a mixed-adapter batch.

    Safe to share between threads: its calls run one at a time, each caller getting its own rows."""

    def __init__(self, base: BaseModel, *, threads: int | None = None,
                 quantize: Quantize = "none"):
        if quantize not in QUANTIZE:
            raise ValueError(f"quantize={quantize!r}: choose one of {', '.join(QUANTIZE)}")
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads={threads}: must be at least 1")
            torch.set_num_threads(threads)
        self.base = base
        self.tokenizer = base.tokenizer
        self._lock = threading.RLock()
        # (in, out) of every Linear of the plain base model, to check adapter shapes before peft sees them
        self._linear_shapes = {n: (m.in_features, m.out_features)
                               for n, m in base.model.named_modules() if isinstance(m, torch.nn.Linear)}
        self.quantize = quantize
        if quantize != "none":
            pack_linears(base.model, quantize)
        self.model = base.model  # becomes a PeftModel with the first adapter
        self._adapters: dict[str, Path] = {}
        self._first_layer: dict[str, int] = {}  # the lowest decoder layer each adapter changes
        # the tokens that end an answer: eos, and for plain-template models every token holding a newline
        self.plain_template = not has_chat_template(self.tokenizer)
        # the first token of the abstention as training writes it: its probability is the no-answer score
        self.abstain_token = self.tokenizer(reply_text(self.tokenizer, ABSTAIN_ANSWER),
                                            add_special_tokens=False)["input_ids"][0]
        self._stop_ids = [self.tokenizer.eos_token_id, *(
            line_end_tokens(self.tokenizer) if self.plain_template else ())]

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return list(self._adapters)

    @_serialised
    def load_adapter(self, name: str, path: str | Path, *, base_fingerprint: str | None = None) -> None:
        """Load the PEFT adapter folder `path` as `name`, after checking it fits this base model.

        `base_fingerprint`, when known (a specialist card records it), must equal this base's fingerprint.
        """
        from peft import PeftModel

        check_adapter_name(name)
        if name in self._adapters:
            raise AdapterError(f"adapter {name!r} is already loaded (from {self._adapters[name]}); "
                               "unload it first or choose another name")
        path = Path(path)
        if base_fingerprint is not None and base_fingerprint != self.base.fingerprint:
            raise AdapterMismatchError(
                f"adapter {name!r} at {path} was trained on a base model with fingerprint {base_fingerprint}, "
                f"but this engine's base {self.base.name!r} has fingerprint {self.base.fingerprint}: "
                "load it on the base model it was trained on, or retrain it")
        self._check_adapter_files(name, path)
        try:
            if not self._adapters:
                with peft_wrapping():
                    self.model = PeftModel.from_pretrained(self.base.model, path, adapter_name=name,
                                                           is_trainable=False)
            else:
                self.model.load_adapter(path, adapter_name=name, is_trainable=False)
        except Exception as e:  # peft/safetensors errors are long and generic: name the adapter and folder
            raise AdapterError(f"adapter {name!r} at {path} could not be loaded: {e}") from e
        self.model.eval()
        self._adapters[name] = path
        self._first_layer[name] = min(
            (int(m.group(1)) for n, mod in self.model.named_modules()
             if name in getattr(mod, "lora_A", {}) and (m := re.search(r"\.layers\.(\d+)\.", n))), default=0)

    @_serialised
    def unload_adapter(self, name: str) -> None:
        """Remove a loaded adapter and free its weights."""
        self._require_adapter(name)
        if len(self._adapters) == 1:
            self.model = self.model.unload()  # back to the plain base model, LoRA layers removed
        else:
            self.model.delete_adapter(name)
        del self._adapters[name]
        del self._first_layer[name]

    @_serialised
    @torch.inference_mode()
    def generate(self, requests: Sequence[Request], *, max_new_tokens: int = 64, temperature: float = 0.0,
                 seed: int | None = None, answer_only: bool = False, review: bool = False) -> list[Generation]:
        """Answer every request in one batched generation, each row with its own adapter.

        Greedy when temperature is 0. A request's own `max_new_tokens` (at most the call's) cuts its row.
        `answer_only` bans the abstention's first token at the first step, so every row gives its best answer;
        each row's `abstain_logprob` still scores the abstention, and a threshold on it decides (as extractive
        SQuAD 2.0 readers compare a no-answer score with the best span's). `review` then has every row score the
        answers of the rows with its prompt (`Generation.review`), from the generation's own KV cache.
        """
        if not requests:
            return []
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be at least 1")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: must be >= 0")
        for adapter in {r.adapter for r in requests} - {None}:
            self._require_adapter(adapter)
        prompts = [self._render(i, r) for i, r in enumerate(requests)]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        prompt_lens = batch["attention_mask"].sum(dim=1).tolist()
        limits = [min(r.max_new_tokens or max_new_tokens, max_new_tokens) for r in requests]
        for i, (n, limit) in enumerate(zip(prompt_lens, limits)):
            if n + limit > self.base.max_positions:
                raise PromptTooLongError(
                    f"request {i}: the prompt has {n} tokens and asks for {limit} new ones, more than the "
                    f"model's context of {self.base.max_positions} tokens: shorten the prompt or the context")
        kwargs = dict(max_new_tokens=max(limits), do_sample=temperature > 0, output_logits=True,
                      return_dict_in_generate=True, eos_token_id=self._stop_ids,
                      pad_token_id=self.tokenizer.pad_token_id)
        if answer_only:
            kwargs["begin_suppress_tokens"] = [self.abstain_token]
        if self.plain_template:  # the answer starts on the "Answer:" line: a line end first is an empty answer
            kwargs["begin_suppress_tokens"] = [*kwargs.get("begin_suppress_tokens", ()), *self._stop_ids[1:]]
        if temperature > 0:
            kwargs.update(temperature=temperature, top_k=None, top_p=None)
            if seed is not None:
                torch.manual_seed(seed)
        else:  # the checkpoint's generation_config may carry sampling defaults: greedy means greedy
            kwargs.update(temperature=None, top_k=None, top_p=None)
        t0 = time.perf_counter()
        if self._adapters:
            kwargs["adapter_names"] = [r.adapter or BASE for r in requests]
            kwargs[_cache_kwarg()] = self._shared_prefill(batch, kwargs["adapter_names"])
        out = self.model.generate(**batch, **kwargs)
        seconds = time.perf_counter() - t0
        results = self._unbatch(requests, out, batch["input_ids"].shape[1], prompt_lens, limits, seconds)
        if review:
            self._review(requests, results, batch, getattr(out, _cache_kwarg()), steps=len(out.logits))
        return results

    def _review(self, requests: Sequence[Request], results: list[Generation], batch, cache, *, steps: int) -> None:
        """Peer review: each row scores every distinct answer of the rows sharing its prompt, and the abstention,
        under its own adapter. The prompt's keys and values are the generation's, cut back to the prompt, so a
        (row, answer) pair costs its few answer tokens, not another prefill of the context. A sliding-window
        cache that the generation overflowed cannot be cut back: those pairs are scored from scratch."""
        t0 = time.perf_counter()
        width = batch["input_ids"].shape[1]
        prompts = [tuple(row) for row in batch["input_ids"].tolist()]
        candidates: dict[tuple, list[str]] = {}
        for prompt, g in zip(prompts, results):
            group = candidates.setdefault(prompt, [ABSTAIN_ANSWER])
            if g.text and g.text not in group:
                group.append(g.text)
        pairs = [(i, c) for i, prompt in enumerate(prompts) for c in candidates[prompt]]
        window = getattr(self.base.model.config, "sliding_window", None)
        sliding = "sliding_attention" in (getattr(self.base.model.config, "layer_types", None) or ())
        if cache is None or (sliding and window and width - 1 + steps >= window):
            scores = self.loglikelihood([requests[i] for i, _ in pairs], [c for _, c in pairs])
        else:
            scores = self._review_from_cache(pairs, batch, cache, [r.adapter or BASE for r in requests])
        seconds = time.perf_counter() - t0
        for g in results:
            g.review, g.review_seconds = {}, seconds
        for (i, c), lp in zip(pairs, scores):
            results[i].review[c] = sum(lp) / len(lp)

    def _review_from_cache(self, pairs: list[tuple[int, str]], batch, cache, adapter_names: list[str]):
        width = batch["input_ids"].shape[1]
        cache.crop(-(cache.get_seq_length() - (width - 1)))  # the prompt but its last token, fed again below
        rows = torch.tensor([i for i, _ in pairs])
        replies = [self._reply_ids(c) for _, c in pairs]
        n = 1 + max(map(len, replies))
        pad = self.tokenizer.pad_token_id
        last = batch["input_ids"][rows, -1].tolist()
        ids = torch.tensor([[t, *r, *[pad] * (n - 1 - len(r))] for t, r in zip(last, replies)])
        new_mask = torch.tensor([[1] * (1 + len(r)) + [0] * (n - 1 - len(r)) for r in replies])
        mask = torch.cat([batch["attention_mask"][rows, :-1], new_mask], dim=1)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -n:]
        cache.batch_select_indices(rows)
        routing = (self.model._enable_peft_forward_hooks(adapter_names=[adapter_names[i] for i, _ in pairs])
                   if self._adapters else contextlib.nullcontext())
        with routing:
            hidden = self.base.model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=position_ids,
                                                   use_cache=True, **{_cache_kwarg(): cache}).last_hidden_state
        return self._reply_logprobs(hidden, [0] * len(pairs), replies)

    def _reply_ids(self, answer: str) -> list[int]:
        """The tokens of `answer` as a reply, then the end of turn."""
        text = reply_text(self.tokenizer, answer)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]

    def _reply_logprobs(self, hidden: torch.Tensor, starts: Sequence[int],
                        replies: Sequence[list[int]]) -> list[list[float]]:
        """Per row i: the log-prob of each token of replies[i], read where hidden[i, starts[i] + j] predicts
        token j. The end of the turn is what ends a generated row: eos, or for a plain-template model eos or a
        line end, so its log-prob is that of any of those tokens (their log-sum-exp). The head runs only there."""
        head = self.base.model.get_output_embeddings()
        cap = getattr(self.base.model.config, "final_logit_softcapping", None)  # Gemma 2 applies it to logits
        out = []
        for i, (start, reply) in enumerate(zip(starts, replies)):
            logits = head(hidden[i, start:start + len(reply)]).float()
            logp = (torch.tanh(logits / cap) * cap if cap else logits).log_softmax(-1)
            tokens = logp[:-1].gather(-1, torch.tensor(reply[:-1])[:, None]).squeeze(-1)
            out.append([*tokens.tolist(), logp[-1, self._stop_ids].logsumexp(-1).item()])
        return out

    def _shared_prefill(self, batch, adapter_names: list[str]):
        """Prefill each prompt once for as many layers as its rows agree on, or None when no rows share.

        The council asks k specialists the same prompt. Below the lowest layer an adapter changes, its row
        computes what the base model does, so rows with one prompt run together (the shared trunk) until
        their adapters part ways: layer by layer, a row is keyed by (prompt, its adapter once that adapter has
        begun, else the base). n samples of one specialist thus prefill once, and an adapter of every layer
        only keeps itself out of the trunk. The KV cache is then copied out to every row and `generate`
        continues from it, computing only the last prompt token. Rows with one prompt share their padding.
        """
        inner = getattr(self.base.model, "model", None)
        config = self.base.model.config
        if not all(hasattr(inner, a) for a in ("layers", "embed_tokens", "rotary_emb")):
            return None  # not a plain decoder stack: let generate prefill as usual
        layers = inner.layers[:config.num_hidden_layers]
        types = list(getattr(config, "layer_types", None) or ["full_attention"] * len(layers))
        window = getattr(config, "sliding_window", None)
        if (set(types) - {"full_attention", "sliding_attention"} or getattr(config, "use_bidirectional_attention", 0)
                or ("sliding_attention" in types and not (window and batch["input_ids"].shape[1] <= window))):
            return None  # other attention kinds, or a prompt wider than the sliding window: generate prefills
        from transformers import DynamicCache
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        make_mask = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
        per_type_rotary = "layer_type" in inspect.signature(inner.rotary_emb.forward).parameters  # Gemma 3
        prompts = [tuple(row) for row in batch["input_ids"].tolist()]
        first = [self._first_layer.get(a, len(layers)) for a in adapter_names]
        starts = sorted({0, *(f for f in first if f < len(layers))})

        def keys(layer: int) -> list[tuple]:  # per row: what its computation at `layer` depends on
            return [(p, a if f <= layer else BASE) for p, a, f in zip(prompts, adapter_names, first)]

        if len(set(keys(0))) == len(prompts) and len(set(keys(len(layers)))) == len(prompts):
            return None
        ids, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]
        cache = DynamicCache(config=config)  # sliding layers get their windowed cache, as generate makes it
        row_keys, hidden = keys(0), None
        for start, end in zip(starts, [*starts[1:], len(layers)]):
            now = keys(start)
            unique = list(dict.fromkeys(now))
            rows = torch.tensor([now.index(k) for k in unique])  # a batch row that carries each key
            if hidden is None:
                hidden = inner.embed_tokens(ids[rows])  # Gemma's embedding module applies its sqrt(hidden) scale
            else:  # each new key continues from the key its row had below this layer
                before = list(dict.fromkeys(row_keys))
                parent = torch.tensor([before.index(row_keys[r]) for r in rows.tolist()])
                hidden = hidden[parent]
                cache.batch_select_indices(parent)
            row_keys = now
            position_ids = (mask[rows].cumsum(-1) - 1).masked_fill(mask[rows] == 0, 1)  # as generate numbers them
            # as the decoder's forward builds them: a mask and rotary embedding per attention kind
            masks = {t: make_mask[t](config=config, inputs_embeds=hidden, attention_mask=mask[rows],
                                     position_ids=position_ids, **{_cache_kwarg(): None}) for t in set(types)}
            rotary = ({t: inner.rotary_emb(hidden, position_ids, t) for t in set(types)} if per_type_rotary
                      else dict.fromkeys(set(types), inner.rotary_emb(hidden, position_ids=position_ids)))
            with self.model._enable_peft_forward_hooks(adapter_names=[a for _, a in unique]):  # peft's routing
                for i in range(start, end):
                    hidden = layers[i](hidden, attention_mask=masks[types[i]], position_embeddings=rotary[types[i]],
                                       position_ids=position_ids, use_cache=True, **{_cache_kwarg(): cache})
        final = list(dict.fromkeys(row_keys))
        cache.batch_select_indices(torch.tensor([final.index(k) for k in row_keys]))
        return cache

    def _unbatch(self, requests, out, width, prompt_lens, limits, seconds) -> list[Generation]:
        new = out.sequences[:, width:]
        logprobs = torch.stack(out.logits, dim=1).float().log_softmax(-1)  # (batch, steps, vocab)
        chosen = logprobs.gather(-1, new.unsqueeze(-1)).squeeze(-1)
        stops = set(self._stop_ids)
        results = []
        for i, r in enumerate(requests):
            ids = new[i, :limits[i]].tolist()
            n = next((j for j, t in enumerate(ids) if t in stops), len(ids))  # the end token is not the answer's
            finished = n < len(ids)
            results.append(Generation(
                text=self.tokenizer.decode(ids[:n], skip_special_tokens=True).strip(), adapter=r.adapter,
                token_ids=ids[:n], token_logprobs=chosen[i, :n].tolist(), prompt_tokens=prompt_lens[i],
                finished=finished, seconds=seconds, abstain_logprob=logprobs[i, 0, self.abstain_token].item()))
        return results

    @_serialised
    @torch.inference_mode()
    def loglikelihood(self, requests: Sequence[Request], continuations: Sequence[str]) -> list[list[float]]:
        """The log-prob of each token of each continuation, end-of-turn included, as the reply to its request,
        each row with its own adapter: for choosing among options (yes/no/maybe, multiple choice)."""
        if len(requests) != len(continuations):
            raise ValueError(f"{len(requests)} requests but {len(continuations)} continuations")
        for adapter in {r.adapter for r in requests} - {None}:
            self._require_adapter(adapter)
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        prompts = [encode(self._render(i, r)) for i, r in enumerate(requests)]
        replies = [self._reply_ids(c) for c in continuations]
        rows = [p + c for p, c in zip(prompts, replies)]
        width = max(map(len, rows), default=0)
        if width > self.base.max_positions:
            raise PromptTooLongError(f"a prompt with its continuation has {width} tokens, more than the model's "
                                     f"context of {self.base.max_positions}")
        # right padding: a causal model never looks ahead, so the padding changes nothing before it
        ids = torch.tensor([r + [self.tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        routing = (self.model._enable_peft_forward_hooks(adapter_names=[r.adapter or BASE for r in requests])
                   if self._adapters else contextlib.nullcontext())
        with routing:
            hidden = self.base.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        return self._reply_logprobs(hidden, [len(p) - 1 for p in prompts], replies)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone, as this model counts them (for packing contexts into a budget)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, i: int, request: Request) -> str:
        if not request.messages or not any(m.get("content", "").strip() for m in request.messages
                                            if m.get("role") == "user"):
            raise ValueError(f"request {i}: the prompt is empty (no user message with text)")
        return render(self.tokenizer, request.messages)

    def _require_adapter(self, name: str) -> None:
        if name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise AdapterError(f"unknown adapter {name!r}; loaded adapters: {known}")

    def _check_adapter_files(self, name: str, path: Path) -> None:
        """Fail before peft does, with a message that names the file and the problem."""
        if not path.is_dir():
            raise AdapterError(f"adapter {name!r}: folder {path} does not exist")
        config_file = path / "adapter_config.json"
        if not config_file.is_file():
            raise AdapterError(f"adapter {name!r}: {path} is not a PEFT adapter folder (no adapter_config.json)")
        try:
            json.loads(config_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AdapterError(f"adapter {name!r}: {config_file} is not valid JSON ({e})") from e
        weights = path / "adapter_model.safetensors"
        if not weights.is_file():
            pickled = (path / "adapter_model.bin").is_file()
            raise AdapterError(f"adapter {name!r}: {path} holds no adapter_model.safetensors" + (
                " but adapter_model.bin, a pickle, which council never loads (a pickle can run code): "
                "ask for the adapter in safetensors, the format peft saves by default" if pickled else ""))
        self._check_shapes(name, weights)

    def _check_shapes(self, name: str, weights: Path) -> None:
        from safetensors import safe_open

        try:
            with safe_open(weights, framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:
            raise AdapterError(f"adapter {name!r}: {weights} is corrupt or not safetensors ({e})") from e
        for key, shape in shapes.items():
            m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])\.weight", key)
            if not m:
                continue
            module, ab = m.groups()
            if module not in self._linear_shapes:
                raise AdapterMismatchError(
                    f"adapter {name!r} was made for another base model: it adapts {module!r}, "
                    f"which this base model ({self.base.name}) does not have")
            fan_in, fan_out = self._linear_shapes[module]
            expected, got = (fan_in, shape[1]) if ab == "A" else (fan_out, shape[0])
            if expected != got:
                raise AdapterMismatchError(
                    f"adapter {name!r} was made for another base model: {key} has shape {list(shape)}, "
                    f"but {module} of {self.base.name} has {fan_in} inputs and {fan_out} outputs")


@functools.cache
def _cache_kwarg() -> str:
    """What transformers calls the KV cache argument: `cache` from 5.24 on (`past_key_values` warns, and goes
    in 5.40), `past_key_values` before (where an unknown `cache` would be silently ignored)."""
    from transformers.masking_utils import create_causal_mask

    return "cache" if "cache" in inspect.signature(create_causal_mask).parameters else "past_key_values"


def line_end_tokens(tokenizer) -> list[int]:
    """Every token whose text holds a line end (PLAIN_ANSWER_END): a plain-template answer ends at the first.

    Decodes the whole vocabulary once, in the Rust tokenizer when there is one (Gemma's 262k tokens: 0.7 s;
    32 of them, all runs of newlines and the byte <0x0A>); special tokens decode to nothing.
    """
    vocab = [[t] for t in range(len(tokenizer))]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    texts = (backend.decode_batch(vocab, skip_special_tokens=True) if backend is not None
             else tokenizer.batch_decode(vocab, skip_special_tokens=True))
    return [t for (t,), text in zip(vocab, texts) if PLAIN_ANSWER_END in text]


def check_adapter_name(name: str) -> None:
    """Raise AdapterError unless `name` is usable as a peft adapter name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise AdapterError(f"adapter name {name!r} is not valid: use 1-64 letters, digits, '_' or '-', "
                           "starting with a letter")
    if name in (BASE, "default") or name in "lora_":
        # peft reserves these; names inside "lora_" (such as "a") are silently re-initialised on load
        raise AdapterError(f"adapter name {name!r} is reserved by peft: choose another name")
