import json

import pytest
import torch
from safetensors.torch import load_file

from council import base_model
from council.engine import Engine, Request
from council.prompts import ABSTAIN_ANSWER
from specialists import train as train_module
from specialists.data import Example
from specialists.train import TrainConfig, train

EXAMPLES = [Example(f"q{i}", q, a, context=(c,), answers=() if a == ABSTAIN_ANSWER else (a,))
            for i, (q, a, c) in enumerate([
                ("What is the capital?", "Paris", "Paris is the capital of France."),
                ("Who conquered England?", "the Normans", "The Normans conquered England in 1066."),
                ("What is force?", "a push or pull", "A force is a push or pull on an object."),
                ("Who won the match?", ABSTAIN_ANSWER, "The oil crisis began in 1973."),
            ])]


def _config(tiny_model_dir, **kw):
    return TrainConfig(base_model=str(tiny_model_dir), max_steps=4, batch_size=2, checkpoint_every=2,
                       learning_rate=1e-2, warmup_steps=1, target_modules=("q_proj", "v_proj"), **kw)


def test_training_lowers_the_loss_and_saves_a_small_loadable_adapter(tiny_model_dir, tmp_path):
    result = train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir, layers=(1,)), progress=False)
    assert result.steps == 4 and result.examples == 4 and not (tmp_path / "spec" / "checkpoint").exists()
    weights = load_file(tmp_path / "spec" / "adapter_model.safetensors")
    assert weights and all(w.dtype == torch.float16 for w in weights.values())
    assert all(".layers.1." in k for k in weights)  # only the layers asked for
    adapter_config = json.loads((tmp_path / "spec" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == tiny_model_dir.name  # no path of this machine
    engine = Engine(base_model.load(tiny_model_dir))
    engine.load_adapter("spec", tmp_path / "spec")
    assert engine.generate([Request(EXAMPLES[0].messages(), "spec")], max_new_tokens=3)[0].new_tokens >= 1


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, monkeypatch):
    whole = train(EXAMPLES, tmp_path / "whole", _config(tiny_model_dir), progress=False)
    calls = {"n": 0}
    real_loss = train_module.answer_loss

    def dies_at_step_3(model, inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed")
        return real_loss(model, inputs)

    monkeypatch.setattr(train_module, "answer_loss", dies_at_step_3)
    with pytest.raises(RuntimeError, match="killed"):
        train(EXAMPLES, tmp_path / "resumed", _config(tiny_model_dir), progress=False)
    monkeypatch.undo()
    before = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["seconds"]
    assert before > 0
    with pytest.raises(ValueError, match="another config"):  # its checkpoint is not reused by another config
        train(EXAMPLES, tmp_path / "resumed", _config(tiny_model_dir, seed=1), progress=False)
    resumed = train(EXAMPLES, tmp_path / "resumed", _config(tiny_model_dir), progress=False)
    assert resumed.resumed_from == 2 and resumed.seconds > before  # its time counts the steps before the stop
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-4)
    a, b = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("whole", "resumed"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_empty_training_set_is_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="training set is empty"):
        train([], tmp_path / "x", _config(tiny_model_dir))


def test_layer_fraction_adapts_the_top_layers_and_a_run_can_start_from_a_reader(tiny_model_dir, tmp_path):
    assert TrainConfig(layer_fraction=1 / 3).layer_indices(30) == list(range(20, 30))
    assert TrainConfig(layer_fraction=1 / 3).layer_indices(18) == list(range(12, 18))
    with pytest.raises(ValueError, match="layer_fraction=0: must be in"):
        TrainConfig(layer_fraction=0)
    reader = train(EXAMPLES, tmp_path / "reader", _config(tiny_model_dir, layer_fraction=0.5), progress=False)
    assert all(".layers.1." in k for k in load_file(reader.adapter_dir / "adapter_model.safetensors"))
    # a domain specialist continuing from the reader starts where the reader ended: its first loss is lower
    cold = train(EXAMPLES, tmp_path / "cold", _config(tiny_model_dir, layer_fraction=0.5), progress=False)
    warm = train(EXAMPLES, tmp_path / "warm", _config(tiny_model_dir, layer_fraction=0.5,
                                                      init_adapter=str(reader.adapter_dir)), progress=False)
    assert warm.losses[0] < cold.losses[0]
    with pytest.raises(ValueError, match="does not fit this run's LoRA shape"):
        train(EXAMPLES, tmp_path / "bad", _config(tiny_model_dir, layers=(0,), init_adapter=str(reader.adapter_dir)),
              progress=False)


def test_a_finished_run_is_not_trained_again(tiny_model_dir, tmp_path, monkeypatch):
    first = train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir), progress=False)
    assert (tmp_path / "spec" / train_module.FINISHED_FILE).is_file()
    monkeypatch.setattr(train_module, "answer_loss", lambda *a: pytest.fail("trained again"))
    again = train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir, threads=1), progress=False)
    assert again.losses == first.losses and again.steps == first.steps
    monkeypatch.undo()
    other = train(EXAMPLES, tmp_path / "spec", _config(tiny_model_dir, seed=1), progress=False)
    assert other.losses != first.losses  # another config is another run
