"""The runtime registry of built specialists: folders holding a PEFT adapter and its card, by name.

What a council reads at run time, apart from the recipes and training code that build the catalog
(specialists/catalog.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specialists.card import CardError, SpecialistCard

CATALOG_DIR = Path(__file__).parent / "catalog"


class UnknownSpecialistError(KeyError):
    """A specialist name that is not in the catalog; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Specialist:
    """A built specialist: its folder (a PEFT adapter) and its card."""

    path: Path
    card: SpecialistCard

    @property
    def name(self) -> str:
        return self.card.name


def load_catalog(root: str | Path = CATALOG_DIR) -> dict[str, Specialist]:
    """Every specialist folder under `root` (those holding a card), by name.

    FileNotFoundError when `root` is not a folder; CardError for a card whose name cannot be an adapter's."""
    from council.engine import AdapterError, check_adapter_name

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"catalog folder {root} does not exist (or is not a folder): give a folder of "
                                "specialist folders, each holding specialist.json")
    catalog = {}
    for folder in sorted(root.glob("*")):
        if not (folder / "specialist.json").is_file():
            continue
        card = SpecialistCard.load(folder)
        try:
            check_adapter_name(card.name)
        except AdapterError as e:
            raise CardError(f"{folder / 'specialist.json'}: name {card.name!r} cannot name an adapter ({e})") from None
        catalog[card.name] = Specialist(folder, card)
    return catalog


def get(catalog: dict[str, Specialist], name: str) -> Specialist:
    """The named specialist, or an error listing the known names."""
    if name not in catalog:
        raise UnknownSpecialistError(f"unknown specialist {name!r}; known: {', '.join(sorted(catalog)) or 'none'}")
    return catalog[name]
