"""Safe by default: no pickle is ever loaded, and an embedded Ray instance listens on loopback only."""

import ipaddress
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from council import base_model
from council.base_model import ModelNotFoundError
from council.engine import AdapterError, Engine
from specialists.train import train
from tests.test_train import EXAMPLES, _config

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """A pickle that writes a file when loaded: the attack a pickled checkpoint or adapter carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_a_pickled_training_checkpoint_is_refused_and_never_run(tiny_model_dir, tmp_path):
    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "spec" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"pickled state\.pt, which council never loads"):
        train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir), progress=False)
    assert not marker.exists()


def test_a_checkpoint_of_another_run_or_a_corrupt_one_is_refused(tiny_model_dir, tmp_path, monkeypatch):
    from specialists import train as train_module

    def dies(*a):
        raise RuntimeError("killed")

    monkeypatch.setattr(train_module, "answer_loss", lambda m, i, real=train_module.answer_loss: (
        dies() if (checkpoint / "state.json").exists() else real(m, i)))
    checkpoint = tmp_path / "spec" / "checkpoint"
    with pytest.raises(RuntimeError, match="killed"):
        train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir), progress=False)
    monkeypatch.undo()
    state = json.loads((checkpoint / "state.json").read_text())
    assert state["step"] == 2 and not list(checkpoint.glob("*.pt"))  # safetensors and JSON only
    with pytest.raises(ValueError, match="another config or data set"):  # same config, other data
        train(EXAMPLES[:3], tmp_path / "spec", _config(tiny_model_dir), progress=False)
    (checkpoint / "state.safetensors").write_bytes(b"\x00junk")
    with pytest.raises(ValueError, match=r"checkpoint is corrupt"):
        train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir), progress=False)


def test_a_pickled_adapter_is_refused_without_inviting_to_turn_safety_off(tiny_model_dir, tiny_adapters, tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "binary"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((tiny_adapters["law"] / "adapter_config.json").read_text())
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    engine = Engine(base_model.load(tiny_model_dir))
    with pytest.raises(AdapterError, match=r"adapter_model\.bin, a pickle, which council never loads") as e:
        engine.load_adapter("binary", folder)
    assert "weights_only" not in str(e.value) and "trust" not in str(e.value)
    assert not marker.exists()


def test_a_base_model_with_only_pickled_weights_is_refused(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (folder / f.name).write_bytes(f.read_bytes())
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "pwned")))
    with pytest.raises(ModelNotFoundError, match=r"holds no \*\.safetensors weights.*never a pickle"):
        base_model.load(folder)
    assert not (tmp_path / "pwned").exists()


def test_no_code_of_ours_loads_a_pickle():
    loaders = re.compile(r"pickle\.loads?\(|torch\.load\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True|"
                         r"joblib\.load|cloudpickle\.loads?")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in [*ROOT.glob("council/**/*.py"), *ROOT.glob("specialists/**/*.py"),
                                                   *ROOT.glob("benchmarks/**/*.py")]
            for i, line in enumerate(p.read_text().splitlines(), 1) if loaders.search(line)]
    assert hits == []


@pytest.mark.ray
def test_the_embedded_ray_instance_listens_on_loopback_only():
    """Every listening socket of the embedded instance's processes (GCS, raylet, workers) is on 127.0.0.1.

    In a child process: this test session may be connected to another Ray cluster already."""
    script = """
import json, psutil, ray
from council.hosts import connect
assert connect()
ray.get(ray.remote(lambda: 1).remote())  # a worker up, with its own servers
me = psutil.Process()
listening = sorted({(c.laddr.ip, p.name()) for p in [me, *me.children(recursive=True)]
                    for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})
ray.shutdown()
print(json.dumps(listening))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    listening = json.loads(out.stdout.strip().splitlines()[-1])
    assert listening, "no listening socket found: the check would pass vacuously"
    assert [(ip, name) for ip, name in listening if not _loopback(ip)] == []


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)
