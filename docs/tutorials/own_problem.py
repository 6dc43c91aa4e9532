"""A benchmark of your own problem from a config

A benchmark is a TOML file: which problem, which variants of it (their product is the set of
models), how many seeds, how to train the minima, which methods to run, and what the report
should test (a factor, an error column, the claims). `lossatlas run` validates the whole file
before any work, trains every minimum, runs every method at every minimum, stores everything in
one HDF5 file and writes a report: tables, statistics, figures.

This page defines a problem of its own (an MLP on digits whose width varies), writes the
config with a `smoke` scale for a quick run, runs it and opens the report. The docs build runs
the `smoke` scale; run the file yourself for the `cpu` scale (the config's own settings).
"""

# %%
# ## Settings
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt

import lossatlas
from lossatlas import harness
from lossatlas.report import write_report

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
SCALE = "smoke" if SMOKE else "cpu"        # the config's [scales.smoke] overrides, or its own settings
FIGURES = "none" if SMOKE else "full"      # the report's own figures: full = 300-dpi PNGs and PDFs, draft =
                                           # 100-dpi PNGs, none = tables and text only (drawing them all takes
                                           # longer than this smoke run; the figures below are drawn here)
print(f"scale {SCALE}, figures {FIGURES}")

# %%
# ## The problem: a factory that returns a Subject
#
# A config's `problem` is a built-in name (`mlp`, `cnn`, `resnet`, `pinn_convection`, `hf`,
# the analytic functions), a name an installed package registers under the entry-point group
# `lossatlas.problems`, or `"package.module:factory"`, importable where lossatlas runs. The
# factory takes the config's `[params]` and `[variants]` as keywords (checked against its
# signature and annotations before any work) and returns a subject. It must build the same
# starting point every time (seed torch), and it takes `device` so that `--device` reaches it.
#
# Here the module is written next to the config and the folder put on `sys.path`; in a project
# it would live in your package.
PROBLEM = '''
import torch
from sklearn.datasets import load_digits
from torch import nn

import lossatlas


def digits_mlp(width: int = 32, n_train: int = 1200, device: str = "auto"):
    """One hidden layer of `width` ReLU units on the first `n_train` digits; the rest held out."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)  # the same theta0 every build
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    return lossatlas.ModuleSubject(model, nn.CrossEntropyLoss(), (x[:n_train], y[:n_train]),
                                   test_data=(x[1200:], y[1200:]), name=f"digits_mlp_w{width}_n{n_train}",
                                   device=device)
'''
Path("my_problems.py").write_text(PROBLEM)
sys.path.insert(0, os.getcwd())  # for `lossatlas run` in a shell: PYTHONPATH=. lossatlas run ...

# %%
# ## The config
#
# `[variants]` gives the levels of `width`; every level is trained from each seed. `[minima]` is
# the training recipe (`lossatlas.Recipe` fields). Each `[methods.<label>]` runs an analyzer with
# its parameters. `[report]` names the factor under study and the column the measures are
# compared with (`test_error` = 1 - test accuracy), and `[[report.claims]]` are statements the
# report tests (a metric, the direction it should move in as the factor grows). `[scales.smoke]`
# overrides what a quick run changes, key by key.
CONFIG = '''
name = "width_study"
description = "Does a wider MLP on digits sit in a flatter minimum?"
problem = "my_problems:digits_mlp"
seeds = [0, 1, 2]

[variants]
width = [8, 32, 128]

[minima]
optimizer = "adam"
lr = 0.01
epochs = 30
batch_size = 64

[methods.hessian]
k = 2

[methods.sharpness]

[methods.interpolation]
n_points = 25

[methods.merge-tree]
resolution = 21

[report]
factor = "width"
error = "test_error"

[[report.claims]]
metric = "hessian.top_eigenvalue"
direction = "decreasing"
text = "wider networks have a smaller top Hessian eigenvalue"

[[report.claims]]
metric = "sharpness.adaptive_sharpness_l2"
direction = "decreasing"
text = "wider networks are flatter by adaptive sharpness"

[scales.smoke]
seeds = [0, 1]
variants = { width = [8, 32] }
params = { n_train = 300 }
minima = { epochs = 3 }

[scales.smoke.methods]
hessian = { trace_max_probes = 10, density_steps = 10, tol = 1e-2 }
sharpness = { steps = 2, restarts = 1, box_restarts = 2 }
interpolation = { n_points = 5, refine = 1 }
merge-tree = { resolution = 5 }
'''
Path("width_study.toml").write_text(CONFIG)

# %%
# ## Check it, then run it
#
# `harness.load` reads the config at a scale and checks it before any work: unknown keys,
# parameters out of range, a factory that cannot be imported or does not take a variant, claims
# naming unknown metrics. `lossatlas run` (and `--check`) also builds every subject and checks
# every method against it (data, dimensions, memory). `harness.execute` trains and analyses,
# resumably: rerun it after an interruption and it continues where it stopped. From a shell the
# same is
#
# ```
# PYTHONPATH=. lossatlas run width_study.toml --scale smoke --out out
# ```
#
# (`--check` validates only, `--plan` prints the jobs with their estimated time and memory).
plan = harness.load("width_study.toml", scale=SCALE)
print(f"{len(plan.subjects)} variants x {len(plan.seeds)} seeds, methods: {list(plan.methods)}")
with lossatlas.Store(f"width_study_{SCALE}.h5") as store:
    harness.execute(plan, store, progress=False)
    write_report(store, f"out/width_study_{SCALE}", figures=FIGURES)
print("report files:", sorted(p.name for p in Path(f"out/width_study_{SCALE}").iterdir()))

# %%
# ## The report
#
# `report.md` (and `index.html`) opens with the claims and their verdicts, then the per-variant
# table (mean ± std over seeds), the comparison of every measure with the error and the factor
# (Kendall's τ, permutation p-values adjusted for multiple testing), which measures agree, and
# the figures. Against the error the unit is the variant, so two or three variants can show a
# direction but no small p (`p_min` in `comparison.csv` is the smallest the design allows);
# against the factor the minima are the units, so the `cpu` scale's nine minima can reproduce a
# claim where the smoke run's four cannot.
report = Path(f"out/width_study_{SCALE}/report.md").read_text()
print("\n".join(report.splitlines()[:40]))

# %%
# ## Figures from the tables and the store
#
# `metrics.csv` has one row per minimum: the variant, the seed, the model's losses and errors
# and every metric of every method as `<label>.<metric>`. With `figures="full"` the report's
# `figures/` folder holds a summary of every measure against the factor, each view of each
# method for every variant, and the agreement heatmap; here two such plots are drawn directly.
import csv

with open(f"out/width_study_{SCALE}/metrics.csv") as handle:
    rows = list(csv.DictReader(handle))
widths = {r["subject"]: int(r["width"]) for r in rows}
figure, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
for ax, column in zip(axes, ["test_error", "hessian.top_eigenvalue", "sharpness.adaptive_sharpness_l2"]):
    ax.scatter([int(r["width"]) for r in rows], [float(r[column]) for r in rows])
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(set(widths.values())), [str(w) for w in sorted(set(widths.values()))])
    ax.set(xlabel="width", title=column)

# %%
# The stored results themselves can be drawn with their analyzer's views, one panel per variant
# (the report's `compare_*` figures do this for every view):
merge_tree = lossatlas.registry.get("merge-tree")()
with lossatlas.Store(f"width_study_{SCALE}.h5", "r") as store:
    subjects = sorted(widths, key=widths.get)  # the variants' subject names, narrowest first
    figure, axes = plt.subplots(1, len(subjects), figsize=(4.5 * len(subjects), 3.6), layout="constrained")
    for ax, name in zip(axes, subjects):
        first = next(r for r in store.results(name, "merge-tree") if r.params["minimum"] == 0)
        merge_tree.plot(first, ax=ax, view="contour")
        ax.set_title(name, fontsize=9)
