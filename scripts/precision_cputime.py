"""CPU seconds (time.process_time, one thread) per call, fp32 and bf16-mixed interleaved call by call: the
ratios on a host too busy for wall-clock (issue 20). Run from the repository root: python scripts/precision_cputime.py"""

import ired_mining  # noqa: F401  first: it sets a short OpenMP spin before torch loads (see its __init__)

# isort: split
import json
import statistics
import sys
import time

import torch

sys.path.insert(0, "scripts")
import bench  # noqa: E402  (beside this script)

torch.set_num_threads(1)
out = {}


def measure(fns, rounds):
    t = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            s = time.process_time()
            f()
            t[k].append(time.process_time() - s)
    return {k: statistics.median(v) for k, v in t.items()}


for strategy, batch, rounds in [("adversarial", 2048, 5), ("adversarial", 256, 15), ("none", 2048, 5)]:
    base = bench.compose_cfg("cpu", strategy, [])
    tr = {p: bench.Trainer(bench.with_precision(base, p), batch) for p in ("32", "bf16-mixed")}
    for t in tr.values():
        t.warm()
    med = measure({p: t.step for p, t in tr.items()}, rounds)
    out[f"train {strategy} {batch}"] = med
    print(
        strategy,
        batch,
        {p: f"{1e3 * v:.0f} ms" for p, v in med.items()},
        f"ratio {med['32'] / med['bf16-mixed']:.2f}",
        flush=True,
    )
base = bench.compose_cfg("cpu", "adversarial", [])
models = {p: bench.Trainer(bench.with_precision(base, p), 256) for p in ("32", "bf16-mixed")}
x = bench.spd_batch(20, 1024, 0.5, torch.Generator().manual_seed(2)).x
fns = {p: (lambda t=t: t.diffusion.sample(t.model, x, 5, torch.Generator().manual_seed(3))) for p, t in models.items()}
for f in fns.values():
    f()
med = measure(fns, 4)
out["sampler 1024"] = med
print(
    "sampler 1024",
    {p: f"{1e3 * v:.0f} ms" for p, v in med.items()},
    f"ratio {med['32'] / med['bf16-mixed']:.2f}",
    flush=True,
)
a = torch.randn(2048, 2048)
b = torch.randn(2048, 2048)
a16, b16 = a.bfloat16(), b.bfloat16()
med = measure({"32": lambda: a @ b, "bf16-mixed": (lambda: a16 @ b16)}, 5)
out["matmul 2048"] = med
print(
    "matmul 2048",
    {p: f"{2 * 2048**3 / v / 1e9:.0f} GFLOP/s" for p, v in med.items()},
    f"ratio {med['32'] / med['bf16-mixed']:.2f}",
    flush=True,
)
json.dump(out, open("precision_cputime.json", "w"), indent=1)
