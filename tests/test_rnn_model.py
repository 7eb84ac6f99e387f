"""The DARTS recurrent language model and search network: parameter counts to the unit, DARTS's
parameter names, and log-probabilities against a plain computation of the cell written here."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genotypes import GenotypeError, RecurrentGenotype, format_genotype, load_recurrent_genotype, to_recurrent
from metrics import count_parameters
from recurrent_model import (Dropouts, LanguageModelError, LanguageModelSpec, embedded_dropout, locked_dropout,
                             resolve_genotype)
from recurrent_search import SEARCH_PRIMITIVES, RNNModelSearch, language_model_objective, parse_recurrent

NO_DROPOUT = Dropouts(0.0, 0.0, 0.0, 0.0, 0.0)
DARTS_KEYS = ["encoder.weight", "rnns.0._W0", *[f"rnns.0._Ws.{i}" for i in range(8)], "decoder.weight", "decoder.bias"]
ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


def build(arch: str, words: int, units: int, dropouts: Dropouts = NO_DROPOUT):
    return LanguageModelSpec.from_genotype(load_recurrent_genotype(arch), words, units, units, units, dropouts).build()


@pytest.mark.parametrize("arch, words, units, expected", [
    ("DARTS_V2", 10_000, 850, 22_960_000),
    ("DARTS_V1", 10_000, 850, 22_960_000),
    ("ENAS", 10_000, 850, 27_295_000),
    ("DARTS_V2", 33_278, 700, 33_127_878),
])
def test_parameter_counts_equal_the_original_code(arch, words, units, expected):
    assert count_parameters(build(arch, words, units)) == expected


def test_search_network_counts_4810000_weights_and_declares_its_architecture_weights():
    model = RNNModelSearch(10_000, 300, 300, Dropouts())
    arch, weights = model.arch_parameters(), model.weight_parameters()
    assert sum(p.numel() for p in weights) == 4_810_000
    assert [tuple(a.shape) for a in arch] == [(36, 5)]
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in arch} | {id(p) for p in weights} == ids and not {id(p) for p in arch} & {id(p) for p in weights}
    assert model.rnns[0].bn.affine is False and not list(model.rnns[0].bn.parameters())


def test_state_dict_names_are_darts_and_the_decoder_is_tied():
    model = build("DARTS_V2", 50, 16)
    assert list(model.state_dict()) == DARTS_KEYS
    assert model.decoder.weight is model.encoder.weight
    assert [k for k in build("ENAS", 50, 16).state_dict() if "_Ws" in k][-1] == "rnns.0._Ws.10"


def reference_log_probs(sd: dict, genotype: RecurrentGenotype, words: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """DARTS's DARTSCell and RNNModel in evaluation mode, step by step, from the state_dict alone."""
    emb, w0, bias = sd["encoder.weight"], sd["rnns.0._W0"], sd["decoder.bias"]
    nhid = w0.shape[1] // 2
    out = []
    for t in range(words.shape[0]):
        c0, h0 = (torch.cat([emb[words[t]], h], -1) @ w0).split(nhid, -1)
        states = [h + torch.sigmoid(c0) * (torch.tanh(h0) - h)]
        for i, (op, j) in enumerate(genotype.steps):
            c, hh = (states[j] @ sd[f"rnns.0._Ws.{i}"]).split(nhid, -1)
            states.append(states[j] + torch.sigmoid(c) * (ACT[op](hh) - states[j]))
        h = torch.stack([states[k] for k in genotype.concat], -1).mean(-1)
        out.append(F.log_softmax(h @ sd["decoder.weight"].t() + bias, -1))
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["DARTS_V2", "ENAS"])
def test_a_darts_state_dict_loads_strictly_and_gives_the_reference_log_probabilities(arch):
    genotype = load_recurrent_genotype(arch)
    words, units, steps = 40, 12, len(genotype.steps)
    g = torch.Generator().manual_seed(0)
    embedding = torch.rand(words, units, generator=g, dtype=torch.float64) - 0.5
    sd = {"encoder.weight": embedding, "rnns.0._W0": torch.rand(2 * units, 2 * units, generator=g, dtype=torch.float64) - 0.5,
          **{f"rnns.0._Ws.{i}": torch.rand(units, 2 * units, generator=g, dtype=torch.float64) - 0.5 for i in range(steps)},
          "decoder.weight": embedding, "decoder.bias": torch.rand(words, generator=g, dtype=torch.float64)}
    model = build(arch, words, units, Dropouts()).double()
    model.load_state_dict(sd, strict=True)
    model.eval()
    x = torch.randint(0, words, (9, 3), generator=g)
    h0 = torch.rand(1, 3, units, generator=g, dtype=torch.float64)
    log_prob, hidden = model(x, [h0])
    expected = reference_log_probs(sd, genotype, x, h0[0])
    assert log_prob.shape == (9, 3, words)
    torch.testing.assert_close(log_prob, expected, rtol=0, atol=1e-12)
    # the hidden state carried to the next batch continues the sequence exactly
    first, h_mid = model(x[:4], [h0])
    rest, _ = model(x[4:], h_mid)
    torch.testing.assert_close(torch.cat([first, rest]), log_prob, rtol=0, atol=1e-12)


def test_without_dropout_training_mode_computes_the_evaluation_function():
    model = build("DARTS_V1", 30, 8)
    x = torch.randint(0, 30, (6, 4))
    model.train()
    train_out, _ = model(x, model.init_hidden(4))
    model.eval()
    eval_out, _ = model(x, model.init_hidden(4))
    torch.testing.assert_close(train_out, eval_out)


def test_locked_and_embedding_dropout_keep_one_mask_per_sequence_and_word():
    torch.manual_seed(0)
    x = torch.ones(7, 5, 64)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:1].expand_as(y)) and set(y.unique().tolist()) == {0.0, 2.0}
    assert locked_dropout(x, 0.5, training=False) is x
    embedding = torch.nn.Embedding(20, 6)
    words = torch.arange(20).repeat(3, 1)
    out = embedded_dropout(embedding, words, 0.5)
    dropped = (out == 0).all(-1)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped)) and 0 < int(dropped[0].sum()) < 20
    torch.testing.assert_close(out[~dropped], 2 * embedding.weight[words][~dropped])


def test_sizes_and_activations_are_checked_in_one_sentence():
    with pytest.raises(LanguageModelError, match="--emsize 8, --nhid 9 and --nhidlast 8 must be equal"):
        LanguageModelSpec.from_genotype(load_recurrent_genotype("DARTS_V2"), 10, 8, 9, 8, Dropouts())
    odd = RecurrentGenotype("odd", (("tanh", 0), ("none", 1), ("swish", 1)), (1, 2, 3))
    with pytest.raises(LanguageModelError, match="uses 'none', 'swish', which a recurrent cell cannot compute"):
        LanguageModelSpec.from_genotype(odd, 10, 8, 8, 8, Dropouts()).build()
    assert resolve_genotype("DARTS") == load_recurrent_genotype("DARTS_V2")
    with pytest.raises(GenotypeError, match="did you mean"):
        resolve_genotype("DARTS_V3")


def test_the_spec_round_trips_through_a_checkpoint_dictionary():
    spec = LanguageModelSpec.from_genotype(load_recurrent_genotype("ENAS"), 99, 8, 8, 8, Dropouts(0.1, 0.2, 0.3, 0.4, 0.5))
    assert LanguageModelSpec.from_dict(spec.to_dict()) == spec and spec.genotype == load_recurrent_genotype("ENAS")


def reference_search_cell(cell, probs, x, h, bn):
    """DARTS's DARTSCellSearch.cell, op by op, with the BatchNorm `bn` given as a function."""
    nhid = cell.nhid
    c0, h0 = (torch.cat([x, h], -1) @ cell._W0).split(nhid, -1)
    states = bn(h + torch.sigmoid(c0) * (torch.tanh(h0) - h)).unsqueeze(0)
    offset = 0
    for i in range(8):
        c, hh = (states @ cell._Ws[i]).split(nhid, -1)
        c = torch.sigmoid(c)
        s = torch.zeros_like(states[0])
        for k, name in enumerate(SEARCH_PRIMITIVES):
            if name != "none":
                s = s + (probs[offset:offset + i + 1, k].view(-1, 1, 1) * (states + c * (ACT[name](hh) - states))).sum(0)
        states = torch.cat([states, bn(s).unsqueeze(0)])
        offset += i + 1
    return states[-8:].mean(0)


@pytest.mark.parametrize("training", [False, True])
def test_the_search_cell_computes_darts_mixed_ops(training):
    torch.manual_seed(1)
    model = RNNModelSearch(30, 6, 6, NO_DROPOUT).double()
    cell = model.rnns[0]
    with torch.no_grad():
        model.alphas[0].normal_()
        cell.bn.running_mean.uniform_(-1, 1)
        cell.bn.running_var.uniform_(0.5, 2)
    probs = F.softmax(model.alphas[0], -1)
    x, h = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    mean, var = cell.bn.running_mean.clone(), cell.bn.running_var.clone()
    if training:
        bn = lambda s: F.batch_norm(s, None, None, training=True, eps=cell.bn.eps)  # noqa: E731
    else:
        bn = lambda s: (s - mean) / torch.sqrt(var + cell.bn.eps)  # noqa: E731
    expected = reference_search_cell(cell, probs, x, h, bn)
    cell.train(training)
    out, last = cell(x.unsqueeze(0), h.unsqueeze(0), probs)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-12)
    assert cell.bn.num_batches_tracked.item() == (9 if training else 0)     # s0 and the 8 steps share one BatchNorm


def test_architecture_gradients_reach_the_alphas_and_the_loss_carries_the_hidden_state():
    torch.manual_seed(0)
    model = RNNModelSearch(25, 8, 8, Dropouts())
    x = torch.randint(0, 25, (6, 3))
    loss, hidden = language_model_objective(model, (x[:-1], x[1:], model.init_hidden(3)))
    loss.backward()
    assert model.alphas[0].grad.abs().sum() > 0 and hidden[0].shape == (1, 3, 8)
    assert loss.item() == pytest.approx(np.log(25), rel=0.05)


def test_the_parse_takes_the_strongest_non_none_op_of_the_strongest_predecessor():
    target = load_recurrent_genotype("DARTS_V2")
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.0, 0.1, size=(36, 5))
    probs[:, 0] = 0.9                    # 'none' is strongest everywhere, and ignored
    offset = 0
    for i, (op, j) in enumerate(target.steps):
        probs[offset + j, SEARCH_PRIMITIVES.index(op)] = 0.5
        offset += i + 1
    record = parse_recurrent(probs, SEARCH_PRIMITIVES)
    assert to_recurrent(record, "DARTS_V2") == target
    assert format_genotype(record).strip() == (
        "Genotype(recurrent=[('sigmoid', 0), ('relu', 1), ('relu', 1), ('identity', 1), ('tanh', 2), "
        "('sigmoid', 5), ('tanh', 3), ('relu', 5)], concat=range(1, 9))")
    tied = np.full((36, 5), 0.2)
    assert to_recurrent(parse_recurrent(tied, SEARCH_PRIMITIVES), "t").steps == (("tanh", 0),) * 8


@pytest.mark.parametrize("search", [False, True])
def test_mixed_precision_runs_forward_and_backward(search):
    """--amp on CUDA autocasts the matmuls; the same code under CPU bfloat16 autocast must run (the
    cell mixes float32 states with low-precision matmul outputs) and keep the loss in float32."""
    torch.manual_seed(0)
    model = RNNModelSearch(30, 8, 8, Dropouts()) if search else build("DARTS_V2", 30, 8, Dropouts())
    x = torch.randint(0, 30, (5, 4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_prob, hidden, raw, dropped = model(x, model.init_hidden(4), return_h=True)
        loss = F.nll_loss(log_prob.float().reshape(-1, 30), x.reshape(-1))
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
