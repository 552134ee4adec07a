#!/usr/bin/python3
"""Reference discretizations for tests/continuous (ssm::discretize_* against scipy).

Draws random stable continuous systems (A, B) and discretizes them with
scipy.signal.cont2discrete for several steps Delta and methods; writes A, B and the resulting
A_bar, B_bar to tests/data/continuous/discretize_reference.json (values printed with repr(), i.e.
round-trip exact doubles).  Run with Debian's python (scipy 1.10):

    /usr/bin/python3 tools/gen_discretize_reference.py

scipy's method names map to ssm's: zoh -> zoh, bilinear -> bilinear (GBT alpha = 1/2),
euler -> forward Euler (GBT 0), backward_diff -> backward Euler (GBT 1), gbt -> GBT(alpha).
Only A_bar and B_bar are compared (scipy's bilinear/GBT also rewrite C and D for its output
convention; the LSSL keeps C and D).
"""
import json
import os

import numpy as np
import scipy
from scipy.signal import cont2discrete

rng = np.random.default_rng(20231123)
systems = []
for n, m in [(1, 1), (2, 1), (3, 2), (5, 2), (8, 3)]:
    A = rng.standard_normal((n, n))
    # shift the spectrum into the open left half plane: a stable system with varied time scales
    A -= (np.max(np.linalg.eigvals(A).real) + rng.uniform(0.1, 1.0)) * np.eye(n)
    B = rng.standard_normal((n, m))
    C = np.zeros((1, n))
    D = np.zeros((1, m))
    cases = []
    for Delta in [0.01, 0.37, 1.9]:
        for method, alpha in [("zoh", None), ("bilinear", None), ("euler", None),
                              ("backward_diff", None), ("gbt", 0.3)]:
            kwargs = {"alpha": alpha} if alpha is not None else {}
            A_bar, B_bar, _, _, _ = cont2discrete((A, B, C, D), Delta, method=method, **kwargs)
            cases.append({
                "method": method,
                "alpha": alpha if alpha is not None else 0.0,
                "Delta": Delta,
                "A_bar": A_bar.tolist(), "B_bar": B_bar.tolist(),
            })
    systems.append({"A": A.tolist(), "B": B.tolist(), "cases": cases})

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "continuous",
                   "discretize_reference.json")
with open(out, "w") as f:
    json.dump({"generator": "tools/gen_discretize_reference.py",
               "scipy_version": scipy.__version__, "systems": systems}, f, indent=None)
    f.write("\n")
print(f"wrote {sum(len(s['cases']) for s in systems)} cases to {os.path.normpath(out)}")
