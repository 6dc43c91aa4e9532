"""Hugging Face transformers models as subjects (lossatlas.hf, the problem "hf"), and the batches
users hand over (Hugging Face dicts with labels, (ids, mask, y) tuples). Models are tiny and built
from configs: nothing is downloaded. The losses are checked against a hand computation and
transformers' own loss, Hessian-vector products through fused attention against the eager
model's and against finite differences of gradients."""
import copy
import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lossatlas import ConfigError, ModuleSubject, inputs, registry
from lossatlas.cli import main

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
VOCAB = 11


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


def _gpt2(transformers, dropout=0.0, attn="sdpa"):
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=2, n_head=2,
                                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                                     eos_token_id=None, attn_implementation=attn)
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).double()


def _bert(transformers, attn="sdpa"):
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16, num_labels=3,
                                     attn_implementation=attn)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).double()


def _text(n=7, length=9, seed=0):
    """Right-padded token ids, their attention masks (lengths 2..9) and 3 class labels."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, length), generator=generator)
    lengths = torch.tensor([9, 5, 7, 2, 9, 3, 6])[:n]
    mask = (torch.arange(length) < lengths[:, None]).long()
    return ids, mask, torch.arange(n) % 3


def _hand_token_mean(model, ids, mask) -> tuple[float, int]:
    """Next-token cross-entropy summed by hand over every real (unpadded) next token, over their count."""
    with torch.no_grad():
        logp = torch.log_softmax(model.eval()(input_ids=ids, attention_mask=mask).logits, dim=-1)
    total, count = 0.0, 0
    for i in range(len(ids)):
        for t in range(ids.shape[1] - 1):
            if mask[i, t + 1]:
                total -= float(logp[i, t, ids[i, t + 1]])
                count += 1
    return total / count, count


# -- the losses --------------------------------------------------------------------------------------
@pytest.mark.parametrize("eval_batch_size", [7, 3])
def test_causal_lm_loss_is_the_mean_over_every_real_token(transformers, eval_batch_size):
    from lossatlas import hf

    model = _gpt2(transformers, dropout=0.5)  # dropout must be off in every landscape measurement
    ids, mask, _ = _text()
    expected, count = _hand_token_mean(model, ids, mask)
    subject = hf.subject(model, {"input_ids": ids, "attention_mask": mask}, eval_batch_size=eval_batch_size,
                         device="cpu")
    assert torch.equal(subject.data[1], ids.masked_fill(mask == 0, -100))  # padding ignored by the glue
    assert subject.loss_fn.terms(subject.data[1]) == count == int(mask[:, 1:].sum())
    assert subject.loss(subject.theta0) == pytest.approx(expected, rel=1e-12)
    assert subject.loss(subject.theta0) == subject.loss(subject.theta0)  # deterministic: no dropout
    # transformers' own loss, on the whole batch with the padding labelled -100
    with torch.no_grad():
        own = model.eval()(input_ids=ids, attention_mask=mask, labels=subject.data[1]).loss
    assert float(own) == pytest.approx(expected, rel=1e-6)  # transformers computes it in float32
    # the checks can fail: a mean of per-sequence-batch means, or dropout on, gives another number
    with torch.no_grad():
        batch_means = [float(subject.loss_fn(model(input_ids=ids[s], attention_mask=mask[s]).logits,
                                             subject.data[1][s])) for s in (slice(0, 3), slice(3, 6), slice(6, 7))]
    assert abs(np.average(batch_means, weights=[3, 3, 1]) - expected) > 1e-4
    torch.manual_seed(1)
    with torch.no_grad():
        noisy = model.train()(input_ids=ids, attention_mask=mask, labels=subject.data[1]).loss
    assert abs(float(noisy) - expected) > 1e-4


def test_sequence_classification_loss_is_transformers_own(transformers):
    from lossatlas import hf

    model = _bert(transformers)
    ids, mask, labels = _text()
    subject = hf.subject(model, {"input_ids": ids, "attention_mask": mask, "labels": labels},
                         task="sequence-classification", eval_batch_size=3, device="cpu")
    with torch.no_grad():
        out = model.eval()(input_ids=ids, attention_mask=mask, labels=labels)
    found = subject.evaluate(subject.theta0)
    assert found["loss"] == pytest.approx(float(out.loss), rel=1e-12)
    assert found["accuracy"] == pytest.approx(float((out.logits.argmax(1) == labels).double().mean()))
    assert isinstance(subject.loss_fn, nn.CrossEntropyLoss) and subject.loss_fn.terms(labels) == 7


# -- second-order products through fused attention ---------------------------------------------------
def _eager_twin(model):
    twin = copy.deepcopy(model)
    twin.set_attn_implementation("eager")
    assert twin.config._attn_implementation == "eager"
    return twin


@pytest.mark.parametrize("which", ["gpt2", "bert"])
def test_hvp_through_sdpa_attention_equals_the_eager_models(transformers, which):
    from lossatlas import hf

    model = _gpt2(transformers) if which == "gpt2" else _bert(transformers)
    assert model.config._attn_implementation == "sdpa"
    ids, mask, labels = _text()
    task = "causal-lm" if which == "gpt2" else "sequence-classification"
    data = {"input_ids": ids, "attention_mask": mask, **({} if which == "gpt2" else {"labels": labels})}
    fused, eager = (hf.subject(m, data, task=task, eval_batch_size=4, device="cpu")
                    for m in (model, _eager_twin(model)))
    assert torch.equal(fused.theta0, eager.theta0)
    vector = torch.randn(fused.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = eager.hvp(eager.theta0, vector)
    assert float(expected.norm()) > 1e-3
    torch.testing.assert_close(fused.hvp(fused.theta0, vector), expected, rtol=1e-9, atol=1e-12)
    # many points at once: vmap over the math kernel, the same losses as one at a time
    thetas = torch.stack([fused.theta0, fused.theta0 + 0.01 * vector])
    np.testing.assert_allclose(fused.losses(thetas), [eager.loss(t) for t in thetas], rtol=1e-10)
    assert fused._vmap_ok


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        out, _ = self.attention(x, x, x, need_weights=False)  # torch's scaled_dot_product_attention
        return self.head(out.mean(dim=1))


def test_hvp_through_multihead_attention_matches_finite_differences_of_gradients():
    torch.manual_seed(0)
    x, y = torch.randn(10, 5, 4, dtype=torch.float64), torch.arange(10) % 3
    subject = ModuleSubject(_SelfAttention().double(), nn.CrossEntropyLoss(), (x, y), device="cpu")
    vector = torch.randn(subject.dim, dtype=torch.float64)
    eps = 1e-5
    difference = (subject.grad(subject.theta0 + eps * vector) - subject.grad(subject.theta0 - eps * vector)) / (2 * eps)
    assert float(difference.norm()) > 1e-3
    torch.testing.assert_close(subject.hvp(subject.theta0, vector), difference, rtol=1e-6, atol=1e-8)


def test_attention_without_second_derivatives_is_switched_or_refused(transformers):
    from lossatlas import hf

    ids, mask, _ = _text()
    model = _gpt2(transformers)
    model.config._attn_implementation = "flash_attention_2"  # a fused kernel outside torch's attention
    subject = hf.subject(model, {"input_ids": ids, "attention_mask": mask}, device="cpu")
    assert subject.model.config._attn_implementation == "sdpa" and subject.config()["attention"] == "sdpa"
    assert model.config._attn_implementation == "flash_attention_2"  # the user's model is not changed
    model.config._attn_implementation = "my_kernel"
    with pytest.raises(ConfigError, match=r"\['my_kernel'\].*set_attn_implementation\('sdpa'\)"):
        hf.subject(model, {"input_ids": ids, "attention_mask": mask}, device="cpu")


# -- frozen parameters and initialization ------------------------------------------------------------
def test_frozen_embeddings_stay_out_of_theta(transformers):
    from lossatlas import hf

    model = _gpt2(transformers)
    model.transformer.wte.weight.requires_grad_(False)  # tied to the LM head: both frozen
    model.transformer.wpe.weight.requires_grad_(False)
    ids, mask, _ = _text()
    subject = hf.subject(model, {"input_ids": ids, "attention_mask": mask}, device="cpu")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert subject.dim == trainable < sum(p.numel() for p in model.parameters())
    assert set(subject.frozen) == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert not any(name.startswith(("transformer.wte", "transformer.wpe")) for name, *_ in subject.param_layout)
    assert subject.loss(subject.theta0) == pytest.approx(_hand_token_mean(model, ids, mask)[0], rel=1e-12)
    assert subject.hvp(subject.theta0, torch.ones(subject.dim, dtype=torch.float64)).shape == (trainable,)
    theta, _ = subject.init_theta(1)
    assert torch.equal(subject.model.transformer.wte.weight, model.transformer.wte.weight)  # kept in init_theta
    # transformers' own initialization (GPT-2: N(0, initializer_range)), seeded, not the built values
    weights = subject.unflatten(theta)["transformer.h.0.attn.c_attn.weight"]
    assert 0.016 < float(weights.std()) < 0.024 and not torch.equal(theta, subject.theta0)
    assert torch.equal(theta, subject.init_theta(1)[0]) and not torch.equal(theta, subject.init_theta(2)[0])


# -- batches users hand over -------------------------------------------------------------------------
class _Dicts(Dataset):
    """Examples as a Hugging Face dataset without a torch format gives them: dicts of lists and ints."""

    def __init__(self, ids, mask, labels=None):
        self.items = [{"input_ids": i.tolist(), "attention_mask": m.tolist()} for i, m in zip(ids, mask)]
        for item, label in zip(self.items, [] if labels is None else labels):
            item["labels"] = int(label)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_hugging_face_dicts_become_inputs_and_labels():
    ids, mask, labels = _text()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    expected_inputs = {"input_ids": ids, "attention_mask": mask}
    for data in (batch, _Dicts(ids, mask, labels), DataLoader(_Dicts(ids, mask, labels), batch_size=3, shuffle=True),
                 DataLoader([{k: v[i] for k, v in batch.items()} for i in range(7)], batch_size=2)):
        found_inputs, found_targets = inputs.materialize(data, "data")
        assert found_inputs.keys() == expected_inputs.keys() and torch.equal(found_targets, labels)
        assert all(torch.equal(found_inputs[k], v) for k, v in expected_inputs.items())
    with pytest.raises(ConfigError, match=r"got a dict with keys \['attention_mask', 'input_ids'\] and no 'labels'"):
        inputs.materialize(expected_inputs, "data")
    ragged = [{"input_ids": torch.arange(n), "labels": torch.tensor(0)} for n in (3, 4)]
    with pytest.raises(ConfigError, match="pad sequences to one length"):
        inputs.materialize(DataLoader(ragged, batch_size=2), "data")


class _MaskedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(9, 3)

    def forward(self, x, mask):
        return self.linear(x * mask)


def test_tuples_of_several_inputs_and_the_targets_last():
    ids, mask, labels = _text()
    x = ids.double()
    torch.manual_seed(0)
    model = _MaskedLinear().double()
    with torch.no_grad():
        expected = float(nn.functional.cross_entropy(model(x, mask.double()), labels))
    found_inputs, found_targets = inputs.materialize((x, mask, labels), "data")
    assert isinstance(found_inputs, tuple) and len(found_inputs) == 2 and torch.equal(found_targets, labels)
    for data in ((x, mask.double(), labels), DataLoader(TensorDataset(x, mask.double(), labels), batch_size=3)):
        subject = ModuleSubject(model, nn.CrossEntropyLoss(), data, device="cpu")  # called as model(x, mask)
        assert subject.loss(subject.theta0) == pytest.approx(expected, rel=1e-12)


def test_id_mask_label_tuples_with_a_forward_reach_a_transformer(transformers):
    from lossatlas import hf

    model = _bert(transformers)
    ids, mask, labels = _text()
    own = ModuleSubject(model, hf.SequenceClassificationLoss(), DataLoader(TensorDataset(ids, mask, labels), 4),
                        forward=lambda m, batch: m(input_ids=batch[0], attention_mask=batch[1]).logits, device="cpu")
    glued = hf.subject(model, _Dicts(ids, mask, labels), task="sequence-classification", device="cpu")
    assert own.loss(own.theta0) == pytest.approx(glued.loss(glued.theta0), rel=1e-12)
    lm = _gpt2(transformers)
    from_dataset = hf.subject(lm, _Dicts(ids, mask), device="cpu")  # labels: the ids, -100 under the padding
    assert torch.equal(from_dataset.data[1], ids.masked_fill(mask == 0, -100))
    assert from_dataset.loss(from_dataset.theta0) == pytest.approx(_hand_token_mean(lm, ids, mask)[0], rel=1e-12)


# -- the problem "hf" and every analyzer on it ----------------------------------------------------------
def test_grammar_text_follows_its_grammar_and_is_seeded():
    from lossatlas.problems.hf import markov_grammar, sample_text

    grammar = markov_grammar(6, 2, 2, seed=0)
    text = sample_text(grammar, 400, 12, seed=1).numpy()
    allowed = {(a, b, c) for a in range(6) for b in range(6) for c in grammar.successors[a * 6 + b]}
    seen = {tuple(text[i, t - 2:t + 1]) for i in range(len(text)) for t in range(2, 12)}
    assert seen <= allowed and len(seen) > 0.9 * len(allowed)
    context = text[:, 2:4][(text[:, 0] == 1) & (text[:, 1] == 2)]  # what follows the context (1, 2)
    successors, probabilities = grammar.successors[1 * 6 + 2], grammar.probabilities[1 * 6 + 2]
    frequencies = [np.mean(context[:, 0] == s) for s in successors]
    np.testing.assert_allclose(frequencies, probabilities, atol=0.25)  # about 11 draws: a loose check
    assert np.array_equal(text, sample_text(grammar, 400, 12, seed=1).numpy())
    assert not np.array_equal(text, sample_text(grammar, 400, 12, seed=2).numpy())


def test_hf_problem_sizes_corpus_and_errors(transformers, tmp_path):
    from lossatlas.problems import build

    small = build("hf", device="cpu", n_embd=8, n_layer=1, seq_len=8, n_train=16, n_test=8)
    config = small.model.config
    assert (config.n_embd, config.n_layer, config.n_head, config.n_positions, config.vocab_size) == (8, 1, 2, 8, 16)
    assert small.data[0]["input_ids"].shape == (16, 8) and small.test_data[0]["input_ids"].shape == (8, 8)
    assert 0 < small.loss(small.theta0) < 1.2 * math.log(16)
    bert = build("hf", device="cpu", model_type="bert", task="sequence-classification", hidden_size=8, seq_len=8,
                 n_train=16, n_test=8, num_labels=3)
    assert bert.model.config.intermediate_size == 32 and bert.classification
    assert (bert.model.config.vocab_size, bert.model.config.pad_token_id) == (17, 16)  # a padding id outside the text
    assert torch.equal(bert.data[1], torch.arange(16) % 3)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcab cab" * 8)
    chars = build("hf", device="cpu", corpus=str(corpus), n_embd=8, n_layer=1, seq_len=6, n_train=8, n_test=4)
    alphabet = sorted(set("abcab cab"))
    decoded = "".join(alphabet[i] for i in chars.data[0]["input_ids"].reshape(-1).tolist())
    assert decoded == ("abcab cab" * 8)[:48] and chars.model.config.vocab_size == len(alphabet)
    with pytest.raises(ConfigError, match="corpus 'nowhere.txt' is not a file"):
        build("hf", device="cpu", corpus="nowhere.txt")
    with pytest.raises(ConfigError, match=r"\['n_embed'\] are not settings of a 'gpt2' config"):
        build("hf", device="cpu", n_embed=8)
    with pytest.raises(ConfigError, match="not a transformers model type"):
        build("hf", device="cpu", model_type="gpt7")
    with pytest.raises(ConfigError, match="holds 2 windows"):
        build("hf", device="cpu", corpus=str(corpus), seq_len=32, n_train=8)


def test_every_analyzer_runs_on_a_tiny_language_model_at_smoke_scale(transformers, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PHATE and graphtools warn about tiny smoke-scale graphs
        assert main(["run", str(BENCHMARKS / "hf_lm.toml"), "--scale", "smoke", "--out", str(tmp_path),
                     "--figures", "none"]) == 0
    folder = tmp_path / "hf_lm_smoke"
    with open(folder / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and {row["n_embd"] for row in rows} == {"16", "32"}
    labels = {column.split(".")[0] for column in rows[0] if "." in column and not column.startswith("time.")}
    assert labels == set(registry.available())  # every analyzer in the registry ran
    explained = (folder / "report.md").read_text().split("\n## Non-finite values", 1)[1].split("\n## ", 1)[0]
    for row in rows:
        assert float(row["train_loss"]) < math.log(16) + 0.1 and math.isfinite(float(row["test_loss"]))
        for column, value in row.items():
            if "." in column and not math.isfinite(float(value)):
                assert f"seed {row['seed']}: `{column}`" in explained, column


def test_streamed_token_labels_outside_the_vocabulary_are_refused(transformers):
    """The streamed path checks the labels its one pass found, as the in-memory path checks its own."""
    from lossatlas import hf

    ids, mask, _ = _text()
    bad = ids.clone()
    bad[-1, 0] = VOCAB + 5  # a token id the model has no row for, late in the data
    class Items(Dataset):
        def __len__(self):
            return len(bad)

        def __getitem__(self, i):
            return {"input_ids": bad[i], "attention_mask": mask[i]}

    for stream in (False, True):
        with pytest.raises(ConfigError, match="outside the vocabulary"):
            hf.subject(_gpt2(transformers), Items(), stream=stream, eval_batch_size=3)
