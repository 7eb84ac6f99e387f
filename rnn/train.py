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

import engine_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

import cli
from checkpoint import load_checkpoint, resume_arguments, save_checkpoint
from corpus import Corpus, batchify, check_vocabulary, load_corpus, unigram_perplexity
from distributed import Dist, broadcast_object, process_group
from lm_flags import add_model_flags, add_training_flags, check_sizes, step_config
from lm_training import (DIVERGENCE_ADVICE, averaged_weights, evaluate, make_optimizer, perplexity, should_switch,
                         train_epoch)
from metrics import count_parameters
from recurrent_model import Dropouts, LanguageModelSpec, resolve_genotype
from run_dir import create_run_dir, record_invocation, setup_logger, write_json
from runtime import Precision, check_finite_weights, resolve_device, seed_epoch, seed_everything, tune_runtime
from sampling import mix_seed

RESUME_OVERRIDABLE = ("device", "data", "resume", "stop_epoch", "dist_timeout", "log_interval")
RESUME_REQUIRED = ("model", "optimizer_kind", "optimizer", "scaler", "epoch", "history", "best", "elapsed",
                   "vocabulary", "spec")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Train a recurrent cell as a language model (DARTS rnn/train.py).",
                           formatter_class=cli.HelpFormatter)
    p.add_argument("--arch", default="DARTS",
                   help="recurrent genotype: a name in genotypes/recurrent/ (DARTS is DARTS_V2) or a genotype file")
    add_model_flags(p, emsize=850, dropoute=0.1)
    add_training_flags(p, epochs=8000, batch_size=64, wdecay=8e-7, seed=1267, log_interval=200)
    p.add_argument("--test_batch_size", type=cli.positive_int, default=1,
                   help="sequences of the final test of model_best.pt")
    args = p.parse_args(argv)
    check_sizes(p, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), parse_args([]), "lm_train", RESUME_OVERRIDABLE,
                                            RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        tune_runtime(device)
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
