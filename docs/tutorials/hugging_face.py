"""A Hugging Face model

A tiny GPT-2 built from a `transformers` config (random weights: nothing is downloaded), trained
as a character-level language model on a short text, then analysed: the Hessian's top
eigenvalues, the per-layer Hessian (one block per transformer layer), the loss along the line
between two trained minima and a 2-D loss grid with its merge tree.

`lossatlas.hf.subject(model, data, task=...)` wraps a transformers model in a `ModuleSubject`:
the landscape of a causal language model is the mean next-token cross-entropy over every
token of the data (batches are weighed by their tokens, not their sequences), and a sequence
classifier's (`task="sequence-classification"`) the mean cross-entropy over its sequences.
Attention runs through torch's own kernel so that Hessian-vector products work.

The docs build runs this page at *smoke* settings; run the file yourself for the real ones.
"""

# %%
# ## Settings
import os

import matplotlib.pyplot as plt
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import lossatlas
from lossatlas import hf

SMOKE = os.environ.get("LOSSATLAS_DOCS_BUILD") == "1"
N_EMBD = 16 if SMOKE else 64          # GPT-2 width
N_LAYER = 1 if SMOKE else 2           # transformer blocks
SEQ_LEN = 16 if SMOKE else 32         # tokens per sequence
EPOCHS = 3 if SMOKE else 40
RESOLUTION = 5 if SMOKE else 21       # merge-tree grid
# coarser solvers on the docs page; {}: the analyzers' defaults
HESSIAN = dict(trace_max_probes=10, density_steps=10, tol=1e-2) if SMOKE else {}
LAYERS = dict(trace_probes=4, tol=0.1) if SMOKE else {}
LINE = dict(n_points=5, refine=1) if SMOKE else {}
print(f"smoke={SMOKE}: n_embd={N_EMBD}, n_layer={N_LAYER}, seq_len={SEQ_LEN}, epochs={EPOCHS}")

# %%
# ## Data: a short text, tokenized by characters
#
# Any tokenizer works: the subject only sees `input_ids` (and an `attention_mask` if you give
# one; padded positions are then left out of the loss). Here the "tokenizer" is the sorted set of
# characters of the text, so nothing is downloaded. For a causal language model the labels are
# the input ids themselves (the loss shifts them by one). The text repeats one paragraph, so the
# held-out windows hold no new sentences: their loss tells how well the model learned this
# paragraph, nothing about language.
text = ("the landscape of a loss is the loss as a function of the weights. "
        "a minimum is flat when the loss rises slowly around it, and sharp when it rises fast. "
        "two minima are connected when a path between them keeps the loss low. ") * 8
vocabulary = sorted(set(text))
ids = torch.tensor([vocabulary.index(c) for c in text])
windows = ids[: len(ids) // SEQ_LEN * SEQ_LEN].reshape(-1, SEQ_LEN)
train_ids, test_ids = windows[: len(windows) * 3 // 4], windows[len(windows) * 3 // 4:]  # the last quarter held out
print(f"{len(vocabulary)} characters, {len(train_ids)} training and {len(test_ids)} held-out sequences of {SEQ_LEN}")

# %%
# ## The model, from a config
#
# `GPT2LMHeadModel(config)` builds random weights; `from_pretrained` would work the same way
# (with a downloaded checkpoint as the subject's `theta0`). Seed torch before building it, so
# that `theta0` is the same every run and the store recognises the subject. GPT-2's special
# tokens (id 50256) lie outside this 24-character vocabulary, so the config drops them.
torch.manual_seed(0)
config = GPT2Config(vocab_size=len(vocabulary), n_positions=SEQ_LEN, n_embd=N_EMBD, n_layer=N_LAYER, n_head=2,
                    bos_token_id=None, eos_token_id=None)
model = GPT2LMHeadModel(config)
subject = hf.subject(model, {"input_ids": train_ids}, task="causal-lm", test_data={"input_ids": test_ids},
                     name=f"gpt2_chars_e{N_EMBD}", device="cpu")
print(subject.name, "has", subject.dim, "parameters; loss at theta0", round(subject.loss(subject.theta0), 3),
      "(log of the vocabulary:", round(float(torch.log(torch.tensor(len(vocabulary)))), 3), ")")

# %%
# ## Two minima
#
# `train_minima` trains one minimum per seed from `subject.init_theta(seed)` (GPT-2's own
# initialisation scheme, `hf.init_weights`) with a `Recipe`, and stores them. Checkpoints you
# trained yourself (for instance with the `transformers` Trainer) go in with
# `lossatlas.add_minimum(store, subject, model.state_dict())` instead; see "Analyse your own
# checkpoints".
store = lossatlas.Store("hugging_face.h5")
recipe = lossatlas.Recipe(optimizer="adam", lr=0.01, epochs=EPOCHS, batch_size=8, schedule="cosine")
minima = lossatlas.train_minima(store, subject, recipe, seeds=[0, 1], progress=False)
for m in minima:
    print(f"minimum {m.index}: train loss {m.metrics['eval_loss']:.3f}, test loss {m.metrics['test_loss']:.3f}")

# %%
# ## Analyzers
#
# The same calls as for any model. `hessian-layers` splits the Hessian into blocks by parameter
# name: `depth=3` groups the names that share their first three dotted parts, so each
# `transformer.h.<i>` layer is one block, and the two embeddings and the final LayerNorm's
# weight and bias are blocks of their own.
hessian = lossatlas.analyze(store, subject, "hessian", minimum=0, progress=False, **HESSIAN)
layers = lossatlas.analyze(store, subject, "hessian-layers", minimum=0, depth=3, progress=False, **LAYERS)
line = lossatlas.analyze(store, subject, "interpolation", minimum=0, partner=1, progress=False, **LINE)
tree = lossatlas.analyze(store, subject, "merge-tree", minimum=0, resolution=RESOLUTION, progress=False)
print(f"top Hessian eigenvalue {hessian.metrics['top_eigenvalue']:.3f}, trace {hessian.metrics['trace']:.2f}")
print("barrier between the two minima", round(line.metrics["barrier"], 4))
print("merge tree:", int(tree.metrics["n_saddles"]), "saddles on a", RESOLUTION, "x", RESOLUTION, "grid")
print({k: round(v, 3) for k, v in layers.metrics.items()})

# %%
# ## Figures
figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
lossatlas.registry.get("hessian-layers")().plot(layers, ax=axes[0])
lossatlas.registry.get("interpolation")().plot(line, ax=axes[1])
lossatlas.registry.get("merge-tree")().plot(tree, ax=axes[2], view="contour")
figure.suptitle(subject.name)
store.close()

# %%
# ## A benchmark of transformers
#
# The built-in problem `hf` builds such models from a benchmark config (any model type
# transformers knows, on a generated grammar or a plain-text corpus): `benchmarks/hf_lm.toml`
# compares GPT-2 widths with every method (`lossatlas run benchmarks/hf_lm.toml --scale smoke`).
# See "A benchmark of your own problem" for configs.
