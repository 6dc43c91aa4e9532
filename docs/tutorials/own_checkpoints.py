"""Analyse your own checkpoints

You trained a model yourself and kept a few checkpoints (`torch.save(model.state_dict(), ...)`).
This tutorial puts them into a lossatlas store and runs several analyzers at each: the Hessian
spectrum (Yao et al. 2020), sharpness (Keskar et al. 2017; Kwon et al. 2021), the loss along
straight lines between checkpoints (Goodfellow et al. 2015; Frankle et al. 2020) and the merge
tree of a 2-D loss grid (Xie, Geniesse et al. 2024).

The model is a small MLP on scikit-learn's offline digits set, so nothing is downloaded. The
docs build runs this page at *smoke* settings (fewer epochs, coarse grids); run the file
yourself (`python own_checkpoints.py`) for the real settings.
"""

# %%
# ## Settings
#
# The docs build sets `LOSSATLAS_DOCS_BUILD=1`; each setting below shows its value for the page
# you read (first) and for a run of the script (after `else`).
import os

import matplotlib.pyplot as plt
import torch
from sklearn.datasets import load_digits
from torch import nn

import lossatlas

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
EPOCHS = 3 if SMOKE else 40           # epochs of your own training loop
RESOLUTION = 7 if SMOKE else 31       # merge-tree grid: RESOLUTION x RESOLUTION losses
N_POINTS = 7 if SMOKE else 25         # points along each interpolation line
HESSIAN = dict(k=2, trace_max_probes=20, density_steps=20) if SMOKE else dict(k=2)   # else: the defaults
SHARPNESS = dict(steps=3, restarts=1, box_restarts=2) if SMOKE else {}                 # else: the defaults
print(f"smoke={SMOKE}: epochs={EPOCHS}, grid {RESOLUTION}x{RESOLUTION}, {N_POINTS} points per line")

# %%
# ## Your model and your checkpoints
#
# This part is plain PyTorch, nothing from lossatlas: an MLP trained with Adam from two
# different seeds, each run saved as a `state_dict` the way you would save it.
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target, dtype=torch.long)
x_train, y_train, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


checkpoints = []
for seed in (0, 1):
    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(EPOCHS):
        for batch in torch.randperm(len(x_train)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[batch]), y_train[batch]).backward()
            optimizer.step()
    path = f"run_seed{seed}.pt"
    torch.save(model.state_dict(), path)
    checkpoints.append(path)
print("saved", checkpoints)

# %%
# ## A subject: the model's architecture, loss and data
#
# A `ModuleSubject` is one loss landscape: the loss of this architecture on this data (the mean
# over the whole set, in eval mode) as a function of the flat parameter vector θ. The model you
# pass is copied (yours is never changed); its weights are the subject's `theta0`, which the
# store records to recognise the subject, so build it from a fixed seed. `test_data` is optional;
# with it each checkpoint also gets its test loss and accuracy.
torch.manual_seed(0)
subject = lossatlas.ModuleSubject(make_model(), nn.CrossEntropyLoss(), (x_train, y_train), name="digits_mlp",
                                  test_data=(x_test, y_test), device="cpu")
print(subject.name, "has", subject.dim, "parameters")

# %%
# ## Checkpoints in, as minima
#
# `add_minimum` checks each `state_dict` against the model (names, shapes), evaluates it on
# every split and stores it as the next minimum (0, 1, ...). It takes the `state_dict` or the
# path of the file. The store is one HDF5 file; every result below is written to it, and a
# rerun of this script returns the stored results instead of recomputing them. For a model with
# BatchNorm, `add_minimum(..., update_bn=True)` stores running statistics re-estimated on the
# training data instead of the checkpoint's (it warns when the checkpoint's look stale).
store = lossatlas.Store("own_checkpoints.h5")
if subject.name not in store.subjects():  # a rerun finds them stored
    for path in checkpoints:
        lossatlas.add_minimum(store, subject, torch.load(path, weights_only=True))
for minimum in store.minima(subject.name):
    print(f"minimum {minimum.index}: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(minimum.metrics.items())))

# %%
# ## Run analyzers at a checkpoint
#
# `lossatlas.analyze(store, subject, method, **params)` runs one analyzer; `minimum=` picks the
# checkpoint. Each call returns a `Result` with its scalar `metrics` and its `arrays`. The
# interpolation follows two lines: from checkpoint 0 to checkpoint 1 (`partner=1`: the barrier
# between them) and from an initialisation to checkpoint 0; for a checkpoint lossatlas did not
# train, where its training started is unknown, so that line starts at a fresh seeded
# initialisation (`init_seed`).
hessian = lossatlas.analyze(store, subject, "hessian", minimum=0, progress=False, **HESSIAN)
sharpness = lossatlas.analyze(store, subject, "sharpness", minimum=0, progress=False, **SHARPNESS)
line = lossatlas.analyze(store, subject, "interpolation", minimum=0, partner=1, n_points=N_POINTS, progress=False)
tree = lossatlas.analyze(store, subject, "merge-tree", minimum=0, resolution=RESOLUTION, progress=False)
for result in (hessian, sharpness, line, tree):
    shown = {k: round(v, 4) for k, v in result.metrics.items()}
    print(f"{result.method}: {shown}")

# %%
# ## Figures
#
# Every analyzer declares its *views*; `Analyzer.plot(result, ax=..., view=...)` draws one on
# the axes you give it. The analyzer class is found by name in the registry; the plot needs an
# instance, and one with default parameters will do (the result carries its own).
registry = lossatlas.registry
figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
registry.get("hessian")().plot(hessian, ax=axes[0])
registry.get("interpolation")().plot(line, ax=axes[1])
registry.get("sharpness")().plot(sharpness, ax=axes[2])

# %%
# Without `ax`, `plot` makes a new figure with every view of the analyzer side by side: for the
# merge tree the grid's contour, its 3-D surface, the merge tree and the persistence diagram.
registry.get("merge-tree")().plot(tree)

# %%
# ## Compare the two checkpoints
#
# The same analyzer at the other checkpoint is one more call. Different measures of sharpness
# need not rank minima alike; measuring how far they agree, and which one tracks the test error,
# over many models is what the benchmarks do (see "Compare methods and export"). Methods that
# join several checkpoints work on added minima too: `lossatlas.analyze(store, subject,
# "loss-barcode", n_minima=2)` optimizes a path between the two and reports its barcode
# (Barannikov et al. 2025); it trains a curve, so it is left out of this page.
for index in (0, 1):
    h = lossatlas.analyze(store, subject, "hessian", minimum=index, progress=False, **HESSIAN)
    s = lossatlas.analyze(store, subject, "sharpness", minimum=index, progress=False, **SHARPNESS)
    test_error = 1 - store.minima(subject.name)[index].metrics["test_accuracy"]
    print(f"checkpoint {index}: top eigenvalue {h.metrics['top_eigenvalue']:.3f}, "
          f"adaptive l2 sharpness {s.metrics['adaptive_sharpness_l2']:.4f}, test error {test_error:.3f}")

# %%
# ## Read the results back later
#
# Results live in the store, not in the Python session. In a new session, open the store and
# list them (`Store.results`), or read one by its key (`Store.read_result`). The key is a hash of
# the parameters and of the checkpoint it was computed at.
store.close()
with lossatlas.Store("own_checkpoints.h5", "r") as store:
    for result in store.results("digits_mlp"):
        print(f"{result.method:14s} key {result.key[:12]}  wall {result.wall_time_s:6.2f} s  params "
              f"minimum={result.params.get('minimum')}")
    again = store.read_result("digits_mlp", "hessian", hessian.key)
    print("top eigenvalue read back:", again.metrics["top_eigenvalue"])
