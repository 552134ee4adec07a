"""Binding overhead: microseconds per call of tiny ops, where the library's work is negligible and what is measured
is the crossing (argument parsing, DLPack import of each array, the op's checks, the output's export and its
conversion to the caller's framework). Target: under 20 us per call. Prints one line per case; the numbers are the
median of `--repeat` timings of `--number` calls each, on a machine that may be loaded (report `uptime` with them).

    python python/bench/bench_overhead.py [--number 20000] [--repeat 7]
"""

import argparse
import statistics
import timeit

import numpy as np

import ssm


def cases():
    x = np.ones((1, 8), np.float32)
    w = np.ones(8, np.float32)
    r = np.random.default_rng(0)
    scan = dict(u=r.standard_normal((1, 2, 4)).astype(np.float32), delta=np.full((1, 2, 4), 0.1, np.float32),
                A=-np.ones((2, 2), np.float32), B=r.standard_normal((1, 2, 4)).astype(np.float32),
                C=r.standard_normal((1, 2, 4)).astype(np.float32))
    yield "view_info(numpy) [import only]", lambda: ssm.view_info(x)
    yield "_ext.rms_norm(numpy) [capsule out]", lambda: ssm._ext.rms_norm(x, w)
    yield "rms_norm(numpy, 1x8)", lambda: ssm.rms_norm(x, w)
    yield "selective_scan(numpy, b1 d2 n2 l4)", lambda: ssm.selective_scan(**scan)
    yield "selective_scan(numpy, b1 d2 n2 l4, num_threads=1)", lambda: ssm.selective_scan(**scan, num_threads=1)
    layer = ssm.layers.LinearAttention(8, heads=2)
    xl = np.ones((1, 1, 8), np.float32)
    yield "layers.LinearAttention(8, heads=2).forward(numpy 1x1x8)", lambda: layer.forward(xl)
    try:
        import torch
    except ImportError:
        return
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    st = {k: torch.from_numpy(v) for k, v in scan.items()}
    yield "rms_norm(torch, 1x8)", lambda: ssm.rms_norm(xt, wt)
    yield "selective_scan(torch, b1 d2 n2 l4)", lambda: ssm.selective_scan(**st)
    yield "torch: x * w [torch's own dispatch, for scale]", lambda: xt * wt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    print(f"ssm {ssm.__version__}, simd {ssm.backends()['simd']}; median of {args.repeat} x {args.number} calls")
    for name, fn in cases():
        fn()
        times = timeit.repeat(fn, number=args.number, repeat=args.repeat)
        print(f"{statistics.median(times) / args.number * 1e6:8.2f} us/call  {name}")


if __name__ == "__main__":
    main()
