"""The command-line flags DARTS's rnn/train.py and rnn/train_search.py share, with their defaults and
checks, and the step configuration they make."""
from __future__ import annotations

import argparse

import cli
from distributed import DEFAULT_TIMEOUT_S, DistributedError
from lm_training import StepConfig
from paths import REPO_ROOT


def add_model_flags(p: argparse.ArgumentParser, *, emsize: int, dropoute: float) -> None:
    """The sizes and dropouts DARTS's train.py and train_search.py share (with their defaults)."""
    p.add_argument("--data", default=str(REPO_ROOT / "data" / "penn"),
                   help="corpus folder with train.txt, valid.txt and test.txt, or 'pydoc' for the offline corpus")
    p.add_argument("--emsize", type=cli.positive_int, default=emsize, help="size of word embeddings")
    p.add_argument("--nhid", type=cli.positive_int, default=emsize, help="hidden units of the cell")
    p.add_argument("--nhidlast", type=cli.positive_int, default=emsize,
                   help="hidden units of the last layer (DARTS: equal to --nhid and --emsize)")
    p.add_argument("--dropout", type=cli.probability, default=0.75, help="locked dropout on the cell output")
    p.add_argument("--dropouth", type=cli.probability, default=0.25, help="dropout on the hidden state in the cell")
    p.add_argument("--dropoutx", type=cli.probability, default=0.75, help="dropout on the cell input")
    p.add_argument("--dropouti", type=cli.probability, default=0.2, help="locked dropout on the embedded words")
    p.add_argument("--dropoute", type=cli.probability, default=dropoute, help="dropout of whole words from the embedding")


def add_training_flags(p: argparse.ArgumentParser, *, epochs: int, batch_size: int, wdecay: float, seed: int,
                       log_interval: int) -> None:
    """The optimisation flags DARTS's two scripts share (with the defaults that differ as arguments)."""
    p.add_argument("--epochs", type=cli.positive_int, default=epochs, help="upper epoch limit")
    p.add_argument("--batch_size", type=cli.positive_int, default=batch_size,
                   help="sequences per batch (the global batch)")
    p.add_argument("--wdecay", type=cli.non_negative_float, default=wdecay, help="weight decay of the network weights")
    p.add_argument("--seed", type=cli.seed, default=seed)
    p.add_argument("--nonmono", type=cli.positive_int, default=5,
                   help="train.py switches to averaged SGD once validation is worse than the best but the last this "
                        "many epochs (the search never switches, as DARTS's)")
    p.add_argument("--lr", type=cli.positive_float, default=20.0, help="initial learning rate (SGD, then ASGD)")
    p.add_argument("--clip", type=cli.positive_float, default=0.25, help="gradient norm clipping")
    p.add_argument("--bptt", type=cli.positive_int, default=35, help="mean sequence length of a batch")
    p.add_argument("--max_seq_len_delta", type=cli.non_negative_int, default=20,
                   help="a batch is at most --bptt plus this long")
    p.add_argument("--alpha", type=cli.non_negative_float, default=0.0,
                   help="activation regularization: L2 of the dropped cell output (0: none)")
    p.add_argument("--beta", type=cli.non_negative_float, default=1e-3,
                   help="temporal activation regularization: L2 of the change of the cell output (0: none)")
    p.add_argument("--small_batch_size", type=cli.positive_int, default=None,
                   help="sequences computed at once; a batch is computed in chunks of this many whose gradients "
                        "add up (default: the whole batch of a process)")
    p.add_argument("--log_interval", "--log-interval", type=cli.non_negative_int, default=log_interval,
                   help="batches between log lines (0: none)")
    p.add_argument("--eval_batch_size", type=cli.positive_int, default=10,
                   help="sequences of the validation batches (and of train.py's per-epoch test)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 if supported, else fp16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dist_timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for the others in a collective before the run stops")
    p.add_argument("--save", default="EXP", help="run name; the run folder is logs/<kind>/<save>-<timestamp>")
    p.add_argument("--resume", default=None, help="checkpoint.pt (or its run folder) to continue exactly")
    p.add_argument("--stop_epoch", type=cli.non_negative_int, default=None,
                   help="end this process after that epoch, checkpoint kept (e.g. a job time limit); --resume continues")


def check_sizes(p: cli.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.emsize == args.nhid == args.nhidlast:
        p.error(f"--emsize {args.emsize}, --nhid {args.nhid} and --nhidlast {args.nhidlast} must be equal: the DARTS "
                f"cell keeps the embedding width and the decoder is tied to the embedding")
    if args.small_batch_size is not None and args.batch_size % args.small_batch_size:
        p.error(f"--batch_size {args.batch_size} must be a multiple of --small_batch_size {args.small_batch_size}")


def step_config(args: argparse.Namespace, rank_batch: int) -> StepConfig:
    small = args.small_batch_size or rank_batch
    if rank_batch % small:
        raise DistributedError(f"each process computes {rank_batch} sequences of a batch, not a multiple of "
                               f"--small_batch_size {small}; choose sizes that divide evenly")
    return StepConfig(args.bptt, args.max_seq_len_delta, args.clip, args.alpha, args.beta, small, args.log_interval)
