"""LoRA training of one specialist: examples in, a PEFT adapter folder out.

Each question example is tokenised as the engine will ask it (council.prompts.render) followed by its
answer and the end-of-turn token, and the loss covers the answer tokens only; a text example (a document)
is trained on all its tokens. Batches are padded only to their longest row (dynamic padding: 3x cheaper
than a fixed length on CPU, docs/environment.md). Every `checkpoint_every` steps the adapter, optimiser and step
are saved under `<out>/checkpoint/` as safetensors and JSON (no pickle: a checkpoint cannot run code); a run
started again with the same config and data resumes from there.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from council import base_model
from council.engine import peft_wrapping
from council.prompts import render, reply_text
from specialists.data import Example


FINISHED_FILE = "training.json"  # a finished run's config, data size and figures, beside its adapter
STATE_TENSORS, STATE_JSON = "state.safetensors", "state.json"  # a checkpoint's optimiser and RNG; the rest


@dataclass
class TrainConfig:
    """How one specialist is trained; stored in its card."""

    base_model: str = base_model.BUILTIN_MODEL
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj")
    # None = every layer; else the layer indices to adapt. Top layers only make backward cheaper (no gradient
    # flows below the lowest adapted layer) and leave the lower layers shared by all specialists.
    layers: tuple[int, ...] | None = None
    # The top share of the layers to adapt, for recipes that serve several bases: 1/3 is the top 10 of
    # SmolLM2-135M's 30 layers and the top 6 of Gemma 3 270M's 18. Exclusive with `layers`.
    layer_fraction: float | None = None
    # A PEFT adapter folder (a shared reader) whose LoRA weights this run starts from instead of zero;
    # its rank, modules and layers must be this config's.
    init_adapter: str | None = None
    learning_rate: float = 3e-4
    batch_size: int = 8
    max_steps: int = 200
    warmup_steps: int = 10
    max_length: int = 384
    seed: int = 0
    checkpoint_every: int = 25
    threads: int | None = None

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        self.layers = tuple(self.layers) if self.layers is not None else None
        for name in ("rank", "alpha", "batch_size", "max_steps", "max_length", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}: must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TrainConfig.dropout={self.dropout}: must be in [0, 1)")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate}: must be > 0")
        if self.layer_fraction is not None and not (0 < self.layer_fraction <= 1 and self.layers is None):
            raise ValueError(f"TrainConfig.layer_fraction={self.layer_fraction}: must be in (0, 1], and not "
                             "given together with layers")
        if not self.target_modules:
            raise ValueError("TrainConfig.target_modules is empty: name the Linear modules to adapt, e.g. q_proj")

    def to_dict(self) -> dict:
        return asdict(self)

    def layer_indices(self, num_layers: int) -> list[int] | None:
        """The decoder layers to adapt in a model of `num_layers` (None = all)."""
        if self.layer_fraction is not None:
            return list(range(num_layers - max(1, round(num_layers * self.layer_fraction)), num_layers))
        return list(self.layers) if self.layers is not None else None


@dataclass
class TrainResult:
    """What a training run did: the adapter folder, steps, time, losses and data counts."""

    adapter_dir: Path
    steps: int
    seconds: float
    examples: int
    skipped_too_long: int
    tokens: int
    losses: list[float] = field(repr=False)
    resumed_from: int = 0

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else float("nan")

    def to_dict(self) -> dict:
        return {"steps": self.steps, "seconds": round(self.seconds, 1), "examples": self.examples,
                "skipped_too_long": self.skipped_too_long, "tokens": self.tokens,
                "final_loss": round(self.final_loss, 4), "resumed_from": self.resumed_from}


def tokenize(tokenizer, example: Example) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one example; labels are -100 where no loss is taken (the prompt)."""
    eos = tokenizer.eos_token
    if example.is_text:
        ids = tokenizer(example.text() + eos, add_special_tokens=False)["input_ids"]
        return ids, list(ids)
    prompt = tokenizer(render(tokenizer, example.messages()), add_special_tokens=False)["input_ids"]
    answer = tokenizer(reply_text(tokenizer, example.answer) + eos, add_special_tokens=False)["input_ids"]
    return prompt + answer, [-100] * len(prompt) + answer


BUCKET_BATCHES = 32  # batches whose rows are grouped by length, then shuffled back into the epoch


def _batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: a shuffled order, cut into buckets of BUCKET_BATCHES batches whose rows are sorted
    by length before batching. A batch is padded to its longest row, and reading examples range from 100 to
    480 tokens: grouping like lengths saves most of the padding, while the shuffles keep batches random."""
    rng = random.Random(f"{seed}/{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    for b in range(0, len(order), BUCKET_BATCHES * batch_size):
        bucket = sorted(order[b:b + BUCKET_BATCHES * batch_size], key=lambda i: lengths[i])
        batches += [bucket[i:i + batch_size] for i in range(0, len(bucket), batch_size)]
    rng.shuffle(batches)
    return batches


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):  # right padding: training needs no generation alignment
        ids[i, :len(x)], labels[i, :len(y)], mask[i, :len(x)] = torch.tensor(x), torch.tensor(y), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def answer_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the labelled tokens, with the LM head applied at those positions only.

    The head (vocab x hidden, 49152 x 576 for SmolLM2) over every position of a 150-token prompt costs
    about as much as the rest of the forward and backward; the loss needs it only at the answer's tokens.
    """
    causal_lm = model.get_base_model()
    hidden = causal_lm.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    targets = inputs["labels"][:, 1:]
    keep = targets != -100
    logits = causal_lm.lm_head(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def _store_half(weights: Path) -> None:
    """Rewrite a finished adapter's weights in fp16: half the size, and peft casts them back on load (a LoRA
    delta's rounding is far below what changes a greedy answer; tests/test_train.py checks one)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, weights,
              metadata={"format": "pt"})


def _start_from(model, folder: Path, device: str) -> None:
    """Load a finished adapter's LoRA weights (a shared reader) as this run's starting point; every LoRA
    weight of the run must come from it, or the shapes differ and the run would silently start half at zero."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ValueError(f"init_adapter {folder}: no adapter_model.safetensors (a finished PEFT adapter folder)")
    state = {k: v.float() for k, v in load_file(weights, device=device).items()}
    result = set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if "lora_" in k]
    if missing or result.unexpected_keys:
        raise ValueError(f"init_adapter {folder} does not fit this run's LoRA shape (rank, modules, layers): "
                         f"{len(missing)} weights missing, {len(result.unexpected_keys)} unexpected")


def train(examples: Sequence[Example], out_dir: str | Path, config: TrainConfig | None = None, *,
          progress: bool = True) -> TrainResult:
    """Train a LoRA adapter on `examples` and save it as a PEFT folder at `out_dir`."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if not examples:
        raise ValueError("the training set is empty: no examples to train on")
    out_dir = Path(out_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    base = base_model.load(config.base_model)
    tokenizer = base.tokenizer
    data = [tokenize(tokenizer, e) for e in examples]
    kept = [d for d in data if len(d[0]) <= config.max_length]
    if not kept:
        raise ValueError(f"every example is longer than max_length={config.max_length} tokens")
    if (done := _finished(out_dir, config, len(kept))) is not None:
        return done  # finished before: a build stopped after training resumes at its evaluation
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), task_type="CAUSAL_LM",
                      layers_to_transform=config.layer_indices(base.model.config.num_hidden_layers))
    with peft_wrapping():
        model = get_peft_model(base.model, lora).to(device)
    if config.init_adapter:
        _start_from(model, Path(config.init_adapter), device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    decay = lambda step: min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (  # noqa: E731
        1 + math.cos(math.pi * min(step, config.max_steps) / config.max_steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)

    checkpoint = out_dir / "checkpoint"
    run = _run_id(config, kept)
    start, losses, before = 0, [], 0.0  # `before`: training seconds of the runs this one resumes
    if (state := _load_state(checkpoint, run, optimizer, scheduler)) is not None:
        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors", device=device))
        start, losses, before = state["step"], state["losses"], state["seconds"]

    per_epoch = math.ceil(len(kept) / config.batch_size)
    lengths = [len(ids) for ids, _ in kept]
    t0 = time.perf_counter()
    bar = tqdm(total=config.max_steps, initial=start, desc=f"training {out_dir.name}", disable=not progress)
    epoch, batches = None, []
    for step in range(start, config.max_steps):
        if step // per_epoch != epoch:  # an epoch's order is made once, not at every step
            epoch = step // per_epoch
            batches = _batches(lengths, config.batch_size, config.seed, epoch)
        batch = batches[step % per_epoch]
        inputs = {k: v.to(device) for k, v in _collate([kept[i] for i in batch], tokenizer.pad_token_id).items()}
        loss = answer_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if (step + 1) % config.checkpoint_every == 0 and step + 1 < config.max_steps:
            model.save_pretrained(checkpoint)
            _save_state(checkpoint, {"run": run, "step": step + 1, "losses": losses,
                                     "seconds": before + time.perf_counter() - t0}, optimizer, scheduler)
    bar.close()
    model.save_pretrained(out_dir)
    _store_half(out_dir / "adapter_model.safetensors")
    set_base_name(out_dir, config.base_model)
    (out_dir / "README.md").unlink(missing_ok=True)  # peft's model-card stub; the specialist card replaces it
    result = TrainResult(adapter_dir=out_dir, steps=config.max_steps, seconds=before + time.perf_counter() - t0,
                         examples=len(kept), skipped_too_long=len(data) - len(kept),
                         tokens=sum(len(kept[i][0]) for i in range(len(kept))), losses=losses, resumed_from=start)
    # written last: its presence says the adapter beside it is finished (a build stopped while evaluating
    # then resumes at its evaluation, not at step 0)
    (out_dir / FINISHED_FILE).write_text(json.dumps({"config": _comparable(config.to_dict()), "examples": len(kept),
                                                     "result": result.to_dict(), "losses": losses}) + "\n")
    shutil.rmtree(checkpoint, ignore_errors=True)
    return result


def set_base_name(adapter_dir: Path, base: str) -> None:
    """Record the base as its built-in name or hub id in adapter_config.json: peft writes the folder it was
    loaded from, a path of the machine that trained it (and of nobody else's)."""
    b = base_model.builtin(base)
    name = b.name if b is not None else Path(base).name if Path(base).expanduser().is_dir() else base
    path = adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**config, "base_model_name_or_path": name}, indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")


def _run_id(config: TrainConfig, kept: list) -> str:
    """What makes a checkpoint this run's: the config (less its thread count) and the tokenised data."""
    h = hashlib.sha256(json.dumps(_comparable(config.to_dict()), sort_keys=True).encode())
    for ids, labels in kept:
        h.update(json.dumps([list(map(int, ids)), list(map(int, labels))]).encode())
    return h.hexdigest()


def _save_state(checkpoint: Path, meta: dict, optimizer, scheduler) -> None:
    """The optimiser's tensors and the RNG as safetensors, everything else as JSON: no pickle to load back."""
    from safetensors.torch import save_file

    opt = optimizer.state_dict()
    tensors = {f"optimizer.{i}.{k}": v.contiguous() for i, s in opt["state"].items() for k, v in s.items()}
    tensors["rng"] = torch.get_rng_state()
    save_file(tensors, checkpoint / STATE_TENSORS)
    meta = {**meta, "param_groups": opt["param_groups"], "scheduler": scheduler.state_dict()}
    (checkpoint / STATE_JSON).write_text(json.dumps(meta) + "\n")  # written last: the checkpoint is whole


def _load_state(checkpoint: Path, run: str, optimizer, scheduler) -> dict | None:
    """Restore the optimiser, scheduler and RNG of this run's checkpoint; None when there is none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if (checkpoint / "state.pt").exists():
        raise ValueError(f"{checkpoint} holds a pickled state.pt, which council never loads (a pickle can run "
                         "code): delete the folder to start over")
    if not (checkpoint / STATE_JSON).is_file():
        return None
    try:
        meta = json.loads((checkpoint / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(checkpoint / STATE_TENSORS)
    except (OSError, ValueError, SafetensorError) as e:
        raise ValueError(f"{checkpoint} is corrupt ({e}): delete it to start over") from e
    if not isinstance(meta, dict) or meta.get("run") != run:
        raise ValueError(f"{checkpoint} was made by another config or data set: delete it to start over")
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng"])
    return meta


def _comparable(config: dict) -> dict:
    """A config as it bears on the result: the thread count changes none."""
    return {k: v for k, v in config.items() if k != "threads"}


def _finished(out_dir: Path, config: TrainConfig, examples: int) -> TrainResult | None:
    """The result of a finished run of this config and data in `out_dir`, or None."""
    path = out_dir / FINISHED_FILE
    if not (path.is_file() and (out_dir / "adapter_model.safetensors").is_file()):
        return None
    done = json.loads(path.read_text(encoding="utf-8"))
    if done.get("config") != _comparable(json.loads(json.dumps(config.to_dict()))) or done.get("examples") != examples:
        return None
    r = done["result"]
    return TrainResult(adapter_dir=out_dir, steps=r["steps"], seconds=r["seconds"], examples=r["examples"],
                       skipped_too_long=r["skipped_too_long"], tokens=r["tokens"], losses=done["losses"],
                       resumed_from=r["resumed_from"])
