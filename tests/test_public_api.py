"""The public surface: `from council import ...` for every name of a sorted `__all__`, loaded lazily."""

import subprocess
import sys

import pytest

import council


def test_every_public_name_imports_and_all_is_sorted():
    assert council.__all__ == sorted(council.__all__)
    for name in council.__all__:
        assert getattr(council, name).__name__ == name
    from council import Council, CouncilConfig, Verdict  # noqa: F401  (the README's import)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        council.Nope  # noqa: B018


def test_import_council_loads_no_model_library():
    out = subprocess.run([sys.executable, "-c", "import sys, council; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
