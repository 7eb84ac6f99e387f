"""Draw a recurrent cell (a genotype in genotypes/recurrent/) with graphviz, as DARTS's rnn/visualize.py.

    python rnn/visualize.py DARTS_V2                 # from the repository root
    cd rnn && python visualize.py ENAS --format png

x_{t} and h_{t-1} make state 0; step i computes state i + 1 from the state it names, with its
activation on the edge; h_{t} is the mean of the concatenated states. Writes `<NAME>_recurrent`.
"""
from __future__ import annotations

import engine_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import graphviz

import cli
from diagrams import INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR, draw_command, new_graph, writable
from genotypes import RecurrentGenotype, load_recurrent_genotype

INPUT_NAMES = ("x_{t}", "h_{t-1}")
OUTPUT_NAME = "h_{t}"


def recurrent_graph(genotype: RecurrentGenotype) -> graphviz.Digraph:
    graph = new_graph(f"{genotype.name}: recurrent cell")
    for name in INPUT_NAMES:
        graph.node(name, fillcolor=INPUT_COLOR)
        graph.edge(name, "0", fillcolor="gray")
    for state in range(len(genotype.steps) + 1):
        graph.node(str(state), fillcolor=NODE_COLOR)
    for i, (op, source) in enumerate(genotype.steps):
        graph.edge(str(source), str(i + 1), label=writable(op), fillcolor="gray")
    graph.node(OUTPUT_NAME, fillcolor=OUTPUT_COLOR)
    for state in genotype.concat:
        graph.edge(str(state), OUTPUT_NAME, fillcolor="gray")
    return graph


def main(argv: list[str] | None = None) -> int:
    def diagrams(name: str) -> list[tuple[str, graphviz.Digraph]]:
        genotype = load_recurrent_genotype(name)
        return [(f"{genotype.name}_recurrent", recurrent_graph(genotype))]

    return draw_command(argv, __doc__, "recurrent genotype name (a file in genotypes/recurrent/) or path to one",
                        diagrams)


if __name__ == "__main__":
    cli.run(main)
