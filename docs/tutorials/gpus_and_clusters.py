"""Run on GPUs and on a cluster

Where the work runs is chosen in three independent places:

* the **device**: every subject has one, and every tensor of a computation follows it;
* the **executor**: independent tasks (grid blocks, the minima of a variant, the path pairs of the
  barcode, jump-and-retrain runs) run in this process or on a Dask cluster;
* **several processes on one landscape**: `lossatlas run --nproc N` (torchrun underneath) splits
  every loss, gradient and Hessian-vector product by batches across N processes.

This page was executed on a CPU when the docs were built: the GPU and cluster parts are shown as
commands, not run, and no GPU timing is claimed here. The cheap parts run for real: the device
choice, a cost plan, a Dask executor on a local in-process cluster, and thread settings.
"""

# %%
# ## Settings
import os
import subprocess
import sys
from pathlib import Path

import torch

import lossatlas

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RESOLUTION = 9 if SMOKE else 41       # a merge-tree grid: RESOLUTION**2 loss evaluations
EPOCHS = 2 if SMOKE else 20
RUN_TWO_PROCESSES = not SMOKE         # a real 2-process run costs two more Python start-ups: skipped on the docs page
print(f"smoke={SMOKE}; device {DEVICE}; torch sees {torch.cuda.device_count()} GPU(s)")

# %%
# ## The device flows from the subject
#
# `ModuleSubject(..., device=...)` and every problem builder take `"auto"` (a GPU when torch sees
# one), `"cpu"`, `"cuda"` or `"cuda:N"`. The model, its buffers and the whole data set are moved
# there once, at construction; training batches, grid blocks and path points are made on it, so
# nothing else in your code changes. Seeded random numbers (batch orders, directions) are drawn
# on the CPU and moved, so a seed gives the same run on every device.
subject = lossatlas.problems.mlp(depth=1, width=32, n_train=300, device=DEVICE)
print(subject.name, "on", subject.device)
with lossatlas.Store("devices.h5") as store:
    recipe = lossatlas.Recipe(optimizer="adam", lr=0.01, epochs=EPOCHS, batch_size=64)
    minimum = lossatlas.train_minima(store, subject, recipe, seeds=[0], progress=False)[0]
    result = lossatlas.analyze(store, subject, "hessian", trace_max_probes=10, density_runs=0, progress=False)
print("minimum recorded its runtime:", minimum.runtime)
print("the Hessian result too:      ", result.runtime)

# %%
# The store itself is device-independent (CPU arrays; the device is not part of a subject's
# identity), so a store filled on a GPU node is reported on a laptop, and a run interrupted on
# one machine resumes on another.
#
# Landscape measurements (grids, paths, Hessians) always run with TF32 off, since saddles and
# eigenvalues are differences of nearby losses. Training may trade precision for speed:
# `Recipe(precision="tf32")` or `"bf16"` (autocast), recorded with each minimum.
#
# In a benchmark config, `device = "cuda"` at the top level, or on the command line:
print("lossatlas run benchmarks/resnet_skip.toml --scale paper --device cuda")

# %%
# ## What will a run cost? `--plan`
#
# `lossatlas run CONFIG --plan` measures each step (a loss, a gradient, a Hessian-vector product,
# a training epoch) once on this machine and device, multiplies by the counts of every job, and
# prints each stage's estimated time and peak memory; nothing is written. Run it on the GPU node
# before a long job. `lossatlas.cli.main` is the `lossatlas` command, called in this process here
# to save starting another Python.
Path("tiny.toml").write_text('''
name = "tiny"
problem = "mlp"
seeds = [0, 1]
[params]
depth = 1
width = 64
n_train = 300
[minima]
optimizer = "adam"
lr = 0.01
epochs = 20
batch_size = 64
[methods.hessian]
[methods.merge-tree]
resolution = 21
''')
from lossatlas.cli import main as lossatlas_command

lossatlas_command(["run", "tiny.toml", "--plan", "--device", DEVICE])

# %%
# ## Dask: independent tasks on a cluster
#
# With `lossatlas run ... --executor dask` (`pip install 'lossatlas[dask]'`) the grid blocks,
# minima, path pairs and jump-and-retrain runs go to Dask workers; only this process opens the
# store and writes each part as it arrives, so an interrupted run resumes as a local one does.
# From Python, any executor is used inside `lossatlas.executor.use`. Here a Dask cluster inside
# this process (one worker thread) computes a grid; on a real cluster, pass its scheduler's
# address instead (`Client("tcp://10.0.0.5:8786")`).
from distributed import Client

from lossatlas.executor import DaskExecutor, use

with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
    with lossatlas.Store("devices.h5") as store, DaskExecutor(client=client) as dask, use(dask):
        tree = lossatlas.analyze(store, subject, "merge-tree", resolution=RESOLUTION, progress=False)
print(f"merge tree on a {RESOLUTION}x{RESOLUTION} grid computed by Dask: {int(tree.metrics['n_saddles'])} saddles, "
      f"{tree.wall_time_s:.2f} s")

# %%
# Each task computes what the local path computes (same blocks, seeds and chunks), so the numbers
# equal a local run's with the same torch thread count. On SLURM, start the workers with
# dask-jobqueue and point the run at the scheduler:
print('''# cluster.py -- keep it running (e.g. in tmux on the login node)
from dask_jobqueue import SLURMCluster
cluster = SLURMCluster(cores=4, processes=4, memory="16GB", walltime="04:00:00")
cluster.scale(jobs=8)                 # 8 jobs x 4 single-threaded workers
print(cluster.scheduler_address)      # e.g. tcp://10.0.0.5:8786
input("workers up; press enter to stop")

# then, anywhere that reaches the scheduler:
lossatlas run benchmarks/resnet_skip.toml --scale paper --executor dask --scheduler tcp://10.0.0.5:8786 --threads 1''')

# %%
# Several GPUs through Dask: one worker per GPU, each pinned with `CUDA_VISIBLE_DEVICES` (on a
# pinned worker `cuda:0` is its own GPU), or `LocalCUDACluster()` from dask-cuda:
print('''dask scheduler &                                                  # prints tcp://HOST:8786
for gpu in 0 1 2 3; do CUDA_VISIBLE_DEVICES=$gpu dask worker tcp://HOST:8786 --nthreads 1 & done
lossatlas run benchmarks/resnet_skip.toml --scale paper --device cuda --executor dask --scheduler tcp://HOST:8786''')

# %%
# ## Threads
#
# `--threads N` sets torch's intra-op threads of this process and of every task (on Dask the
# default is 1 per task: one task per worker thread fills the cores). On a shared machine keep
# the total below the free cores: processes that each use every core slow each other down by
# far more than they gain. torch's float32 sums depend on the thread count in their last bits, so
# compare runs made with the same count. From Python:
from lossatlas.executor import set_threads

set_threads(1)
print("torch threads:", torch.get_num_threads())

# %%
# ## Several processes on one landscape: torch.distributed
#
# `lossatlas run CONFIG --nproc N` starts N processes on this machine (gloo on the CPU, NCCL with
# one GPU per process). Every evaluation is split by batches across them and summed by an
# all-reduce, so the Lanczos, Hutchinson and sharpness solvers see identical vectors on every
# rank; independent tasks go to the ranks in turn; rank 0 alone opens the store and writes the
# report. Use it when one landscape is large (a Hessian over a big evaluation set); use Dask when
# the work is many independent tasks on workers that come and go.
command = [sys.executable, "-m", "lossatlas", "run", "tiny.toml", "--scale", "cpu", "--out", "two_processes",
           "--nproc", "2", "--threads", "1", "--figures", "none", "--device", "cpu"]
print(" ".join(["lossatlas", *command[3:]]))
if RUN_TWO_PROCESSES:
    done = subprocess.run(command, capture_output=True, text=True)  # progress bars go to stderr
    print("\n".join(done.stdout.splitlines()[:2]) if done.returncode == 0 else done.stderr[-3000:])
else:
    print("(not run on the docs page: run this file yourself to run it)")

# %%
# The same by hand with torchrun, or across nodes:
print("torchrun --nproc-per-node 4 -m lossatlas run benchmarks/resnet_skip.toml --scale paper --device cuda")

# %%
# A SLURM job over 2 nodes with 4 GPUs each (`sbatch job.sh`); every node runs one torchrun,
# which starts one process per GPU:
print('''#!/bin/bash
#SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=4 --cpus-per-task=16 --time=12:00:00
head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node 4 --rdzv-backend c10d \\
     --rdzv-endpoint "$head:29500" --rdzv-id "$SLURM_JOB_ID" \\
     -m lossatlas run benchmarks/resnet_skip.toml --scale paper --device cuda --out results''')

# %%
# The store must be on a file system rank 0 can write; the other ranks never open it. A rank
# that dies stops the run, and the next run resumes from the store. The results equal one
# process's up to the order of the sums. The test suite checks this on the CPU with gloo; the
# CUDA and NCCL paths are written and their tests marked `gpu`, but no GPU has run them yet.
