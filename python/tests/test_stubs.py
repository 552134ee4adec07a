"""The committed type stubs (python/ssm/_ext.pyi) are what nanobind's stubgen makes of the built extension."""

import subprocess
import sys
from pathlib import Path

import pytest

import ssm


def test_stub_is_current(tmp_path):
    pytest.importorskip("nanobind.stubgen")
    committed = Path(ssm.__file__).with_name("_ext.pyi")
    fresh = tmp_path / "_ext.pyi"
    subprocess.run([sys.executable, "-m", "nanobind.stubgen", "-q", "-m", "ssm._ext", "-o", str(fresh)], check=True)
    assert committed.read_text() == fresh.read_text(), (
        "python/ssm/_ext.pyi is stale: regenerate it with `python -m nanobind.stubgen -m ssm._ext -o "
        "python/ssm/_ext.pyi` in the package's environment")


def test_public_functions_have_docstrings():
    import ssm.torch

    for module in (ssm, ssm.torch):
        for name in module.__all__:
            assert getattr(module, name).__doc__, f"{module.__name__}.{name} has no docstring"
