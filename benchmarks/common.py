"""Pieces the benchmarks share."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from council import base_model
from council.engine import peft_wrapping


def random_adapters(base: base_model.BaseModel, folder: Path, n: int) -> dict[str, Path]:
    """n LoRA adapters (r=8 on q/v) with small random B, so each really runs and the text stays sensible."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    names = [f"bench{i}" for i in range(n)]
    with peft_wrapping():
        model = get_peft_model(base_model.load(base.path).model, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "lora_B" in pname:
                p.normal_(std=1e-3)
    model.save_pretrained(folder, selected_adapters=names)  # one subfolder per adapter
    return {name: folder / name for name in names}


def write_json(path: Path, results: dict) -> None:
    """Write a benchmark's figures as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
