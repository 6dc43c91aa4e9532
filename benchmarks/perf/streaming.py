"""Streamed evaluation: peak memory of the Hessian, a loss grid and sharpness on a dataset generated
lazily from its indices, streamed (one batch in memory) against materialized in memory.

Each side runs in its own process, so its peak resident memory (VmHWM) is its own; the
growth is measured from just before the subject is built. The values of both sides must agree.

    python -m benchmarks.perf.streaming            # prints the table
    python -m benchmarks.perf.streaming --child stream --n 20000 --d 1024   # one side, as JSON
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIZES = {"full": (60000, 1024, 1000), "quick": (20000, 512, 500)}  # examples, features, eval batch


def generated_dataset(n: int, d: int, classes: int = 10):
    """``n`` examples of ``d`` float32 features made from their indices when read, never held
    (x[i, j] = sin(i a_j + b_j) with fixed a, b); the label is the largest of the first ``classes``
    features, a task a small MLP can learn. ``__getitems__`` makes a batch at once, as a real
    generated or memory-mapped dataset would."""
    import torch
    from torch.utils.data import Dataset

    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(d, generator=generator) * 100, torch.rand(d, generator=generator) * 6.3

    class Generated(Dataset):
        def __len__(self):
            return n

        def __getitems__(self, indices):
            x = torch.sin(torch.as_tensor(indices, dtype=torch.float64)[:, None] * a + b).float()
            return list(zip(x, x[:, :classes].argmax(dim=1)))

        def __getitem__(self, i):
            return self.__getitems__([i])[0]

    return Generated()


def _rss_mb(field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or at its peak (VmHWM), in MB. Not ru_maxrss: across exec Linux
    carries the parent's peak into it, so a child of a large process would report the parent's."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def child(stream: bool, n: int, d: int, batch: int) -> dict:
    """Build the subject and run the three analyzers; the peak memory growth and the values."""
    import torch
    from torch import nn

    from lossatlas import ModuleSubject

    def analyses(n):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(d, 16), nn.ReLU(), nn.Linear(16, 10))
        subject = ModuleSubject(model, nn.CrossEntropyLoss(), generated_dataset(n, d), eval_batch_size=batch,
                                stream=stream, name="generated", device="cpu")
        return _analyses(subject)

    analyses(2 * batch)  # every module the analyzers import, loaded before the baseline
    before = _rss_mb()
    start = time.perf_counter()
    hessian, grid, sharp = analyses(n)
    peak = _rss_mb("VmHWM")
    return {"data": hessian.runtime["data"], "peak_growth_mb": peak - before, "dataset_mb": n * d * 4 / 2**20,
            "batch_mb": batch * d * 4 / 2**20, "seconds": time.perf_counter() - start,
            "top_eigenvalue": hessian.metrics["top_eigenvalue"], "grid": grid.metrics, "sharpness": sharp.metrics}


def _analyses(subject):
    from lossatlas import Store, analyze

    with Store.memory() as store:
        hessian = analyze(store, subject, "hessian", at="theta0", k=1, bottom_k=0, dense_limit=0, density_runs=0,
                          trace_min_probes=2, trace_max_probes=4, tol=1e-2, progress=False)
        grid = analyze(store, subject, "merge-tree", at="theta0", resolution=5, progress=False)
        sharp = analyze(store, subject, "sharpness", at="theta0", subspace=10, steps=2, restarts=1, box_restarts=1,
                        progress=False)
    return hessian, grid, sharp


def measure(stream: bool, n: int, d: int, batch: int) -> dict:
    """``child`` in a fresh process (its own peak memory)."""
    side = "stream" if stream else "memory"
    out = subprocess.run([sys.executable, "-m", "benchmarks.perf.streaming", "--child", side,
                          "--n", str(n), "--d", str(d), "--batch", str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False):
    from . import common

    start = time.perf_counter()
    n, d, batch = SIZES["quick" if quick else "full"]
    sides = {"stream": measure(True, n, d, batch), "memory": measure(False, n, d, batch)}
    rows = ["| data | dataset (MB) | one batch (MB) | peak growth (MB) | time (s) | top eigenvalue |",
            "|---|---|---|---|---|---|"]
    for name, side in sides.items():
        rows.append(f"| {name} | {side['dataset_mb']:.0f} | {side['batch_mb']:.1f} | {side['peak_growth_mb']:.0f} | "
                    f"{side['seconds']:.1f} | {side['top_eigenvalue']:.6g} |")
    section = common.Section("streaming", "Streamed evaluation: peak memory", tables=[rows])
    section.text.append(f"The Hessian (top eigenvalue, 2-4 trace probes), a 5x5 merge-tree grid and sharpness on a "
                        f"{n}-example dataset generated from its indices ({d} float32 features), each side in its "
                        "own process; peak growth = peak resident memory minus the memory before the subject is "
                        "built. The values of the two sides agree to float32 rounding.")
    section.seconds = time.perf_counter() - start
    return section


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.streaming")
    parser.add_argument("--child", choices=["stream", "memory"])
    parser.add_argument("--n", type=int, default=SIZES["full"][0])
    parser.add_argument("--d", type=int, default=SIZES["full"][1])
    parser.add_argument("--batch", type=int, default=SIZES["full"][2])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child == "stream", args.n, args.d, args.batch)))
        return 0
    print(run(args.quick).markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
