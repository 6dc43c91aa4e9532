"""A Hugging Face transformers model, built from a config, on text: the problem "hf".

The text is generated (a seeded sparse Markov grammar over a few symbols: each context of
``order`` symbols has ``branching`` possible successors with Dirichlet(1) probabilities, so a
tiny model can learn it and its loss has a floor well below log(symbols)) or read from a
plain-text corpus for larger runs, tokenized by characters or whitespace-separated words (no
tokenizer is downloaded). Tasks: "causal-lm" (the next-token loss over every token) and
"sequence-classification" (which of ``num_labels`` grammars generated a sequence; generated
text only; the vocabulary gets one extra id, never in the text, as the padding token).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import hf
from ..errors import ConfigError
from ..subjects import ModuleSubject

# sizes a model gets unless the config names them (Hugging Face's defaults are BERT-base / GPT-2 small)
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
TOKENS = ("char", "word")


def hf_text(model_type: str = "gpt2", task: str = "causal-lm", corpus: str | None = None, tokens: str = "char",
            symbols: int = 16, order: int = 2, branching: int = 3, num_labels: int = 2, n_train: int = 256,
            n_test: int = 128, seq_len: int = 32, text_seed: int = 0, attn_implementation: str = "sdpa",
            eval_batch_size: int = 256, name: str | None = None, device: str = "auto", **config) -> ModuleSubject:
    """A ``model_type`` transformer (any transformers model type: "gpt2", "bert", "llama"...) for
    ``task`` on ``n_train`` training and ``n_test`` held-out sequences of ``seq_len`` tokens.

    ``config``: the model's config values (e.g. ``n_embd = 32, n_layer = 2`` or ``hidden_size``,
    ``num_hidden_layers``); unnamed sizes are tiny (hidden size 32, 2 layers, 2 heads, a
    4x feed-forward). ``corpus``: a plain-text file (relative to where lossatlas runs) read in
    consecutive windows, the first ``n_train`` to train, the next ``n_test`` held out; else the
    generated grammar (``symbols``, ``order``, ``branching``, ``text_seed``).
    """
    if task not in hf.TASKS:
        raise ConfigError(f"Problem 'hf': unknown task {task!r}; valid: {list(hf.TASKS)}.")
    if tokens not in TOKENS:
        raise ConfigError(f"Problem 'hf': tokens must be one of {list(TOKENS)}; got {tokens!r}.")
    _at_least(n_train=(n_train, 1), n_test=(n_test, 1), seq_len=(seq_len, 2), symbols=(symbols, 2),
              order=(order, 1), branching=(branching, 1), num_labels=(num_labels, 2))
    if branching > symbols:
        raise ConfigError(f"Problem 'hf': branching ({branching}) cannot exceed symbols ({symbols}).")
    if corpus is not None:
        if task != "causal-lm":
            raise ConfigError("Problem 'hf': a corpus has no labels to classify; use task = \"causal-lm\" with a "
                              "corpus, or leave corpus unset for the generated grammar.")
        train, test, vocab = corpus_windows(corpus, tokens, seq_len, n_train, n_test)
    elif task == "causal-lm":
        grammar = markov_grammar(symbols, order, branching, seed=text_seed)
        train = sample_text(grammar, n_train, seq_len, seed=(text_seed, 1))
        test = sample_text(grammar, n_test, seq_len, seed=(text_seed, 2))
        vocab = symbols
    else:
        grammars = [markov_grammar(symbols, order, branching, seed=(text_seed, label)) for label in range(num_labels)]
        train = labelled_text(grammars, n_train, seq_len, seed=(text_seed, 1))
        test = labelled_text(grammars, n_test, seq_len, seed=(text_seed, 2))
        vocab = symbols
    model_config = model_settings(model_type, config, vocab, seq_len, task, num_labels)
    model = build_model(model_type, task, model_config, attn_implementation)
    causal = task == "causal-lm"
    # a causal LM's labels are its input ids (the loss shifts them); a classifier's, the grammar's index
    train, test = (({"input_ids": part}, part) if causal else ({"input_ids": part[0]}, part[1])
                   for part in (train, test))
    described = {"problem": "hf", "model_type": model_type, "task": task, "corpus": corpus,
                 "tokens": tokens if corpus is not None else None, "n_train": n_train, "n_test": n_test,
                 "seq_len": seq_len, **({} if corpus is not None else {
                     "symbols": symbols, "order": order, "branching": branching, "text_seed": text_seed}),
                 **({} if causal else {"num_labels": num_labels}), "model_config": model_config}
    sizes = "_".join(f"{key}{value}" for key, value in sorted(config.items()))
    label = name or f"{model_type}-{'lm' if causal else 'cls'}{'_' + sizes if sizes else ''}"
    return hf.subject(model, train, task, test_data=test, name=label, eval_batch_size=eval_batch_size,
                      config=described, device=device)


# -- text ------------------------------------------------------------------------------------------
class Grammar(NamedTuple):
    """A sparse Markov chain of ``order`` over ``symbols``: row c of ``successors`` and
    ``probabilities`` (contexts x branching) is what may follow context c, the last ``order``
    symbols read as a number in base ``symbols``."""

    symbols: int
    order: int
    successors: np.ndarray
    probabilities: np.ndarray


def markov_grammar(symbols: int, order: int, branching: int, seed) -> Grammar:
    """A seeded grammar: every context (``symbols ** order`` of them) gets ``branching`` distinct
    successors with Dirichlet(1) probabilities."""
    rng = np.random.default_rng(seed)
    contexts = symbols ** order
    successors = np.stack([rng.choice(symbols, branching, replace=False) for _ in range(contexts)])
    return Grammar(symbols, order, successors, rng.dirichlet(np.ones(branching), size=contexts))


def sample_text(grammar: Grammar, n: int, length: int, seed) -> torch.Tensor:
    """``n`` sequences of ``length`` symbols from the grammar (the first ``order`` uniform), as a
    (n, length) tensor of token ids."""
    rng = np.random.default_rng(seed)
    text = np.zeros((n, length), dtype=np.int64)
    start = min(grammar.order, length)
    text[:, :start] = rng.integers(0, grammar.symbols, (n, start))
    cumulative = np.cumsum(grammar.probabilities, axis=1)
    for t in range(start, length):
        context = np.zeros(n, dtype=np.int64)
        for column in text[:, t - grammar.order:t].T:
            context = context * grammar.symbols + column
        pick = (cumulative[context] < rng.random(n)[:, None]).sum(axis=1).clip(max=cumulative.shape[1] - 1)
        text[:, t] = grammar.successors[context, pick]
    return torch.from_numpy(text)


def labelled_text(grammars: list[Grammar], n: int, length: int, seed: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences, sequence i from grammar ``i % len(grammars)`` (its label): balanced classes."""
    labels = torch.arange(n) % len(grammars)
    text = torch.zeros(n, length, dtype=torch.int64)
    for label, grammar in enumerate(grammars):
        rows = labels == label
        text[rows] = sample_text(grammar, int(rows.sum()), length, seed=(*seed, label))
    return text, labels


def corpus_windows(path: str, tokens: str, seq_len: int, n_train: int, n_test: int):
    """The corpus as consecutive windows of ``seq_len`` token ids: (train, test, vocabulary size);
    the vocabulary is the sorted distinct characters or words."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"Problem 'hf': corpus {path!r} is not a file (looked in {file.resolve().parent}); give the "
                          "path of a plain-text file, or leave corpus unset for the generated grammar.")
    text = file.read_text(encoding="utf-8", errors="replace")
    pieces = list(text) if tokens == "char" else text.split()
    vocabulary = {piece: i for i, piece in enumerate(sorted(set(pieces)))}
    windows = len(pieces) // seq_len
    if windows < n_train + n_test:
        raise ConfigError(f"Problem 'hf': corpus {path!r} holds {windows} windows of {seq_len} {tokens} tokens; "
                          f"n_train + n_test = {n_train + n_test}. Lower n_train, n_test or seq_len, or give a "
                          "longer text.")
    ids = torch.tensor([vocabulary[piece] for piece in pieces[: windows * seq_len]]).reshape(windows, seq_len)
    return ids[:n_train], ids[n_train: n_train + n_test], len(vocabulary)


# -- the model -------------------------------------------------------------------------------------
def model_settings(model_type: str, config: dict, vocab_size: int, seq_len: int, task: str, num_labels: int) -> dict:
    """The config values of the model: tiny defaults where the model type has those settings,
    the user's values over them (checked to be settings of that model type), and the vocabulary
    and positions of the text. A classifier gets one more token id, never in the text, as its
    padding token (GPT-2 and others find a sequence's last token by it); a language model none
    (its padding check on the inputs cannot run under vmap, as batched training needs)."""
    base = _default_config(model_type)
    canonical = lambda key: base.attribute_map.get(key, key)  # noqa: E731 -- GPT-2's n_embd is hidden_size
    unknown = sorted(key for key in config if not hasattr(base, key))
    if unknown:
        known = sorted(set(base.to_dict()) | set(base.attribute_map))
        raise ConfigError(f"Problem 'hf': {unknown} are not settings of a {model_type!r} config; its settings: "
                          f"{known}.")
    settings = {canonical(key): value for key, value in TINY.items() if hasattr(base, key)}
    if hasattr(base, "max_position_embeddings"):
        settings[canonical("max_position_embeddings")] = seq_len
    settings.update({canonical(key): value for key, value in config.items()})
    inner, hidden = canonical("intermediate_size"), canonical("hidden_size")
    if hasattr(base, inner) and inner not in settings and hidden in settings:
        settings[inner] = 4 * settings[hidden]
    classifier = task == "sequence-classification"
    settings.update(vocab_size=vocab_size + classifier, pad_token_id=vocab_size if classifier else None)
    for special in ("bos_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id"):
        value = getattr(base, special, None)
        if isinstance(value, int) and value >= settings["vocab_size"]:
            settings[special] = None  # the model's own special ids point past this vocabulary
    if classifier:
        settings["num_labels"] = num_labels
    return settings


def build_model(model_type: str, task: str, settings: dict, attn_implementation: str):
    """The model for ``task`` from its config, seeded (the same theta0 every build); nothing is
    downloaded."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if task == "causal-lm" else AutoModelForSequenceClassification
    config = AutoConfig.for_model(model_type, **settings)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            return auto.from_config(config, attn_implementation=attn_implementation)
        except (ValueError, ImportError, KeyError) as err:
            raise ConfigError(f"Problem 'hf': no {task} model for model_type {model_type!r} with attention "
                              f"{attn_implementation!r}: {' '.join(str(err).split())[:300]}") from err


def _default_config(model_type: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(model_type)
    except ValueError:
        raise ConfigError(f"Problem 'hf': {model_type!r} is not a transformers model type (e.g. 'gpt2', 'bert', "
                          "'llama', 'gpt_neox'; transformers.CONFIG_MAPPING lists them).") from None


def _at_least(**values) -> None:
    bad = {name: value for name, (value, least) in values.items() if value < least}
    if bad:
        least = {name: values[name][1] for name in bad}
        raise ConfigError(f"Problem 'hf': {bad} must be at least {least}.")
