"""Device throughput and the `paper`-scale projection.

    python -m benchmarks.perf --only gpu      # on the machine that will run the paper scale

On the device ``lossatlas.devices.resolve("auto")`` picks (the GPU where there is one), with
synthetic CIFAR-shaped data (3x32x32 images, 10 classes; nothing is downloaded), it measures:

- ResNet-20 training throughput (images per second, all runs together) for K concurrent models
  trained as one batched computation (``lossatlas.batched.train_many``);
- landscape points per second over 50 000 images (grids, path evaluations), Hessian-vector
  products per second over 50 000 images;
- the convection PINN's training-step and point-evaluation times;

and projects the wall time of ``resnet_skip --scale paper`` and ``pinn_convection --scale paper``
stage by stage from the counts in the configs themselves (``harness.load``). On a CPU the sizes
are cut (fewer images, K <= 4) and rates scaled linearly to 50 000 images; the section says which
device it measured. Part of ``python -m benchmarks.perf``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import nn

from lossatlas import ModuleSubject, Recipe, devices, harness
from lossatlas.batched import train_many
from lossatlas.hessian import HessianOperator
from lossatlas.problems import pinn_convection, resnet20

from .common import Section, log, table

CONFIGS = Path(__file__).parents[1]
FULL = 50_000  # CIFAR-10 training images


def run(quick: bool = False) -> Section:
    device = devices.resolve("auto")
    on_gpu = device.type == "cuda"
    n_images = FULL if on_gpu else (256 if quick else 1024)
    ks = (1, 4, 8, 16) if on_gpu else (1, 4)
    steps = 20 if on_gpu else 2
    log(f"gpu section on {devices.name(device)}: {n_images} synthetic images, K in {ks}")
    rates = _resnet_rates(device, n_images, ks, steps)
    pinn = _pinn_rates(device)
    section = Section("gpu", "Device throughput and the paper-scale projection")
    section.text.append(
        f"Measured on **{devices.name(device)}**"
        + ("" if on_gpu else " — no GPU was available to this run, so these are CPU figures with cut sizes "
           f"({n_images} images, K up to {max(ks)}), scaled linearly to 50 000 images; the GPU figures are "
           "empty until the script runs where a GPU is")
        + ". float32 ResNet-20 on synthetic 3×32×32 data; PINN as configured (float64).")
    section.tables.append(table(
        ["stage", "measured"],
        [[f"ResNet-20 training, K = {k} models at once", f"{rates['train'][k]:.0f} images/s in all"] for k in ks]
        + [["ResNet-20 landscape points over 50 000 images", f"{rates['points_per_s']:.3g} points/s"],
           ["ResNet-20 Hessian-vector products over 50 000 images", f"{rates['hvp_per_s']:.3g} HVP/s"],
           ["PINN training step (n_f = 1000), one run", f"{pinn['step_s'] * 1e3:.2f} ms"],
           ["PINN training step, 16 runs at once", f"{pinn['step16_s'] * 1e3:.2f} ms"],
           ["PINN loss at one point (batched evaluation)", f"{pinn['point_s'] * 1e3:.2f} ms"]]))
    for name, stages in (("resnet_skip", _project_resnet(rates, ks)), ("pinn_convection", _project_pinn(pinn))):
        total = sum(seconds for _, _, seconds in stages)
        section.text.append(f"Projected `{name} --scale paper` on this device: **{total / 3600:.1f} h** "
                            f"({'measured rates' if on_gpu else 'CPU rates, for scale only'}; its stages are a "
                            "table below, after the measured rates).")
        section.tables.append(table(["stage", "count (from the config)", "hours"],
                                    [[stage, count, f"{seconds / 3600:.2f}"] for stage, count, seconds in stages]))
    return section


def _synthetic(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator))


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _resnet_rates(device, n_images: int, ks, steps: int) -> dict:
    torch.manual_seed(0)
    images = _synthetic(n_images, device)
    subject = ModuleSubject(resnet20(), nn.CrossEntropyLoss(), images, eval_batch_size=1000 if device.type == "cuda"
                            else 256, device=device)
    train = {}
    warm = ModuleSubject(resnet20(), nn.CrossEntropyLoss(), (images[0][:128], images[1][:128]), device=device)
    train_many(warm, warm.theta0[None], Recipe(lr=0.1, epochs=1, batch_size=128), [0])  # warm-up: setup costs
    for k in ks:
        small = ModuleSubject(resnet20(), nn.CrossEntropyLoss(), (images[0][: 128 * steps], images[1][: 128 * steps]),
                              device=device)
        recipe = Recipe(lr=0.1, epochs=1, batch_size=128, augment=True)
        starts = torch.stack([small.init_theta(seed)[0] for seed in range(k)])
        _sync(device)
        start = time.perf_counter()
        train_many(small, starts, recipe, list(range(k)))
        _sync(device)
        train[k] = k * 128 * steps / (time.perf_counter() - start)
        log(f"  train K={k}: {train[k]:.0f} images/s")
    points = torch.stack([subject.theta0, subject.theta0 * 1.01])
    subject.losses(points[:1])  # warm-up: allocation, cuDNN's algorithm choice
    start = time.perf_counter()
    subject.losses(points)
    _sync(device)
    points_per_s = len(points) / (time.perf_counter() - start) * n_images / FULL
    op = HessianOperator(subject, subject.theta0)
    vector = torch.randn(subject.dim, generator=torch.Generator().manual_seed(1)).double().numpy()
    op(vector)  # warm-up
    start = time.perf_counter()
    op(vector)
    _sync(device)
    hvp_per_s = 1 / (time.perf_counter() - start) * n_images / FULL
    log(f"  points/s over 50k: {points_per_s:.3g}; HVP/s over 50k: {hvp_per_s:.3g}")
    return {"train": train, "points_per_s": points_per_s, "hvp_per_s": hvp_per_s}


def _pinn_rates(device) -> dict:
    subject = pinn_convection(30.0, device=device)

    recipe = Recipe(lr=1e-3, epochs=5, batch_size=1000)  # five full-batch steps, after a warm-up

    def alone():
        subject.train(subject.theta0, recipe, 0, progress=False)

    def together():
        train_many(subject, subject.theta0.expand(16, -1), recipe, list(range(16)))

    timings = []
    for fn in (alone, alone, together, together):  # the first of each is the warm-up
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        timings.append((time.perf_counter() - start) / recipe.epochs)
    one, sixteen = timings[1], timings[3]
    start = time.perf_counter()
    subject.losses(subject.theta0.expand(64, -1))
    _sync(device)
    point = (time.perf_counter() - start) / 64
    return {"step_s": one, "step16_s": sixteen, "point_s": point}


def _hvps(params: dict) -> int:
    """Hessian-vector products of one Hessian result: ~100 for the top-k eigenpairs (Lanczos with
    restarts, as measured at cpu scale), the trace probes at most, the density's Lanczos steps."""
    return 100 + params.get("trace_max_probes", 200) + params.get("density_runs", 1) * params.get("density_steps", 80)


def _project_resnet(rates: dict, ks) -> list[tuple[str, str, float]]:
    plan = harness.load(CONFIGS / "resnet_skip.toml", "paper")
    methods = {label: _defaults(m) for label, m in plan.methods.items()}
    variants, seeds = len(plan.subjects), len(plan.seeds)
    minima = variants * seeds
    best_k = _fastest(rates, ks, seeds)
    epoch_images = FULL * plan.recipe.epochs
    stages = [("minima", f"{minima} × {plan.recipe.epochs} epochs, {best_k} at once",
               variants * seeds * epoch_images / rates["train"][best_k])]
    grid_points = sum(m["resolution"] ** 2 for label, m in methods.items() if label.startswith("merge-tree"))
    stages.append(("grids", f"{minima} × {grid_points} points", minima * grid_points / rates["points_per_s"]))
    hvps = _hvps(methods["hessian"]) + 40  # Hessian directions: top-2 eigenvectors for the second grid
    stages.append(("Hessian", f"{minima} × ~{hvps} HVPs", minima * hvps / rates["hvp_per_s"]))
    barcode = methods["loss-barcode"]
    pairs = math.comb(barcode["n_minima"], 2)
    curve_images = pairs * barcode["curve_epochs"] * FULL
    # every path point: a BatchNorm re-estimate (one pass over the data) and one evaluation
    path_points = pairs * (barcode["n_eval"] * 2 + 2)
    curves = curve_images / rates["train"][1] + 2 * path_points / rates["points_per_s"]
    stages.append(("barcode curves", f"{variants} × {pairs} pairs × {barcode['curve_epochs']} epochs, "
                                     f"{barcode['n_eval']} points", variants * curves))
    jr = methods["jump-retrain"]
    runs = len(jr["seeds"]) * len(jr["step_sizes"])
    k = _fastest(rates, ks, runs)
    train = runs * jr["epochs"] * FULL / rates["train"][k]
    evaluate = runs * (jr["epochs"] + 1) / rates["points_per_s"]
    stages.append(("jump and retrain", f"{minima} × {runs} runs × {jr['epochs']} epochs, {k} at once",
                   minima * (train + evaluate)))
    return stages


def _project_pinn(pinn: dict) -> list[tuple[str, str, float]]:
    plan = harness.load(CONFIGS / "pinn_convection.toml", "paper")
    methods = {label: _defaults(m) for label, m in plan.methods.items()}
    variants, seeds = len(plan.subjects), len(plan.seeds)
    minima = variants * seeds
    iterations = plan.recipe.epochs * plan.recipe.max_iter
    stages = [("minima (L-BFGS, one at a time)", f"{minima} × {iterations} iterations",
               minima * iterations * 1.25 * pinn["step_s"])]  # ~1.25 loss evaluations per L-BFGS iteration
    grid_points = sum(m["resolution"] ** 2 for label, m in methods.items() if label.startswith("merge-tree"))
    stages.append(("grids", f"{minima} × {grid_points} points", minima * grid_points * pinn["point_s"]))
    hvps = _hvps(methods["hessian"]) + 40
    stages.append(("Hessian", f"{minima} × ~{hvps} HVPs", minima * hvps * 3 * pinn["step_s"]))  # HVP ~ 3 steps
    barcode = methods["loss-barcode"]
    pairs = math.comb(min(barcode["n_minima"], seeds), 2)
    steps = barcode["curve_epochs"] * max(1, 1000 // (barcode.get("batch_size") or 1000))
    stages.append(("barcode curves", f"{variants} × {pairs} pairs × {steps} steps",
                   variants * pairs * (steps * pinn["step_s"] + barcode["n_eval"] * pinn["point_s"])))
    jr = methods["jump-retrain"]
    runs = len(jr["seeds"]) * len(jr["step_sizes"])
    stages.append(("jump and retrain", f"{minima} × {runs} runs × {jr['epochs']} epochs, 16 at once",
                   minima * math.ceil(runs / 16) * jr["epochs"] * (pinn["step16_s"] + 16 * pinn["point_s"])))
    return stages


def _fastest(rates: dict, ks, most: int) -> int:
    """The K (at most ``most``) with the highest measured training throughput: what a run would
    batch if lossatlas.batched chose by speed (on a CPU, convolutions run one at a time)."""
    return max((k for k in ks if k <= most), key=lambda k: rates["train"][k], default=1)


def _defaults(method) -> dict:
    from lossatlas import registry

    return {**registry.get(method.reference or method.analyzer).defaults(), **method.params}
