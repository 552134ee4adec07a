"""examples/python/ddp_train.py: 2 processes with DistributedDataParallel over gloo end with the parameters of
single-process training on the same global batches."""

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python" / "ddp_train.py"


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_ddp_equals_single_process():
    r = subprocess.run([sys.executable, str(EXAMPLE), "--world-size", "2", "--steps", "4", "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "max |DDP - single process|" in r.stdout
