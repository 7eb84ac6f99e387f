"""DARTS's recurrent language model: a recurrent cell from a genotype, between a tied embedding and
decoder, with the AWD-LSTM dropouts.

A cell step turns the input x_t and the previous hidden state h_{t-1} into h_t:

    c0, h0 = split([x_t, h_{t-1}] @ W0);  s0 = h_{t-1} + sigmoid(c0) * (tanh(h0) - h_{t-1})
    step i: c, h = split(s_j @ W_i);      s_{i+1} = s_j + sigmoid(c) * (f_i(h) - s_j)

where step i of the genotype names its activation f_i and its predecessor state j; h_t is the
mean of the states the genotype concatenates. Parameter names are those of DARTS's `RNNModel`
(``encoder.weight``, ``rnns.0._W0``, ``rnns.0._Ws.<i>``, ``decoder.weight``, ``decoder.bias``),
so its state_dicts load strictly. The decoder shares the encoder's weight (weight tying).

Dropouts, as DARTS names them: ``dropoute`` drops whole words from the embedding matrix,
``dropouti`` the embedded input, ``dropoutx`` and ``dropouth`` the cell's input and hidden state,
``dropout`` the cell's output; each draws one mask per sequence in the batch and keeps it over
time (variational, "locked" dropout).

One difference from the reference in the arithmetic, not the function: the input half of
``[x_t, h_{t-1}] @ W0`` is computed for every time step at once, before the loop. (The highway
update stays in plain arithmetic: ``torch.lerp`` would save operations but does not promote
types, which mixed precision needs.)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from errors import UserError
from genotypes import RecurrentGenotype, load_recurrent_genotype

INIT_RANGE = 0.04
ARCH_ALIASES = {"DARTS": "DARTS_V2"}     # DARTS's rnn/genotypes.py: DARTS = DARTS_V2
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda x: x}


class LanguageModelError(UserError):
    """A language model that cannot be built as asked (an unknown activation, unequal sizes)."""


def resolve_genotype(name_or_path: str) -> RecurrentGenotype:
    """--arch: a name in genotypes/recurrent/ (or DARTS, which is DARTS_V2) or a genotype file."""
    return load_recurrent_genotype(ARCH_ALIASES.get(name_or_path, name_or_path))


def variational_mask(like: torch.Tensor, shape: tuple[int, ...], p: float) -> torch.Tensor | None:
    """A Bernoulli(1 - p) mask scaled by 1 / (1 - p), or None when nothing is dropped."""
    if not p:
        return None
    return like.new_empty(shape).bernoulli_(1 - p).div_(1 - p)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of (T, B, D) activations with one mask per sequence, the same at every time step."""
    mask = variational_mask(x, (1, x.shape[1], x.shape[2]), p) if training else None
    return x if mask is None else x * mask


def embedded_dropout(embedding: nn.Embedding, words: torch.Tensor, p: float) -> torch.Tensor:
    """Embed `words` with whole rows of the embedding matrix (words) dropped with probability p."""
    mask = variational_mask(embedding.weight, (embedding.weight.shape[0], 1), p)
    weight = embedding.weight if mask is None else embedding.weight * mask
    return F.embedding(words, weight)


class RecurrentCell(nn.Module):
    """What DARTS's evaluation and search cells share: the weights, the dropout masks of a batch,
    the initial state s0 and the loop over time. Subclasses define `cell`, one time step."""

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float, steps: int):
        super().__init__()
        self.nhid, self.dropouth, self.dropoutx = nhid, dropouth, dropoutx
        self._W0 = nn.Parameter(torch.empty(ninp + nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
        self._Ws = nn.ParameterList(nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INIT_RANGE, INIT_RANGE))
                                    for _ in range(steps))

    def forward(self, inputs: torch.Tensor, hidden: torch.Tensor, *extra) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (T, B, ninp), hidden (1, B, nhid) -> every h_t (T, B, nhid) and the last (1, B, nhid)."""
        ninp = inputs.shape[2]
        h_mask = None
        if self.training:
            x_mask = variational_mask(inputs, (inputs.shape[1], ninp), self.dropoutx)
            inputs = inputs if x_mask is None else inputs * x_mask
            h_mask = variational_mask(inputs, (inputs.shape[1], self.nhid), self.dropouth)
        x_part = inputs @ self._W0[:ninp]
        h = hidden[0]
        outputs = []
        for x_t in x_part.unbind(0):
            h = self.cell(x_t, h, h_mask, *extra)
            outputs.append(h)
        hiddens = torch.stack(outputs)
        return hiddens, hiddens[-1].unsqueeze(0)

    def initial_state(self, x_part: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None) -> torch.Tensor:
        """s0 from this step's share of x_t @ W0 and the (dropped) previous hidden state."""
        masked = h_prev if h_mask is None else h_prev * h_mask
        c0, h0 = torch.addmm(x_part, masked, self._W0[-self.nhid:]).split(self.nhid, dim=-1)
        return h_prev + c0.sigmoid() * (h0.tanh() - h_prev)

    def cell(self, x_part: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None, *extra) -> torch.Tensor:
        raise NotImplementedError


class DARTSCell(RecurrentCell):
    """The evaluation cell of a genotype: one activation per step, on one predecessor state."""

    def __init__(self, ninp: int, nhid: int, dropouth: float, dropoutx: float, genotype: RecurrentGenotype):
        unknown = sorted({op for op, _ in genotype.steps} - set(ACTIVATIONS))
        if unknown:
            raise LanguageModelError(f"recurrent genotype {genotype.name!r} uses {', '.join(map(repr, unknown))}, which "
                                     f"a recurrent cell cannot compute; its ops are {', '.join(ACTIVATIONS)}")
        super().__init__(ninp, nhid, dropouth, dropoutx, len(genotype.steps))
        self.steps, self.concat = genotype.steps, genotype.concat

    def cell(self, x_part: torch.Tensor, h_prev: torch.Tensor, h_mask: torch.Tensor | None) -> torch.Tensor:
        states = [self.initial_state(x_part, h_prev, h_mask)]
        for i, (name, pred) in enumerate(self.steps):
            s_prev = states[pred]
            c, h = ((s_prev if h_mask is None else s_prev * h_mask) @ self._Ws[i]).split(self.nhid, dim=-1)
            states.append(s_prev + c.sigmoid() * (ACTIVATIONS[name](h) - s_prev))
        return torch.stack([states[i] for i in self.concat], -1).mean(-1)


@dataclass(frozen=True)
class Dropouts:
    """DARTS's five dropout probabilities (see the module docstring)."""
    dropout: float = 0.75
    dropouth: float = 0.25
    dropoutx: float = 0.75
    dropouti: float = 0.2
    dropoute: float = 0.1


class RNNModel(nn.Module):
    """Embedding, one recurrent cell, and the decoder tied to the embedding; forward gives log-probabilities."""

    def __init__(self, ntoken: int, ninp: int, cell: RecurrentCell, dropouts: Dropouts):
        super().__init__()
        self.ntoken, self.ninp, self.nhid = ntoken, ninp, cell.nhid
        self.dropouts = dropouts
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnns = nn.ModuleList([cell])
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        with torch.no_grad():
            self.encoder.weight.uniform_(-INIT_RANGE, INIT_RANGE)
            self.decoder.bias.zero_()

    def cell_inputs(self) -> tuple:
        """What every time step of the cell needs beyond x_t and h_{t-1} (the search's op weights)."""
        return ()

    def forward(self, input: torch.Tensor, hidden: list[torch.Tensor], return_h: bool = False):
        """input (T, B) word ids, hidden [(1, B, nhid)] -> log-probabilities (T, B, ntoken) and the new
        hidden state; with return_h also the cell outputs before and after the output dropout (for AR/TAR)."""
        d = self.dropouts
        emb = embedded_dropout(self.encoder, input, d.dropoute if self.training else 0)
        raw_output = locked_dropout(emb, d.dropouti, self.training)
        new_hidden, raw_outputs = [], []
        extra = self.cell_inputs()
        for rnn, h in zip(self.rnns, hidden):
            raw_output, new_h = rnn(raw_output, h, *extra)
            new_hidden.append(new_h)
            raw_outputs.append(raw_output)
        output = locked_dropout(raw_output, d.dropout, self.training)
        log_prob = F.log_softmax(self.decoder(output), dim=-1)
        if return_h:
            return log_prob, new_hidden, raw_outputs, [output]
        return log_prob, new_hidden

    def init_hidden(self, batch_size: int) -> list[torch.Tensor]:
        weight = self.encoder.weight
        return [weight.new_zeros(1, batch_size, self.nhid)]


@dataclass(frozen=True)
class LanguageModelSpec:
    """Everything that fixes a language model's parameters and function; stored in checkpoints."""
    arch_name: str
    steps: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]
    ntoken: int
    emsize: int = 850
    nhid: int = 850
    dropouts: Dropouts = field(default_factory=Dropouts)

    @classmethod
    def from_genotype(cls, genotype: RecurrentGenotype, ntoken: int, emsize: int, nhid: int, nhidlast: int,
                      dropouts: Dropouts) -> "LanguageModelSpec":
        if not emsize == nhid == nhidlast:
            raise LanguageModelError(f"--emsize {emsize}, --nhid {nhid} and --nhidlast {nhidlast} must be equal: the "
                                     f"DARTS cell maps its input width to its hidden width and ties the decoder to the "
                                     f"embedding")
        return cls(genotype.name, tuple(genotype.steps), tuple(genotype.concat), ntoken, emsize, nhid, dropouts)

    @property
    def genotype(self) -> RecurrentGenotype:
        return RecurrentGenotype(self.arch_name, self.steps, self.concat)

    def build(self) -> RNNModel:
        d = self.dropouts
        cell = DARTSCell(self.emsize, self.nhid, d.dropouth, d.dropoutx, self.genotype)
        return RNNModel(self.ntoken, self.emsize, cell, d)

    def describe(self) -> str:
        return f"{self.arch_name} | {len(self.steps)} steps, {self.nhid} units, {self.ntoken} words"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["steps"] = [list(step) for step in self.steps]
        data["concat"] = list(self.concat)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "LanguageModelSpec":
        return cls(**{**data, "steps": tuple((op, int(j)) for op, j in data["steps"]), "concat": tuple(data["concat"]),
                      "dropouts": Dropouts(**data["dropouts"])})
