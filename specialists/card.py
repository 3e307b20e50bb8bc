"""The specialist card, `specialist.json`: what a specialist is, what it was built from, how well it does.

A specialist is a folder: a PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors) and its card.
The card's base-model fingerprint is checked when the adapter is loaded (council.engine).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

CARD_FILE = "specialist.json"
MODEL_CARD_FILE = "README.md"  # the Hugging Face model card, written from the card beside it
CARD_VERSION = 1


class CardError(ValueError):
    """A missing or malformed specialist card; the message names the file and the field."""


@dataclass
class SpecialistCard:
    """Everything known about one specialist; `eval` holds its scores and the base model's on the same split."""

    name: str
    domain: str
    description: str
    base_model: dict  # {"name": ..., "fingerprint": ...}
    training: dict  # sources with counts, the TrainConfig, the run's figures
    routing: dict  # {"examples": [typical questions]}
    code_version: str
    eval: dict = field(default_factory=dict)
    version: int = CARD_VERSION

    def __post_init__(self):
        for name in ("name", "domain", "description"):
            if not str(getattr(self, name)).strip():
                raise CardError(f"specialist card: {name!r} is empty")
        if not self.base_model.get("fingerprint"):
            raise CardError(f"specialist card {self.name!r}: base_model.fingerprint is missing")

    @property
    def reliability(self) -> float:
        """A prior weight for its votes in 0-1: the mean of its answerable and abstain F1 on held-out data."""
        scores = [self.eval[k] for k in ("answerable_f1", "abstain_f1") if k in self.eval]
        return round(sum(scores) / len(scores) / 100, 3) if scores else 0.5

    @property
    def no_answer_threshold(self) -> float:
        """Above this no-answer margin the specialist abstains: fitted on validation questions at build time
        (specialists.evaluate.fit_threshold); 0, plain greedy decoding, for a card without one."""
        return float(self.eval.get("no_answer", {}).get("threshold", 0.0))

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, folder: str | Path) -> Path:
        """Write specialist.json and, from it, the folder's model card README.md."""
        path = Path(folder) / CARD_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        (Path(folder) / MODEL_CARD_FILE).write_text(self.model_card(), encoding="utf-8")
        return path

    def model_card(self) -> str:
        """A short Hugging Face model card: what it is, its data, its scores, its base and that base's origin."""
        from council.base_model import builtin

        base = self.base_model["name"]
        b = builtin(base)
        licence = "gemma" if b is not None and b.notice == "GEMMA.md" else "apache-2.0"
        sources = "\n".join(f"- {_source(s)}" for s in self.training.get("sources", [])) or "- (not recorded)"
        counts = ", ".join(f"{k} {v}" for k, v in self.training.get("counts", {}).items())
        result = self.training.get("result", {})
        lines = ["---", "library_name: peft", f"base_model: {base}", f"license: {licence}",
                 "tags: [lora, question-answering, council]", "---", "", f"# {self.name}", "",
                 self.description, "",
                 f"A LoRA adapter (PEFT) for the council engine: a specialist in **{self.domain}** on the base "
                 f"model `{base}` (fingerprint `{self.base_model['fingerprint']}`), which checks the fingerprint "
                 "when it loads the adapter.", ""]
        if b is not None:
            lines += [f"**Its base** is council's built-in `{b.name}`: {b.about.split(',')[0]}, rebuilt from a "
                      f"{_quantisation(b.about)} GGUF (dequantised to safetensors), so its weights differ from the "
                      "original release's: load this adapter on that rebuilt base, `council` makes it.", ""]
        lines += ["## Data", "", sources, ""]
        if counts:
            lines += [f"Examples: {counts}; {result.get('steps', '?')} steps of "
                      f"{self.training.get('config', {}).get('batch_size', '?')}, final loss "
                      f"{result.get('final_loss', '?')}.", ""]
        official, base_official = self.eval.get("official"), self.eval.get("base", {}).get("official")
        lines += ["## Scores", ""]
        if official:
            lines += [f"Official SQuAD 2.0 score on {official['total']} questions of its `{self.eval.get('split')}` "
                      "split (unseen articles for the reading specialists):", "",
                      "| | F1 | EM | HasAns F1 | NoAns acc |", "|---|---|---|---|---|",
                      _row("this specialist", official)]
            if base_official:
                lines.append(_row(f"base `{base}`", base_official))
            lines.append(f"| always abstain | {official.get('NoAns_total', 0) / official['total'] * 100:.2f} | - | 0 "
                         "| 100 |")
        elif self.eval:
            lines += [f"Held-out answerable F1 {self.eval.get('answerable_f1', '-')} (base "
                      f"{self.eval.get('base', {}).get('answerable_f1', '-')}), abstain F1 "
                      f"{self.eval.get('abstain_f1', '-')}."]
        else:
            lines.append("Not evaluated.")
        if licence == "gemma":
            lines += ["", "## Terms", "", "A Model Derivative of Gemma under the Gemma Terms of Use "
                      "(https://ai.google.dev/gemma/terms): see GEMMA.md beside this file, and pass it on."]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, folder: str | Path) -> SpecialistCard:
        path = Path(folder) / CARD_FILE
        if not path.is_file():
            raise CardError(f"{path}: no specialist card (every specialist folder holds {CARD_FILE})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CardError(f"{path}: not valid JSON ({e})") from e
        known = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in data and f.name not in ("eval", "version")]
        if missing:
            raise CardError(f"{path}: missing field(s) {', '.join(missing)}")
        if data.get("version", CARD_VERSION) > CARD_VERSION:
            raise CardError(f"{path}: card version {data['version']} is newer than this code reads ({CARD_VERSION})")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except CardError as e:
            raise CardError(f"{path}: {e}") from e


def _source(source: dict) -> str:
    return ", ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in source.items())


def _quantisation(about: str) -> str:
    return next((w for w in about.replace(",", " ").split() if w.startswith("Q") and "_" in w), "quantised")


def _row(label: str, s: dict) -> str:
    return f"| {label} | {s['f1']} | {s['exact']} | {s.get('HasAns_f1', '-')} | {s.get('NoAns_exact', '-')} |"


def code_version() -> str:
    """The package version and, inside a git checkout, the commit that built it."""
    from importlib.metadata import version

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sha = ""
    return f"council {version('council')}" + (f" ({sha})" if sha else "")
