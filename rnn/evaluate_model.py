"""Perplexity of a language-model checkpoint on a split of a corpus (DARTS's rnn/test.py).

    python rnn/evaluate_model.py --model_path logs/eval/EXP-<time>/model_best.pt --data data/penn
    python rnn/evaluate_model.py --arch DARTS_V2 --model_path state_dict.pt    # a plain DARTS RNNModel state_dict

Our checkpoints carry their genotype, sizes and vocabulary. A plain state_dict with DARTS's
parameter names needs --arch; its sizes are read from its weights, and its vocabulary must be
that of --data (DARTS numbers the words of train.txt, valid.txt and test.txt in order of first
appearance, as rnn/corpus.py does). As DARTS's test.py, the default is the test split in
batches of 1 sequence.
"""
from __future__ import annotations

import argparse

import engine_path  # noqa: F401  (puts core/ on the import path)
import cli
from checkpoint import CheckpointError, load_checkpoint, load_weights, model_file, model_state_dict
from corpus import CorpusError, batchify, check_vocabulary, load_corpus
from lm_training import evaluate, perplexity
from metrics import count_parameters
from paths import REPO_ROOT
from recurrent_model import Dropouts, LanguageModelSpec, resolve_genotype
from runtime import Precision, resolve_device, tune_runtime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Perplexity of a language-model checkpoint (DARTS rnn/test.py).",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("--model_path", required=True, type=model_file,
                   help="checkpoint file (ours, or a plain DARTS RNNModel state_dict), or a run folder (its "
                        "model_best.pt)")
    p.add_argument("--arch", default=None,
                   help="recurrent genotype name or file (default: the one stored in the checkpoint)")
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "penn"),
                   help="corpus folder with train.txt, valid.txt and test.txt, or 'pydoc'")
    p.add_argument("--split", default="test", choices=("valid", "test"))
    p.add_argument("--batch_size", type=cli.positive_int, default=1, help="sequences evaluated side by side")
    p.add_argument("--bptt", type=cli.positive_int, default=35, help="rows per evaluation batch")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def resolve_spec(args: argparse.Namespace, state: dict, weights: dict, words: int) -> LanguageModelSpec:
    """The stored spec, or --arch with the sizes of the weights."""
    if isinstance(state.get("spec"), dict) and args.arch is None:
        try:
            return LanguageModelSpec.from_dict(state["spec"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{args.model_path} holds a 'spec' this version cannot read ({type(e).__name__}: "
                                  f"{e}): it was not written by rnn/train.py") from None
    if args.arch is None:
        raise CheckpointError(f"{args.model_path} does not say which genotype it holds: pass --arch")
    encoder = weights.get("encoder.weight")
    if encoder is None or encoder.dim() != 2:
        raise CheckpointError(f"{args.model_path} has no 2-d encoder.weight, so it is not a DARTS RNNModel state_dict")
    ntoken, emsize = encoder.shape
    if ntoken != words:
        raise CorpusError(f"{args.model_path} was trained on a vocabulary of {ntoken} words, but {args.data} has "
                          f"{words}: give the --data it was trained on")
    return LanguageModelSpec.from_genotype(resolve_genotype(args.arch), ntoken, emsize, emsize, emsize, Dropouts())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    tune_runtime(device)
    state = load_checkpoint(args.model_path)
    if state.get("kind") in ("model", "train", "search"):
        raise CheckpointError(f"{args.model_path} holds an image network: evaluate it with cnn/evaluate_model.py")
    weights = model_state_dict(state)
    corpus = load_corpus(args.data)
    if isinstance(state.get("vocabulary"), list):
        check_vocabulary(corpus, state["vocabulary"], args.model_path)
    spec = resolve_spec(args, state, weights, len(corpus.dictionary))
    model = spec.build()
    load_weights(model, weights, args.model_path, hint="check --arch, or that the file holds a DARTS RNNModel")
    model.to(device)
    data = batchify(corpus.split(args.split), args.batch_size, f"{args.split} split").to(device)
    loss = evaluate(model, data, args.bptt, Precision(device, args.amp), args.split)
    print(f"{spec.describe()} | model total parameters: {count_parameters(model)}")
    print(f"| {args.split} loss {loss:.2f} | {args.split} ppl {perplexity(loss):.2f} | "
          f"{data.numel() - data.shape[1]} tokens predicted in batches of {args.batch_size}")


if __name__ == "__main__":
    cli.run(main)
