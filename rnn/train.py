"""Train a recurrent cell as a word-level language model (DARTS's rnn/train.py).

    python rnn/train.py                                   # DARTS: DARTS_V2 on data/penn, 850 units
    python rnn/train.py --data data/wikitext-2 --dropouth 0.15 --emsize 700 --nhidlast 700 --nhid 700 --wdecay 5e-7
    python rnn/train.py --data pydoc --emsize 200 --nhid 200 --nhidlast 200 --epochs 6 --batch_size 16 \\
        --dropout 0.3 --dropoutx 0.3 --dropouth 0.1 --dropouti 0.1 --dropoute 0   # offline, on a CPU

    torchrun --nproc_per_node=2 rnn/train.py ...          # --batch_size is the global batch

Writes logs/eval/<save>-<timestamp>/: log.txt, command.txt, args.json, tensorboard/, checkpoint.pt
(resumable with --resume), model_best.pt (the weights of the best validation perplexity, averaged
once ASGD runs) and results.json (with the test perplexity of model_best.pt and the unigram
baseline of the same corpus).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

import engine_path  # noqa: F401  (puts core/ on the import path)
import cli
from checkpoint import load_checkpoint, resume_arguments, save_checkpoint
from corpus import Corpus, batchify, check_vocabulary, load_corpus, unigram_perplexity
from distributed import DEFAULT_TIMEOUT_S, Dist, DistributedError, broadcast_object, process_group
from lm_training import (DIVERGENCE_ADVICE, StepConfig, averaged_weights, evaluate, make_optimizer, perplexity,
                         should_switch, train_epoch)
from metrics import count_parameters
from paths import REPO_ROOT
from recurrent_model import Dropouts, LanguageModelSpec, resolve_genotype
from run_dir import create_run_dir, record_invocation, setup_logger, write_json
from runtime import Precision, check_finite_weights, resolve_device, seed_epoch, seed_everything
from sampling import mix_seed

RESUME_OVERRIDABLE = ("device", "data", "resume", "stop_epoch", "dist_timeout", "log_interval")
RESUME_REQUIRED = ("model", "optimizer_kind", "optimizer", "scaler", "epoch", "history", "best", "elapsed",
                   "vocabulary", "spec")


def add_model_flags(p: argparse.ArgumentParser, *, emsize: int) -> None:
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


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """The optimisation flags DARTS's two scripts share."""
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
    p.add_argument("--log_interval", "--log-interval", type=cli.non_negative_int, default=200,
                   help="batches between log lines (0: none)")
    p.add_argument("--eval_batch_size", type=cli.positive_int, default=10,
                   help="sequences of the validation batches (and of the per-epoch test)")
    p.add_argument("--test_batch_size", type=cli.positive_int, default=1,
                   help="sequences of the final test of model_best.pt")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 if supported, else fp16)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--dist_timeout", type=cli.positive_float, default=DEFAULT_TIMEOUT_S,
                   help="under torchrun: seconds a process waits for the others in a collective before the run stops")
    p.add_argument("--save", default="EXP", help="run name; the run folder is logs/<kind>/<save>-<timestamp>")
    p.add_argument("--resume", default=None, help="checkpoint.pt (or its run folder) to continue exactly")
    p.add_argument("--stop_epoch", type=cli.non_negative_int, default=None,
                   help="end this process after that epoch, checkpoint kept (e.g. a job time limit); --resume continues")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Train a recurrent cell as a language model (DARTS rnn/train.py).",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("--arch", default="DARTS",
                   help="recurrent genotype: a name in genotypes/recurrent/ (DARTS is DARTS_V2) or a genotype file")
    add_model_flags(p, emsize=850)
    p.add_argument("--dropoute", type=cli.probability, default=0.1, help="dropout of whole words from the embedding")
    add_training_flags(p)
    p.add_argument("--epochs", type=cli.positive_int, default=8000, help="upper epoch limit")
    p.add_argument("--batch_size", type=cli.positive_int, default=64, help="sequences per batch (the global batch)")
    p.add_argument("--wdecay", type=cli.non_negative_float, default=8e-7, help="weight decay")
    p.add_argument("--nonmono", type=cli.positive_int, default=5,
                   help="switch to averaged SGD once validation is worse than the best but the last this many epochs")
    p.add_argument("--seed", type=cli.seed, default=1267)
    args = p.parse_args(argv)
    check_sizes(p, args)
    return args


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


def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), parse_args([]), "lm_train", RESUME_OVERRIDABLE,
                                            RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        train(args, state, run_dir, ctx, device)


def train(args: argparse.Namespace, state: dict | None, run_dir: Path | None, ctx: Dist, device: torch.device) -> None:
    rank_batch = ctx.per_rank_batch(args.batch_size)
    cfg = step_config(args, rank_batch)
    precision = Precision(device, args.amp)
    corpus = load_corpus(args.data)
    columns = slice(ctx.rank * rank_batch, (ctx.rank + 1) * rank_batch)
    train_data = batchify(corpus.train, args.batch_size, "training split")[:, columns].to(device)
    val_data = batchify(corpus.valid, args.eval_batch_size, "validation split")[:, ctx.rank::ctx.world_size].to(device)
    test_data = batchify(corpus.test, args.eval_batch_size, "test split")[:, ctx.rank::ctx.world_size].to(device)

    if state is None:
        genotype = resolve_genotype(args.arch)
        dropouts = Dropouts(args.dropout, args.dropouth, args.dropoutx, args.dropouti, args.dropoute)
        spec = LanguageModelSpec.from_genotype(genotype, len(corpus.dictionary), args.emsize, args.nhid,
                                               args.nhidlast, dropouts)
    else:
        spec = LanguageModelSpec.from_dict(state["spec"])
        check_vocabulary(corpus, state["vocabulary"], args.resume)
    seed_everything(args.seed)
    model = spec.build().to(device)
    optimizer_kind = "sgd"
    start_epoch, history, best, elapsed = 0, [], {}, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer_kind = state["optimizer_kind"]
        start_epoch, history, best, elapsed = state["epoch"], state["history"], state["best"], state["elapsed"]
    optimizer = make_optimizer(optimizer_kind, model, args.lr, args.wdecay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        precision.scaler.load_state_dict(state["scaler"])
    elif ctx.is_main:
        run_dir = create_run_dir("eval", args.save)
    run_dir = broadcast_object(run_dir)
    if ctx.is_main:
        record_invocation(run_dir, vars(args), device)
    log = setup_logger(run_dir, "rnn_train", enabled=ctx.is_main)
    params = count_parameters(model)
    unigram = unigram_perplexity(corpus, "test")
    log.info("run folder %s", run_dir)
    log.info("args %s", json.dumps(vars(args), sort_keys=True))
    log.info("%s | genotype %s | device %s%s", spec.describe(), list(spec.steps), device,
             f" | amp {precision.dtype}" if precision.enabled else "")
    if ctx.enabled:
        log.info("%d processes, %d sequences each per batch", ctx.world_size, rank_batch)
    log.info("corpus %s: %d words; train %d, valid %d, test %d tokens; unigram test perplexity %.2f", corpus.folder,
             len(corpus.dictionary), corpus.train.numel(), corpus.valid.numel(), corpus.test.numel(), unigram)
    log.info("model total parameters: %d", params)
    if start_epoch:
        log.info("resumed from epoch %d (%s)", start_epoch, optimizer_kind)

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_epoch + 1) if ctx.is_main else None
    meta = {"spec": spec.to_dict(), "vocabulary": corpus.dictionary.idx2word, "corpus": str(corpus.folder)}
    epoch = start_epoch
    for epoch in range(start_epoch, args.epochs):
        if args.stop_epoch is not None and epoch >= args.stop_epoch:
            log.info("stopping after epoch %d as asked; continue with --resume %s", epoch, run_dir)
            break
        started = time.time()
        seed_epoch(args.seed, epoch, ctx.rank)
        rng = np.random.default_rng(mix_seed(args.seed, epoch))
        train_loss = train_epoch(model, train_data, optimizer, precision, cfg, epoch=epoch + 1, rng=rng, log=log)
        check_finite_weights(model, epoch + 1, DIVERGENCE_ADVICE)
        averaging = isinstance(optimizer, torch.optim.ASGD)
        with averaged_weights(model, optimizer):
            valid_loss = evaluate(model, val_data, args.bptt, precision, "valid")
            test_loss = evaluate(model, test_data, args.bptt, precision, "test")
            scores = {"train_loss": train_loss, "valid_loss": valid_loss, "test_loss": test_loss,
                      "train_ppl": perplexity(train_loss), "valid_ppl": perplexity(valid_loss),
                      "test_ppl": perplexity(test_loss), "averaged": averaging}
            is_best = not best or valid_loss < best["valid_loss"]
            if is_best:
                best = {"epoch": epoch + 1, **scores}
                if ctx.is_main:
                    save_checkpoint({"kind": "lm_model", **meta, "epoch": epoch + 1, "scores": scores,
                                     "model": model.state_dict()}, run_dir / "model_best.pt")
        elapsed += time.time() - started
        log.info("| end of epoch %3d | time %.1fs | %s | train ppl %.2f | valid ppl %.2f | test ppl %.2f%s", epoch + 1,
                 time.time() - started, "ASGD, averaged weights" if averaging else "SGD", scores["train_ppl"],
                 scores["valid_ppl"], scores["test_ppl"], " | best" if is_best else "")
        if not averaging:
            if should_switch(history, valid_loss, args.nonmono):
                log.info("switching to averaged SGD: validation loss %.4f is worse than the best before the last %d "
                         "epoch(s), %.4f", valid_loss, args.nonmono, min(history[:-args.nonmono]))
                optimizer, optimizer_kind = make_optimizer("asgd", model, args.lr, args.wdecay), "asgd"
            history.append(valid_loss)
        if ctx.is_main:
            for key, value in scores.items():
                writer.add_scalar(key, float(value), epoch + 1)
            save_checkpoint({"kind": "lm_train", **meta, "epoch": epoch + 1, "model": model.state_dict(),
                             "optimizer_kind": optimizer_kind, "optimizer": optimizer.state_dict(),
                             "scaler": precision.scaler.state_dict(), "history": history, "best": best,
                             "elapsed": elapsed, "args": vars(args)}, run_dir / "checkpoint.pt")
    else:
        epoch = args.epochs
    if writer is not None:
        writer.close()
    if epoch == args.epochs and best:
        final_test(args, run_dir, ctx, device, model, corpus, precision, best, params, unigram, elapsed, log)


def final_test(args: argparse.Namespace, run_dir: Path, ctx: Dist, device: torch.device, model, corpus: Corpus,
               precision: Precision, best: dict, params: int, unigram: float, elapsed: float, log) -> None:
    """DARTS's end of training: model_best.pt on the test split, in batches of --test_batch_size, on rank 0
    (the only one sure to see the run folder; the others add nothing to the sum)."""
    state = load_checkpoint(run_dir / "model_best.pt", map_location=device) if ctx.is_main else None
    if ctx.is_main:
        model.load_state_dict(state["model"])
    test_data = batchify(corpus.test, args.test_batch_size, "test split")[:, :args.test_batch_size * ctx.is_main]
    test_loss = evaluate(model, test_data.to(device), args.bptt, precision, "final test")
    log.info("=" * 89)
    log.info("| end of training | model_best.pt (epoch %d, valid ppl %.2f) | test loss %.2f | test ppl %.2f | "
             "unigram test ppl %.2f", best["epoch"], best["valid_ppl"], test_loss, perplexity(test_loss), unigram)
    log.info("=" * 89)
    if ctx.is_main:
        write_json(run_dir / "results.json", {
            "arch": state["spec"]["arch_name"], "corpus": str(corpus.folder),
            "params": params, "epochs": args.epochs, "best": best, "test_loss": test_loss,
            "test_ppl": perplexity(test_loss), "test_batch_size": args.test_batch_size,
            "unigram_test_ppl": unigram, "wall_seconds": elapsed})


if __name__ == "__main__":
    cli.run(main)
