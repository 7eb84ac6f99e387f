"""Genotypes: one architecture representation, primitive sets, and a safe text format.

Three published text forms are read and written:

* ``Genotype(normal, normal_concat, reduce, reduce_concat[, layout])`` -- DARTS and its
  descendants; edges are ``(op, from_node)`` pairs (two per intermediate node) or FairDARTS
  ``(op, to_node, from_node)`` triples; sharpDARTS adds ``layout='cell'``.
* ``Genotype_nested(genes, concat, reductions)`` -- D-DARTS, one gene (cell) per layer.
* ``Genotype_opt(genes, seq, concat, reductions)`` -- D-DARTS/DARTOpti, ``seq`` picks a gene
  for every layer.

A DARTS recurrent cell, ``Genotype(recurrent=[(op, from_state), ...], concat=...)`` (written
with keywords, as DARTS prints it), is read by the same parser as a distinct kind,
:data:`RECURRENT`, and converted by :func:`to_recurrent`; its files live in ``genotypes/recurrent/``.

The text is parsed with :mod:`ast` and checked node by node; nothing is ever evaluated, so a
genotype file can hold only the literal itself (lists, tuples, strings, numbers and
``range(...)``). Every form converts to one :class:`Architecture`: a tuple of
:class:`CellGenes`, each a tuple of :class:`Edge` ``(op, to_node, from_node)`` plus the nodes
concatenated for the cell output.

This module must not import torch: the scripts use it to list, check and draw genotypes
before any heavy import.
"""
from __future__ import annotations

import ast
import difflib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from errors import UserError
from paths import GENOTYPES_DIR
from textfiles import read_text, write_text_atomic

__all__ = [
    "GenotypeError", "Edge", "CellGenes", "Architecture", "RangeLiteral", "GenotypeRecord",
    "parse_genotype", "format_genotype", "read_genotype_file", "write_genotype_file",
    "to_architecture", "genotype_path", "load_architecture", "list_genotypes",
    "darts_record", "nested_record", "PRIMITIVE_SETS", "KIND_FIELDS",
    "RECURRENT", "RecurrentGenotype", "to_recurrent", "load_recurrent_genotype", "recurrent_record",
    "list_recurrent_genotypes", "RECURRENT_GENOTYPES_DIR", "MAX_GENOTYPE_CHARS", "MAX_ITEMS",
]

RECURRENT_GENOTYPES_DIR = GENOTYPES_DIR / "recurrent"


# ----------------------------------------------------------------------------------------
# Primitive sets (values of --primitives)
# ----------------------------------------------------------------------------------------

# The original DARTS search space (quark0/darts cnn/genotypes.py PRIMITIVES).
_DARTS = (
    "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
)

PRIMITIVE_SETS: dict[str, tuple[str, ...]] = {
    "DARTS": _DARTS,
    # D-DARTS PRIMITIVES_DARTS: the DARTS set without 'none', in D-DARTS's order.
    "DDARTS_7": (
        "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    ),
    # D-DARTS PRIMITIVES. The order is part of the data: D-DARTS's architecture distance
    # weights the one-hot rows with per-op statistics given in this order.
    "DDARTS_12": (
        "conv_3x1_1x3", "conv_7x1_1x7", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "simple_conv_1x1", "simple_conv_3x3", "sep_conv_3x3", "sep_conv_5x5",
        "dil_conv_3x3", "dil_conv_5x5", "bottleneck_1x3x1",
    ),
    # sharpDARTS PRIMITIVES: its default search space (dilation, sep_conv, flood and choke
    # 3x3 only); 9 ops, so its alphas have 9 columns.
    "PRIMITIVES": (
        "none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3",
        "flood_conv_3x3", "dil_flood_conv_3x3", "choke_conv_3x3", "dil_choke_conv_3x3",
    ),
    # sharpDARTS SHARPER_PRIMITIVES. sharpDARTS leaves dil_flood_conv_5x5 out of it (its
    # padding is too small), and choke convs too.
    "SHARPER_PRIMITIVES": (
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5",
        "flood_conv_3x3", "flood_conv_5x5", "dil_flood_conv_3x3",
    ),
    # sharpDARTS DARTS_PRIMITIVES is the original DARTS set, same names, same order. With
    # sharpDARTS ops (--ops OPS) its sep/dil convs are SharpSepConv modules, though.
    "DARTS_PRIMITIVES": _DARTS,
}


# ----------------------------------------------------------------------------------------
# Types
# ----------------------------------------------------------------------------------------

class GenotypeError(UserError, ValueError):
    """A genotype that cannot be read, written or converted; the message is one sentence."""


class Edge(NamedTuple):
    op: str
    to_node: int      # intermediate nodes are numbered from 2; 0 and 1 are the cell inputs
    from_node: int


@dataclass(frozen=True)
class CellGenes:
    # In the order the genotype lists them: for classic cells this order fixes the
    # evaluation cell's `_ops.<k>` index, so published checkpoints load.
    edges: tuple[Edge, ...]
    concat: tuple[int, ...]     # nodes concatenated for the cell output, in order

    @property
    def nodes(self) -> tuple[int, ...]:
        """Intermediate nodes (targets of edges), in order of first appearance."""
        return tuple(dict.fromkeys(e.to_node for e in self.edges))


@dataclass(frozen=True)
class Architecture:
    name: str
    # Distinct genes. Shared layout (classic DARTS): exactly (normal, reduce).
    cells: tuple[CellGenes, ...]
    # Per-cell layout (D-DARTS): index into `cells` for each layer; None = shared layout.
    layer_genes: tuple[int, ...] | None
    # Per-cell layout: reduction layer indices as published; None for shared layout.
    reductions: tuple[int, ...] | None
    # Node semantics of FairDARTS's/D-DARTS's DCOCell: every node sums all its incoming ops,
    # nodes are computed in order of first appearance, an edge from a node not computed yet
    # is skipped, and the output concatenates every intermediate node (concat is derived,
    # the written one is ignored). True for Genotype_nested, Genotype_opt and FairDARTS
    # (op, to, from) triples; False for classic (op, from) pairs.
    nested: bool
    # Op family the genotype was published for: "sharp" if the literal has a `layout` field
    # (sharpDARTS), else "darts".
    ops: str

    @property
    def shared(self) -> bool:
        return self.layer_genes is None


@dataclass(frozen=True)
class RecurrentGenotype:
    """A DARTS recurrent cell: step i computes state i + 1 by applying ``steps[i][0]`` to state
    ``steps[i][1]`` (state 0 is the cell's initial state); the output averages the ``concat`` states."""
    name: str
    steps: tuple[tuple[str, int], ...]
    concat: tuple[int, ...]


@dataclass(frozen=True)
class RangeLiteral:
    """A ``range(...)`` written in the text; kept as a range so it is written back as one.

    ``range(n)`` is read as ``RangeLiteral(0, n)`` and written back as ``range(0, n)``.
    """
    start: int
    stop: int
    step: int = 1

    def to_range(self) -> range:
        return range(self.start, self.stop, self.step)


@dataclass(frozen=True)
class GenotypeRecord:
    kind: str                                   # "Genotype" | "Genotype_nested" | "Genotype_opt" | RECURRENT
    # keyword -> value, in the order written; values are list/tuple/str/int/float/RangeLiteral
    fields: tuple[tuple[str, object], ...]
    comments: tuple[str, ...] = ()              # leading '# ...' lines of the file

    def get(self, key: str, default=None):
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.fields)


# The recurrent kind is written as DARTS's rnn namedtuple, Genotype(recurrent=..., concat=...).
RECURRENT = "recurrent"
_LITERAL_NAME = {RECURRENT: "Genotype"}

# Field names of each namedtuple, in their declaration order (positional arguments map to
# these), and which of them may be left out.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "Genotype": ("normal", "normal_concat", "reduce", "reduce_concat", "layout"),
    "Genotype_nested": ("genes", "concat", "reductions"),
    "Genotype_opt": ("genes", "seq", "concat", "reductions"),
    RECURRENT: ("recurrent", "concat"),
}
_OPTIONAL_FIELDS = {"Genotype": {"layout"}, "Genotype_nested": set(), "Genotype_opt": set(), RECURRENT: set()}

_ALLOWED = "only Genotype(...), Genotype_nested(...), Genotype_opt(...) literals are allowed"
# Published genotypes hold under 10,000 characters and lists of at most 53 items. These bounds are
# far above that and keep the worst text parsed within about a second.
MAX_GENOTYPE_CHARS = 256 * 1024
MAX_ITEMS = 1_000
_TOO_LONG = f"a list or range of more than {MAX_ITEMS} items is too long for a genotype"


# ----------------------------------------------------------------------------------------
# Structural checks shared by parsing (with positions) and by records built in Python
# ----------------------------------------------------------------------------------------

class _Problem(Exception):
    """A structural problem at `path` (field name, then indices) inside a record."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_int_seq(value, path: tuple, what: str) -> None:
    if isinstance(value, RangeLiteral):
        if not all(_is_int(x) for x in (value.start, value.stop, value.step)):
            raise _Problem(path, f"{what} must be a range of ints")
        if value.step == 0:
            raise _Problem(path, f"{what}: range() step must not be zero")
        r = value.to_range()
        try:
            too_long = len(r) > MAX_ITEMS
        except OverflowError:   # longer than the machine's index type
            too_long = True
        if too_long:
            raise _Problem(path, _TOO_LONG)
        if len(r) and min(r[0], r[-1]) < 0:
            raise _Problem(path, f"{what} must not hold negative numbers")
        return
    if not isinstance(value, (list, tuple)):
        raise _Problem(path, f"{what} must be a list of ints or a range(...)")
    for i, x in enumerate(value):
        if not _is_int(x):
            raise _Problem(path + (i,), f"{what} must hold ints, found {x!r}")
        if x < 0:
            raise _Problem(path + (i,), f"{what} must not hold negative numbers, found {x}")


def _check_concat(value, path: tuple, what: str, first: int, last: int | None = None) -> None:
    """A concat lists computed nodes (numbered from ``first``; up to ``last`` when known), each once."""
    _check_int_seq(value, path, what)
    is_range = isinstance(value, RangeLiteral)
    seen = set()
    for i, node in enumerate(value.to_range() if is_range else value):
        where = path if is_range else path + (i,)
        if node < first:
            raise _Problem(where, f"{what} names node {node}, an input of the cell; it lists computed nodes, "
                                  f"numbered from {first}")
        if last is not None and node > last:
            raise _Problem(where, f"{what} names node {node}, but the cell computes nodes {first} to {last}")
        if node in seen:
            raise _Problem(where, f"{what} names node {node} twice")
        seen.add(node)


def _check_recurrent(steps, concat) -> None:
    """Step i computes state i + 1 from an earlier state (0 to i); concat names computed states."""
    _check_edges(steps, ("recurrent",), (2,), "recurrent")
    if not steps:
        raise _Problem(("recurrent",), "recurrent has no steps; list one (op, from_state) pair per step")
    for i, (_, source) in enumerate(steps):
        if source > i:
            raise _Problem(("recurrent", i, 1), f"step {i} computes state {i + 1} from state {source}, "
                                                f"which is not computed before it (states 0 to {i} are)")
    _check_concat(concat, ("concat",), "concat", first=1, last=len(steps))


def _check_edges(value, path: tuple, arities: tuple[int, ...], what: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise _Problem(path, f"{what} must be a list of edges")
    shape = " or ".join({2: "(op, from_node)", 3: "(op, to_node, from_node)"}[a] for a in arities)
    first_arity = None
    for i, edge in enumerate(value):
        p = path + (i,)
        if not isinstance(edge, (list, tuple)) or len(edge) not in arities:
            raise _Problem(p, f"each edge of {what} must be a tuple {shape}, found {edge!r}")
        if first_arity is None:
            first_arity = len(edge)
        elif len(edge) != first_arity:
            raise _Problem(p, f"{what} mixes (op, from_node) pairs and (op, to_node, from_node) "
                              f"triples; use one form per cell")
        if not isinstance(edge[0], str) or not edge[0]:
            raise _Problem(p + (0,), f"the op of each edge of {what} must be a non-empty string, "
                                     f"found {edge[0]!r}")
        for j in range(1, len(edge)):
            if not _is_int(edge[j]):
                raise _Problem(p + (j,), f"node numbers in {what} must be ints, found {edge[j]!r}")
            if edge[j] < 0:
                raise _Problem(p + (j,), f"node numbers in {what} must not be negative, "
                                         f"found {edge[j]}")


def _check_genes(value, path: tuple) -> None:
    if not isinstance(value, (list, tuple)):
        raise _Problem(path, "genes must be a list of cells, each a list of (op, to_node, "
                             "from_node) edges")
    for i, gene in enumerate(value):
        _check_edges(gene, path + (i,), (3,), f"gene {i}")


def _check_structure(kind: str, fields) -> None:
    """Raise _Problem for unknown/missing/duplicate fields and wrongly shaped values."""
    if kind not in KIND_FIELDS:
        raise _Problem((), f"{_ALLOWED}, found {kind!r}")
    known = KIND_FIELDS[kind]
    title = "a recurrent Genotype" if kind == RECURRENT else kind
    seen = set()
    for key, _ in fields:
        if key not in known:
            raise _Problem((key, None), f"{title} has no field {key!r}; its fields are "
                                        f"{', '.join(known)}")
        if key in seen:
            raise _Problem((key, None), f"field {key!r} is given twice")
        seen.add(key)
    missing = [k for k in known if k not in seen and k not in _OPTIONAL_FIELDS[kind]]
    if missing:
        raise _Problem((), f"{title} is missing the field(s) {', '.join(missing)}")
    values = dict(fields)
    if kind == RECURRENT:
        _check_recurrent(values["recurrent"], values["concat"])
        return
    if kind == "Genotype":
        layout = values.get("layout")
        if "layout" in values and not isinstance(layout, str):
            raise _Problem(("layout",), f"layout must be a string such as 'cell', found {layout!r}")
        if layout not in (None, "cell"):
            return  # e.g. sharpDARTS 'raw_weights': not a cell genotype; to_architecture says so
        for cell in ("normal", "reduce"):
            _check_edges(values[cell], (cell,), (2, 3), cell)
            _check_concat(values[cell + "_concat"], (cell + "_concat",), cell + "_concat", first=2)
        return
    _check_genes(values["genes"], ("genes",))
    _check_concat(values["concat"], ("concat",), "concat", first=2)
    _check_int_seq(values["reductions"], ("reductions",), "reductions")
    if kind == "Genotype_opt":
        _check_int_seq(values["seq"], ("seq",), "seq")


def _path_text(path: tuple) -> str:
    out = ""
    for p in path:
        if p is None:
            continue
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + p)
    return out


# ----------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------

_NODE_NAMES = {
    ast.BinOp: "an arithmetic expression (write lists out, e.g. [0, 0, 0, 0])",
    ast.BoolOp: "a boolean expression", ast.Compare: "a comparison",
    ast.Lambda: "a lambda", ast.IfExp: "a conditional expression",
    ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string",
    ast.ListComp: "a list comprehension", ast.SetComp: "a set comprehension",
    ast.DictComp: "a dict comprehension", ast.GeneratorExp: "a generator expression",
    ast.Subscript: "a subscript", ast.Attribute: "an attribute access",
    ast.Dict: "a dict", ast.Set: "a set", ast.Starred: "a starred expression",
    ast.NamedExpr: "an assignment expression", ast.Await: "an await expression",
    ast.Yield: "a yield expression", ast.YieldFrom: "a yield expression",
    ast.Slice: "a slice", ast.UnaryOp: "a unary operation",
}


def _call_name(func: ast.AST) -> str | None:
    """What is called: 'eval', 'os.system', or the root '__import__' of
    __import__('os').system; None when it has no name (a lambda, a subscript...)."""
    parts = []
    node = func
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    if isinstance(node, ast.Call):
        return _call_name(node.func)
    return None


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        name = _call_name(node.func)
        return f"a call to {name!r}" if name else f"a call to {_describe(node.func)}"
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    return _NODE_NAMES.get(type(node), f"an expression of type {type(node).__name__}")


class _Parser:
    def __init__(self, source: str, line_shift: tuple[int, int] | None):
        self.source = source
        self.line_shift = line_shift   # (line, columns removed from the start of that line)

    def where(self, node: ast.AST | None) -> str:
        if node is None or not hasattr(node, "lineno"):
            return self.source
        col = node.col_offset
        if self.line_shift and node.lineno == self.line_shift[0]:
            col += self.line_shift[1]
        return f"{self.source}:{node.lineno}:{col}"

    def fail(self, node: ast.AST | None, message: str):
        raise GenotypeError(f"{self.where(node)}: {message}")

    def refuse(self, node: ast.AST):
        self.fail(node, f"{_ALLOWED}, found {_describe(node)}")

    def value(self, node: ast.AST):
        """Turn an allowed literal node into a Python value; refuse anything else."""
        if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) > MAX_ITEMS:
            self.fail(node, _TOO_LONG)
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.Constant):
            return self.constant(node, node.value)
        if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
                and isinstance(node.operand, ast.Constant)
                and type(node.operand.value) in (int, float)):
            return self.constant(node, -node.operand.value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "range"):
            return self.range_literal(node)
        self.refuse(node)

    def constant(self, node: ast.AST, v):
        if type(v) in (str, int):
            return v
        if type(v) is float:
            if not math.isfinite(v):
                self.fail(node, f"numbers must be finite, found {v!r}")
            return v
        self.refuse(node)

    def range_literal(self, node: ast.Call) -> RangeLiteral:
        args = []
        for a in node.args:
            v = self.value(a) if not isinstance(a, ast.Starred) else self.refuse(a)
            if not _is_int(v):
                self.fail(a, f"range() takes ints, found {v!r}")
            args.append(v)
        if node.keywords or not 1 <= len(args) <= 3:
            self.fail(node, "write range(stop), range(start, stop) or range(start, stop, step) "
                            "with int arguments")
        if len(args) == 1:
            args = [0] + args
        if len(args) == 3 and args[2] == 0:
            self.fail(node.args[2], "range() step must not be zero")
        return RangeLiteral(*args)

    def record(self, tree: ast.Expression, comments: tuple[str, ...]) -> GenotypeRecord:
        call = tree.body
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id in KIND_FIELDS):
            self.refuse(call)
        kind = call.func.id
        if kind == "Genotype" and any(kw.arg == "recurrent" for kw in call.keywords):
            kind = RECURRENT
        names = KIND_FIELDS[kind]
        fields: list[tuple[str, object]] = []
        nodes: dict[str, ast.AST] = {}
        if len(call.args) > len(names):
            self.fail(call.args[len(names)], f"{call.func.id} takes at most {len(names)} values "
                                             f"({', '.join(names)})")
        for name, arg in zip(names, call.args):
            if isinstance(arg, ast.Starred):
                self.refuse(arg)
            fields.append((name, self.value(arg)))
            nodes[name] = arg
        for kw in call.keywords:
            if kw.arg is None:
                self.fail(kw.value, f"{_ALLOWED}, found a '**' argument")
            if kw.arg in nodes:
                self.fail(kw.value, f"field {kw.arg!r} is given twice")
            if kw.arg not in names:
                self.fail(kw.value, f"{call.func.id} has no field {kw.arg!r}; its fields are "
                                    f"{', '.join(names)}")
            fields.append((kw.arg, self.value(kw.value)))
            nodes[kw.arg] = kw.value
        try:
            _check_structure(kind, fields)
        except _Problem as p:
            self.fail(self.locate(call, nodes, p.path), p.message)
        return GenotypeRecord(kind, tuple(fields), comments)

    @staticmethod
    def locate(call: ast.Call, nodes: dict[str, ast.AST], path: tuple) -> ast.AST:
        """The AST node a problem path points to (as deep as the literal goes)."""
        if not path or path[0] not in nodes:
            return call
        node = nodes[path[0]]
        for i in path[1:]:
            if i is None or not isinstance(node, (ast.List, ast.Tuple)) or i >= len(node.elts):
                break
            node = node.elts[i]
        return node


def _split_comments(text: str) -> tuple[tuple[str, ...], str, tuple[int, int] | None]:
    """Leading comment lines, the text with them blanked (line numbers kept), and the
    (line, columns) removed from the start of the first code line so that it parses."""
    lines = text.splitlines(keepends=True)
    comments = []
    for n, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            lines[n] = "\n"
        elif stripped:
            indent = len(line) - len(line.lstrip(" \t"))
            shift = None
            if indent:
                lines[n] = line[indent:]
                shift = (n + 1, indent)
            return tuple(comments), "".join(lines), shift
        else:
            lines[n] = "\n"
    return tuple(comments), "", None


def parse_genotype(text: str, source: str = "<string>") -> GenotypeRecord:
    """Read one genotype literal; nothing in the text is evaluated.

    Leading comment lines are kept in ``record.comments``. Errors name ``source:line:col``.
    """
    if not isinstance(text, str):
        raise GenotypeError(f"{source}: a genotype must be text, got {type(text).__name__}")
    if len(text) > MAX_GENOTYPE_CHARS:
        raise GenotypeError(f"{source}: holds {len(text)} characters, more than a genotype may "
                            f"({MAX_GENOTYPE_CHARS}; published ones hold under 10,000)")
    comments, body, shift = _split_comments(text)
    if not body.strip():
        raise GenotypeError(f"{source}: holds no genotype; write one Genotype(...), "
                            f"Genotype_nested(...) or Genotype_opt(...) literal")
    try:
        with warnings.catch_warnings():   # e.g. an odd escape in an op name: data, not code to lint
            warnings.simplefilter("ignore")
            tree = ast.parse(body, filename=source, mode="eval")
    except SyntaxError as e:
        line = e.lineno or 1
        col = max((e.offset or 1) - 1, 0)
        if shift and line == shift[0]:
            col += shift[1]
        raise GenotypeError(f"{source}:{line}:{col}: invalid genotype syntax ({e.msg}); "
                            f"write exactly one Genotype(...) literal") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise GenotypeError(f"{source}: cannot be read as a genotype ({e})") from None
    try:
        return _Parser(source, shift).record(tree, comments)
    except RecursionError:
        raise GenotypeError(f"{source}: the genotype is nested too deeply") from None


# ----------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        raise GenotypeError(f"cannot write {value!r} in a genotype")
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GenotypeError(f"cannot write the non-finite number {value!r} in a genotype")
        return repr(float(value))
    if isinstance(value, RangeLiteral):
        if value.step == 1:
            return f"range({value.start}, {value.stop})"
        return f"range({value.start}, {value.stop}, {value.step})"
    if isinstance(value, range):
        return _fmt(RangeLiteral(value.start, value.stop, value.step))
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, tuple):
        if len(value) == 1:
            return "(" + _fmt(value[0]) + ",)"
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    raise GenotypeError(f"cannot write a {type(value).__name__} in a genotype; use lists, "
                        f"tuples, strings, numbers and range(...)")


def format_genotype(record: GenotypeRecord) -> str:
    """Canonical text: comment lines, then the literal as Python's namedtuple repr writes
    it (fields in the stored order), then a newline."""
    if record.kind not in KIND_FIELDS:
        raise GenotypeError(f"{_ALLOWED}, found {record.kind!r}")
    out = []
    for comment in record.comments:
        for line in str(comment).splitlines() or [""]:
            line = line.strip()
            out.append(line if line.startswith("#") else ("# " + line).rstrip())
    body = ", ".join(f"{key}={_fmt(value)}" for key, value in record.fields)
    out.append(f"{_LITERAL_NAME.get(record.kind, record.kind)}({body})")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------

def read_genotype_file(path) -> GenotypeRecord:
    return parse_genotype(read_text(path, "genotype file", GenotypeError), str(path))


def write_genotype_file(path, record: GenotypeRecord) -> None:
    """Write the canonical text atomically: a temporary file in the same folder, then
    os.replace, so a reader never sees half a genotype."""
    text = format_genotype(record)
    parse_genotype(text, str(path))     # never write what could not be read back
    write_text_atomic(path, text)


def _names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.txt") if p.is_file())


def list_genotypes() -> list[str]:
    """Names of the cell genotypes shipped and written by searches (stems of genotypes/*.txt;
    the recurrent/ and multi_channel/ folders are not among them)."""
    return _names(GENOTYPES_DIR)


def list_recurrent_genotypes() -> list[str]:
    """Names of the recurrent genotypes (stems of genotypes/recurrent/*.txt)."""
    return _names(RECURRENT_GENOTYPES_DIR)


def _find(name_or_path: str, folder: Path) -> Path:
    """An existing file, else folder/NAME.txt; unknown names raise GenotypeError listing the closest."""
    text = str(name_or_path)
    given = Path(text)
    if given.is_file():
        return given
    name = given.name[:-4] if given.name.endswith(".txt") else given.name
    if name and given.parent == Path("."):
        candidate = folder / f"{name}.txt"
        if candidate.is_file():
            return candidate
    names = _names(folder)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    hint = (f"did you mean {', '.join(close)}?" if close
            else f"the {len(names)} known names are the .txt files in {folder}")
    raise GenotypeError(f"unknown genotype {text!r}: it is neither a file nor a name in "
                        f"{folder.relative_to(GENOTYPES_DIR.parent)}/; {hint}")


def genotype_path(name_or_path: str) -> Path:
    """'DARTS_V2' -> genotypes/DARTS_V2.txt; an existing file path, or a name ending in
    .txt, works too. Unknown names raise GenotypeError listing the closest names."""
    return _find(name_or_path, GENOTYPES_DIR)


def load_architecture(name_or_path: str) -> Architecture:
    """genotype_path + read_genotype_file + to_architecture (named after the file stem)."""
    path = genotype_path(name_or_path)
    record = read_genotype_file(path)
    return _architecture(record, path.stem, str(path))


# ----------------------------------------------------------------------------------------
# Conversion to the one architecture representation
# ----------------------------------------------------------------------------------------

def _int_tuple(value, what: str) -> tuple[int, ...]:
    if isinstance(value, range):
        value = RangeLiteral(value.start, value.stop, value.step)
    _check_int_seq(value, (), what)
    if isinstance(value, RangeLiteral):
        return tuple(value.to_range())
    return tuple(value)


def _edges(raw, arity: int | None, what: str) -> tuple[Edge, ...]:
    _check_edges(raw, (), (arity,) if arity else (2, 3), what)
    if raw and len(raw[0]) == 2:
        return tuple(Edge(op, 2 + k // 2, src) for k, (op, src) in enumerate(raw))
    return tuple(Edge(op, to, src) for op, to, src in raw)


def _nested_cell(edges: tuple[Edge, ...], what: str) -> CellGenes:
    if not edges:
        raise GenotypeError(f"{what} has no edges")
    for e in edges:
        if e.to_node < 2:
            raise GenotypeError(f"{what}: edge {tuple(e)} targets node {e.to_node}, but nodes "
                                f"0 and 1 are the cell inputs")
        if e.from_node == e.to_node:
            raise GenotypeError(f"{what}: edge {tuple(e)} connects node {e.to_node} to itself")
    return CellGenes(edges, tuple(dict.fromkeys(e.to_node for e in edges)))


def _classic_cell(raw, concat_raw, what: str) -> CellGenes:
    if len(raw) % 2:
        raise GenotypeError(f"{what} has {len(raw)} (op, from_node) edges; the classic form "
                            f"needs two per node")
    edges = _edges(raw, 2, what)
    if not edges:
        raise GenotypeError(f"{what} has no edges")
    for e in edges:
        if e.from_node >= e.to_node:
            raise GenotypeError(f"{what}: node {e.to_node} takes input from node {e.from_node}, "
                                f"which is not computed before it")
    concat = _int_tuple(concat_raw, what + "_concat")
    if not concat:
        raise GenotypeError(f"{what}_concat is empty; list the nodes the cell outputs")
    known = {e.to_node for e in edges}
    for n in concat:
        if n not in known:
            raise GenotypeError(f"{what}_concat names node {n}, which {what} does not compute "
                                f"(its nodes are {', '.join(map(str, sorted(known)))})")
    return CellGenes(edges, concat)


def to_architecture(record: GenotypeRecord, name: str) -> Architecture:
    """Convert any of the three forms into an Architecture (see the module docstring)."""
    return _architecture(record, name, f"genotype {name!r}")


def _architecture(record: GenotypeRecord, name: str, where: str) -> Architecture:
    _checked(record, where)
    try:
        return _convert(record, name)
    except GenotypeError as e:
        raise GenotypeError(f"{where}: {e}") from None


def _convert(record: GenotypeRecord, name: str) -> Architecture:
    kind = record.kind
    if kind == RECURRENT:
        raise GenotypeError("is a recurrent cell (for rnn/), not a cell genotype for the image networks")
    if kind == "Genotype":
        layout = record.get("layout")
        if layout not in (None, "cell"):
            raise GenotypeError(f"layout={layout!r} is not a cell genotype (sharpDARTS "
                                f"multi-channel results describe a path, not cells); use a "
                                f"genotype with cells")
        ops = "sharp" if "layout" in record.keys() else "darts"
        normal, reduce = record.get("normal"), record.get("reduce")
        arity = {len(e) for e in list(normal) + list(reduce)}
        if len(arity) > 1:
            raise GenotypeError("normal and reduce must both use (op, from_node) pairs or both "
                                "use (op, to_node, from_node) triples")
        if arity == {3}:
            # FairDARTS (op, to, from): evaluated by its DCOCell, i.e. nested node semantics;
            # FairDARTS ignores the written concat (a node may have no input at all).
            cells = (_nested_cell(_edges(normal, 3, "normal"), "normal"),
                     _nested_cell(_edges(reduce, 3, "reduce"), "reduce"))
            return Architecture(name, cells, None, None, True, ops)
        cells = (_classic_cell(normal, record.get("normal_concat"), "normal"),
                 _classic_cell(reduce, record.get("reduce_concat"), "reduce"))
        return Architecture(name, cells, None, None, False, ops)

    genes = record.get("genes")
    if not genes:
        raise GenotypeError("genes is empty; a per-cell genotype needs at least one gene")
    cells = tuple(_nested_cell(_edges(g, 3, f"gene {i}"), f"gene {i}") for i, g in enumerate(genes))
    reductions = _int_tuple(record.get("reductions"), "reductions")
    if kind == "Genotype_nested":
        layer_genes = tuple(range(len(cells)))
    else:
        layer_genes = _int_tuple(record.get("seq"), "seq")
        if not layer_genes:
            raise GenotypeError("seq is empty; give one gene index per layer")
        for layer, g in enumerate(layer_genes):
            if g >= len(cells):
                raise GenotypeError(f"seq[{layer}] = {g}, but there are only {len(cells)} "
                                    f"genes (indices 0 to {len(cells) - 1})")
    return Architecture(name, cells, layer_genes, reductions, True, "darts")


# ----------------------------------------------------------------------------------------
# Records for searches to write
# ----------------------------------------------------------------------------------------

def _concat_value(concat):
    if isinstance(concat, RangeLiteral):
        return concat
    if isinstance(concat, range):
        return RangeLiteral(concat.start, concat.stop, concat.step)
    return [int(n) for n in concat]


def _checked(record: GenotypeRecord, what: str) -> GenotypeRecord:
    """The record, if its structure is sound; else one sentence starting with `what` and the field path."""
    try:
        _check_structure(record.kind, record.fields)
    except _Problem as p:
        inside = _path_text(p.path)
        raise GenotypeError(f"{what}: {inside + ': ' if inside else ''}{p.message}") from None
    return record


def darts_record(normal, normal_concat, reduce, reduce_concat) -> GenotypeRecord:
    """Classic Genotype from lists of (op, from_node) pairs (or triples), e.g. a search's
    derived genotype; concat may be a list or a range."""
    def edges(cell):
        return [tuple(e) for e in cell]
    record = GenotypeRecord("Genotype", (
        ("normal", edges(normal)), ("normal_concat", _concat_value(normal_concat)),
        ("reduce", edges(reduce)), ("reduce_concat", _concat_value(reduce_concat)),
    ))
    return _checked(record, "darts_record")


def recurrent_record(steps, concat) -> GenotypeRecord:
    """DARTS recurrent Genotype from (op, from_state) steps, e.g. a recurrent search's result."""
    record = GenotypeRecord(RECURRENT, (("recurrent", [tuple(s) for s in steps]), ("concat", _concat_value(concat))))
    return _checked(record, "recurrent_record")


def to_recurrent(record: GenotypeRecord, name: str) -> RecurrentGenotype:
    """The steps and concat of a recurrent record; a cell genotype is refused."""
    return _recurrent(record, name, f"genotype {name!r}")


def _recurrent(record: GenotypeRecord, name: str, where: str) -> RecurrentGenotype:
    if record.kind != RECURRENT:
        raise GenotypeError(f"{where}: is a cell genotype ({record.kind}), not a recurrent cell "
                            f"Genotype(recurrent=[...], concat=...)")
    _checked(record, where)
    steps = tuple((op, source) for op, source in record.get("recurrent"))
    return RecurrentGenotype(name, steps, _int_tuple(record.get("concat"), "concat"))


def load_recurrent_genotype(name_or_path: str) -> RecurrentGenotype:
    """'DARTS_V2' -> genotypes/recurrent/DARTS_V2.txt (or a file path), read and checked."""
    path = _find(name_or_path, RECURRENT_GENOTYPES_DIR)
    return _recurrent(read_genotype_file(path), path.stem, str(path))


def nested_record(genes, concat, reductions) -> GenotypeRecord:
    """D-DARTS Genotype_nested from one list of (op, to_node, from_node) edges per cell."""
    record = GenotypeRecord("Genotype_nested", (
        ("genes", [[tuple(e) for e in gene] for gene in genes]),
        ("concat", _concat_value(concat)),
        ("reductions", _concat_value(reductions)),
    ))
    return _checked(record, "nested_record")
