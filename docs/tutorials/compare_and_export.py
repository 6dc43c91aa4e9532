"""Compare methods and export

Which landscape measure tracks the test error? This page runs a small benchmark (MLPs of five
widths on the offline digits set, a few seeds each, the Hessian, sharpness and merge-tree
methods), reads the report's comparison statistics, recomputes one of them with
`lossatlas.stats`, and exports the store to pandas (Parquet) and xarray (netCDF) for analysis
elsewhere.

The docs build runs the config's `smoke` scale; run the file yourself for the `cpu` scale.
"""

# %%
# ## Settings
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

import lossatlas
from lossatlas import export, harness, stats
from lossatlas.report import write_report

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
SCALE = "smoke" if SMOKE else "cpu"
FIGURES = "none" if SMOKE else "full"   # the report's own figures (drawing them takes longer than the smoke run)
print(f"scale {SCALE}")

# %%
# ## The benchmark
#
# The built-in problem `mlp` (`depth` hidden ReLU layers of `width` units) over five widths. Five
# variants is the fewest for which the report gives an interval for Kendall's τ; with four, no
# order can reach p < 0.083. The `smoke` scale trains briefly on 200 images with coarse solvers.
# The studies shipped in `benchmarks/` run the same way, e.g. `lossatlas run
# benchmarks/barcode_lowering.toml --scale smoke` (every method on MLPs over depth; a few minutes).
CONFIG = '''
name = "compare_widths"
description = "MLPs of five widths on digits: which landscape measure tracks the test error?"
problem = "mlp"
seeds = [0, 1, 2]

[params]
depth = 1
dataset = "digits"

[variants]
width = [4, 8, 16, 32, 64]

[minima]
optimizer = "adam"
lr = 0.01
epochs = 30
batch_size = 64

[methods.hessian]
k = 2

[methods.sharpness]

[methods.merge-tree]
resolution = 21

[report]
factor = "width"
error = "test_error"

[[report.claims]]
metric = "sharpness.adaptive_sharpness_l2"
direction = "decreasing"
text = "wider networks sit in flatter minima"

[scales.smoke]
seeds = [0, 1]
params = { n_train = 200 }
minima = { epochs = 2 }

[scales.smoke.methods]
hessian = { k = 1, bottom_k = 0, trace_max_probes = 10, density_runs = 0, tol = 1e-2 }
sharpness = { steps = 2, restarts = 1, box_restarts = 2 }
merge-tree = { resolution = 5 }
'''
Path("compare_widths.toml").write_text(CONFIG)
plan = harness.load("compare_widths.toml", scale=SCALE)
with lossatlas.Store(f"compare_widths_{SCALE}.h5") as store:
    harness.execute(plan, store, progress=False)
    write_report(store, f"out/compare_widths_{SCALE}", figures=FIGURES)
report = Path(f"out/compare_widths_{SCALE}")

# %%
# ## The report's comparison
#
# `comparison.csv` holds one row per measure and target (the error, and the factor). Against the
# error the unit is the variant: its seeds share everything the variant sets, so they are
# averaged and the permutation test shuffles whole variants. `p_adjusted` is Holm's correction
# across the table, `p_min` the smallest p this design allows, `ci_low`/`ci_high` the 95%
# interval of τ.
comparison = pd.read_csv(report / "comparison.csv")
columns = ["measure", "against", "n", "kendall_tau", "p_value", "p_adjusted", "p_min", "ci_low", "ci_high"]
print(comparison[comparison["against"] == "test_error"][columns].round(3).to_string(index=False))

# %%
# Against the factor (`width`) the test runs over the minima, since under the null (width changes
# nothing) the seeds of every variant are exchangeable:
print(comparison[comparison["against"] == "width"][columns].round(3).to_string(index=False))

# %%
# ## The same statistic by hand
#
# `lossatlas.stats.associate` is the test the report uses; apply it to any table. `metrics.csv`
# has one row per minimum with the variant, the error and every metric.
rows = pd.read_csv(report / "metrics.csv")
measures = ["hessian.top_eigenvalue", "hessian.trace", "sharpness.adaptive_sharpness_l2",
            "sharpness.epsilon_sharpness", "merge-tree.average_persistence"]
found = {m: stats.associate(rows[m], rows["test_error"], clusters=rows["subject"]) for m in measures}
adjusted = stats.holm([f.p for f in found.values()])
for (name, f), p_adj in zip(found.items(), adjusted):
    print(f"{name:34s} tau {f.tau:+.2f}  p {f.p:.3f}  Holm {p_adj:.3f}  [{f.ci_low:+.2f}, {f.ci_high:+.2f}]  "
          f"{f.n_clusters} variants, {f.n_observations} minima")

# %%
# ## One measure against the test error
#
# Each point is a minimum, each colour a width; the crosses are the variant means the test
# ranks.
MEASURE = "hessian.top_eigenvalue"
figure, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
for width, group in rows.groupby("width"):
    shown = ax.scatter(group["test_error"], group[MEASURE], s=18, label=f"width {width}")
    ax.scatter(group["test_error"].mean(), group[MEASURE].mean(), marker="x", s=60, color=shown.get_facecolor())
f = found[MEASURE]
ax.set(xlabel="test error", ylabel=MEASURE, title=f"tau {f.tau:+.2f} over {f.n_clusters} variants (p {f.p:.3f})")
ax.legend(fontsize=7)

# %%
# ## Export to pandas
#
# `Store.to_dataframe()` is one row per metric of every stored result: `subject`, `analyzer`,
# the benchmark's method `label`, `minimum` (NA for a result of a whole subject), `metric`,
# `value` and its `kind` (a measure, or a diagnostic such as a count of products), sorted.
# `wide=True` gives one row per minimum and a column per `label.metric`; `metrics=` picks them.
# `export.minima_frame(store)` is one row per minimum with its own metrics (`metric.test_accuracy`,
# ...), so the two join on subject and minimum.
with lossatlas.Store(f"compare_widths_{SCALE}.h5", "r") as store:
    tidy = store.to_dataframe()
    wide = store.to_dataframe(wide=True, metrics=[MEASURE])
    minima = export.minima_frame(store)
print(tidy[tidy["kind"] == "measure"].head(8).to_string(index=False))

joined = wide.merge(minima, on=["subject", "minimum"])
joined["test_error"] = 1 - joined["metric.test_accuracy"]
print(joined[["subject", "minimum", MEASURE, "test_error"]].to_string(index=False))

# %%
# ## Export everything: Parquet and netCDF
#
# `export.export(store, folder)` (the command line: `lossatlas export STORE --out DIR`) writes
# `results.parquet`, `minima.parquet`, every 2-D loss grid as `grids/<subject>_<method>_<key>.nc`
# and `manifest.json` (each file's sha256), all or nothing. Each grid opens with xarray as
# `loss(x, y)`, with the result's parameters and metrics as attributes.
import json

import xarray as xr

with lossatlas.Store(f"compare_widths_{SCALE}.h5", "r") as store:
    written = export.export(store, "export")
print([p.name for p in written["tables"]], len(written["grids"]), "grids")
grid = xr.open_dataset(written["grids"][0], engine="h5netcdf")
print(grid)
print("saddles:", json.loads(grid.attrs["metrics"])["n_saddles"])

# %%
figure, ax = plt.subplots(figsize=(5, 4), layout="constrained")
grid["loss"].T.plot(ax=ax)  # x along the first direction, y along the second
ax.set_title(f"{grid.attrs['subject']}: {grid.attrs['method']} grid")
grid.close()
