"""Turn DARTS's published language model (ptb_model.pt: a whole module pickled by PyTorch 0.3)
into a state_dict and a genotype file, without running any code the file names.

    python rnn/convert_darts_model.py ptb_model.pt                 # writes ptb_model_state_dict.pt and
                                                                   # ptb_model_state_dict.genotype.txt
    python rnn/evaluate_model.py --model_path ptb_model_state_dict.pt \\
        --arch ptb_model_state_dict.genotype.txt --data data/penn   # DARTS's test.py

The file is read by rnn/legacy_pickle.py: the classes it names become inert stubs, so only its
tensors and the genotype stored in its cell come out. The vocabulary is not in the file: the
evaluation needs the corpus it was trained on (DARTS numbers the words of data/penn in order of
first appearance, as rnn/corpus.py does).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import engine_path  # noqa: F401  (puts core/ on the import path)
import cli
from checkpoint import CheckpointError, save_checkpoint
from genotypes import (GenotypeError, format_genotype, list_recurrent_genotypes, load_recurrent_genotype,
                       recurrent_record, to_recurrent, write_genotype_file)
from legacy_pickle import Stub, find_attribute, module_tensors, read_legacy_module

REQUIRED = ("encoder.weight", "rnns.0._W0", "decoder.weight", "decoder.bias")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Convert DARTS's pickled RNNModel (ptb_model.pt) into a state_dict and a "
                                       "genotype file, without running its code.", formatter_class=cli.HelpFormatter)
    p.add_argument("model_path", help="the whole-module checkpoint DARTS published (PyTorch 0.3, legacy format)")
    p.add_argument("--out", default=None, help="state_dict to write (default: <model_path stem>_state_dict.pt beside it)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    source = Path(args.model_path)
    out = Path(args.out) if args.out else source.with_name(f"{source.stem}_state_dict.pt")
    root = read_legacy_module(source)
    tensors = module_tensors(root)
    missing = [key for key in REQUIRED if key not in tensors]
    if missing:
        raise CheckpointError(f"{source} holds a pickled {root.pickled_name} without {', '.join(missing)}, so it is "
                              f"not a DARTS RNNModel")
    genotype = find_attribute(root, "genotype")
    if not (isinstance(genotype, Stub) and len(genotype.args) == 2):
        raise CheckpointError(f"{source} holds no DARTS genotype (Genotype(recurrent, concat)) in its cell")
    try:
        record = recurrent_record(*genotype.args)
        cell = to_recurrent(record, out.stem)
    except (GenotypeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: the genotype in its cell cannot be read ({e})") from None
    genotype_file = out.with_name(f"{out.stem}.genotype.txt")
    save_checkpoint(tensors, out)
    write_genotype_file(genotype_file, record)
    shipped = [name for name in list_recurrent_genotypes()
               if (load_recurrent_genotype(name).steps, load_recurrent_genotype(name).concat) == (cell.steps, cell.concat)]
    print(f"{len(tensors)} tensors, {sum(t.numel() for k, t in tensors.items() if k != 'decoder.weight')} parameters "
          f"(decoder tied to encoder) -> {out}")
    print(f"genotype -> {genotype_file}{' (the cell of ' + ', '.join(shipped) + ')' if shipped else ''}:")
    print(format_genotype(record).strip())


if __name__ == "__main__":
    cli.run(main)
