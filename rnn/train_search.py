"""Search a recurrent cell (DARTS's rnn/train_search.py), first or second order (--unrolled).

    python rnn/train_search.py                   # DARTS: first order on data/penn, 300 units, 50 epochs
    python rnn/train_search.py --unrolled        # second order
    python rnn/train_search.py --data pydoc ...  # offline (the README's quick demo)

Every training batch is computed in chunks of --small_batch_size sequences; before each chunk's
weight gradient, one architecture step (core/architect.py) on the validation split's rows at the
same position, as DARTS does. Both steps carry their own hidden state from batch to batch, one per
chunk: the weight step the training one, the architecture step the one its forward on the
validation rows returned (at the virtual weights w' in the second-order step, as DARTS does).

Writes logs/search/rnn-<save>-<timestamp>/: log.txt, command.txt, args.json, tensorboard/,
weights/epoch_NNN.npy (the softmax of the architecture weights) and checkpoint.pt after every epoch
(--resume continues exactly); at the end the DARTS parse of the architecture weights as
genotypes/recurrent/<genotype_name>.txt, which ``python rnn/train.py --arch <genotype_name>`` trains.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import engine_path  # noqa: F401  (core/ on the import path; first: OpenMP defaults before torch)

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

import cli
from architect import ArchConfig, Architect
from checkpoint import resume_arguments, save_checkpoint
from corpus import batchify, check_vocabulary, get_batch, load_corpus
from distributed import Dist, broadcast_object, process_group
from errors import UserError
from genotypes import RECURRENT_GENOTYPES_DIR, GenotypeRecord, format_genotype, write_genotype_file
from lm_flags import add_model_flags, add_training_flags, check_sizes, step_config
from lm_training import DIVERGENCE_ADVICE, detach, evaluate, perplexity, train_epoch
from metrics import RunningSum
from recurrent_model import Dropouts
from recurrent_search import SEARCH_PRIMITIVES, RNNModelSearch, language_model_objective
from run_dir import create_run_dir, record_invocation, setup_logger
from runtime import (DivergenceWatch, Precision, check_finite_weights, resolve_device, seed_epoch, seed_everything,
                     tune_runtime)
from sampling import mix_seed
from search_run import GENOTYPE_MARK, STOPPED, EpochRecord, check_genotype_name, run_epochs, write_result
from weight_report import WeightTable, log_tables, tensorboard_tables

GENOTYPE_OUTPUT_DIR = RECURRENT_GENOTYPES_DIR   # where the derived genotype is written (tests move it)
RESUME_OVERRIDABLE = ("device", "data", "resume", "stop_epoch", "dist_timeout", "log_interval", "genotype_name")
RESUME_REQUIRED = ("model", "optimizer", "architect", "scaler", "epoch", "elapsed", "vocabulary", "sizes")


SEARCH_DIVERGENCE_ADVICE = DIVERGENCE_ADVICE.replace("--lr or --clip", "--lr, --arch_lr or --clip")


class SearchError(UserError):
    """A genotype name the search cannot write, or batch sizes the search cell cannot train on."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.ArgumentParser(description="Search a recurrent cell (DARTS rnn/train_search.py).",
                           formatter_class=cli.HelpFormatter)
    add_model_flags(p, emsize=300, dropoute=0.0)
    add_training_flags(p, epochs=50, batch_size=256, wdecay=5e-7, seed=3, log_interval=50)
    p.add_argument("--unrolled", action="store_true", help="second-order architecture gradient (DARTS's unrolled)")
    p.add_argument("--arch_lr", type=cli.positive_float, default=3e-3, help="Adam learning rate of the architecture")
    p.add_argument("--arch_wdecay", type=cli.non_negative_float, default=1e-3,
                   help="Adam weight decay of the architecture")
    p.add_argument("--genotype_name", default=None,
                   help="write genotypes/recurrent/<name>.txt (default: the run folder's name)")
    args = p.parse_args(argv)
    check_sizes(p, args)
    return args


def genotype_file(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise SearchError(f"--genotype_name {name!r} must be a plain file name (letters, digits, _ - .)")
    return GENOTYPE_OUTPUT_DIR / f"{name}.txt"


@dataclasses.dataclass
class RecurrentResult:
    """The DARTS parse of the architecture weights: logged each epoch, written at the end."""
    record: GenotypeRecord
    label = "genotype"

    def text(self) -> str:
        return format_genotype(self.record).strip()

    def collapse(self) -> dict[str, float]:
        return {}

    def write(self, path: Path, origin: str, run_dir: Path) -> None:
        comments = (origin, f"run: {run_dir.name}; parse: darts")
        write_genotype_file(path, dataclasses.replace(self.record, comments=comments))

    def train_command(self, name: str, dataset: str) -> str:
        return f"python rnn/train.py --arch {name} --data {dataset}"


def weight_table(model: RNNModelSearch) -> WeightTable:
    """The softmax of the architecture weights, one row per edge (s_j -> s_i)."""
    steps = model.rnns[0].n_steps
    rows = [f"s{j}->s{i + 1}" for i in range(steps) for j in range(i + 1)]
    return WeightTable(model.probabilities(), rows, list(SEARCH_PRIMITIVES))


class ArchitectureSteps:
    """The architecture side of one epoch: before each chunk's weight step, an architect step on the
    same chunk of the validation rows at the training batch's position (modulo their length, DARTS's
    `i % (search_data.size(0) - 1)`), its hidden state carried per chunk."""

    def __init__(self, architect: Architect, search_data: torch.Tensor, optimizer: torch.optim.Optimizer,
                 bptt: int, small: int, watch: DivergenceWatch):
        self.architect, self.search_data, self.optimizer = architect, search_data, optimizer
        self.bptt, self.small, self.watch = bptt, small, watch
        model = architect.model
        self.hidden = [model.init_hidden(small) for _ in range(search_data.shape[1] // small)]
        self.loss = RunningSum(search_data.device)

    def __call__(self, start: int, chunk: int, data: torch.Tensor, targets: torch.Tensor,
                 hidden: list[torch.Tensor]) -> None:
        rows = slice(chunk * self.small, (chunk + 1) * self.small)
        search_x, search_y = get_batch(self.search_data, start % (self.search_data.shape[0] - 1), self.bptt)
        stats = self.architect.step((data, targets, detach(hidden)),
                                    (search_x[:, rows], search_y[:, rows], detach(self.hidden[chunk])), self.optimizer)
        self.hidden[chunk] = stats["output"]
        self.watch.observe(stats["arch_loss"])
        self.loss.add(stats["arch_loss"] * search_y[:, rows].numel(), search_y[:, rows].numel())


def main(argv: list[str] | None = None) -> None:
    args, state, run_dir = resume_arguments(parse_args(argv), parse_args([]), "lm_search", RESUME_OVERRIDABLE,
                                            RESUME_REQUIRED)
    with process_group(resolve_device(args.device), args.dist_timeout) as (ctx, device):
        tune_runtime(device)
        search(args, state, run_dir, ctx, device)


def search(args: argparse.Namespace, state: dict | None, run_dir: Path | None, ctx: Dist,
           device: torch.device) -> RNNModelSearch:
    """Run (or continue) a search; returns this rank's search network at the end."""
    rank_batch = ctx.per_rank_batch(args.batch_size)
    cfg = dataclasses.replace(step_config(args, rank_batch), length_sd=0.0)    # DARTS's search: bptt or bptt / 2
    if cfg.small_batch_size < 2:
        raise SearchError("the search cell's BatchNorm needs at least 2 sequences computed at once, and this run "
                          "computes 1 (--small_batch_size, by default a process's whole --batch_size): raise it")
    precision = Precision(device, args.amp)
    corpus = load_corpus(args.data)
    if state is not None:
        check_vocabulary(corpus, state["vocabulary"], args.resume)
    columns = slice(ctx.rank * rank_batch, (ctx.rank + 1) * rank_batch)
    train_data = batchify(corpus.train, args.batch_size, "training split")[:, columns].to(device)
    search_data = batchify(corpus.valid, args.batch_size, "validation split")[:, columns].to(device)
    val_data = batchify(corpus.valid, args.eval_batch_size, "validation split")[:, ctx.rank::ctx.world_size].to(device)

    seed_everything(args.seed)
    dropouts = Dropouts(args.dropout, args.dropouth, args.dropoutx, args.dropouti, args.dropoute)
    model = RNNModelSearch(len(corpus.dictionary), args.emsize, args.nhid, dropouts).to(device)
    optimizer = torch.optim.SGD(model.weight_parameters(), lr=args.lr, weight_decay=args.wdecay)
    architect = Architect(model, ArchConfig(learning_rate=args.arch_lr, weight_decay=args.arch_wdecay,
                                            betas=(0.9, 0.999), unrolled=args.unrolled, network_momentum=0.0,
                                            network_weight_decay=args.wdecay, virtual_step_clip=args.clip),
                          precision, objective=language_model_objective)
    start, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        architect.load_state_dict(state["architect"])
        precision.scaler.load_state_dict(state["scaler"])
        start, elapsed = (args.epochs if state.get("stopped_early") else state["epoch"]), state["elapsed"]
    else:
        if args.genotype_name is not None:
            check_genotype_name(genotype_file(args.genotype_name), None)
        if ctx.is_main:
            run_dir = create_run_dir("search", f"rnn-{args.save}")
            args.genotype_name = args.genotype_name or run_dir.name
    run_dir, args.genotype_name = broadcast_object((run_dir, args.genotype_name))
    if state is not None and args.genotype_name != state["args"].get("genotype_name"):
        check_genotype_name(genotype_file(args.genotype_name), run_dir.name)
    if ctx.is_main:
        record_invocation(run_dir, vars(args), device)
        (run_dir / "weights").mkdir(exist_ok=True)
    log = setup_logger(run_dir, "rnn_search", enabled=ctx.is_main)
    log.info("run folder %s", run_dir)
    log.info("args %s", json.dumps(vars(args), sort_keys=True))
    log.info("corpus %s: %d words; train %d, valid %d tokens | device %s%s | %s order", corpus.folder,
             len(corpus.dictionary), corpus.train.numel(), corpus.valid.numel(), device,
             f" | amp {precision.dtype}" if precision.enabled else "", "second" if args.unrolled else "first")
    log.info("param size: %d (network weights; architecture %d)", sum(p.numel() for p in model.weight_parameters()),
             sum(a.numel() for a in model.arch_parameters()))
    if start:
        log.info("resumed from epoch %d", start)
    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start + 1) if ctx.is_main else None
    meta = {"vocabulary": corpus.dictionary.idx2word, "sizes": [args.emsize, args.nhid]}

    def run_epoch(epoch: int) -> EpochRecord:
        nonlocal elapsed
        started = time.time()
        seed_epoch(args.seed, epoch, ctx.rank)
        rng = np.random.default_rng(mix_seed(args.seed, epoch))
        watch = DivergenceWatch(device, epoch + 1, SEARCH_DIVERGENCE_ADVICE)
        steps = ArchitectureSteps(architect, search_data, optimizer, args.bptt, cfg.small_batch_size, watch)
        train_loss = train_epoch(model, train_data, optimizer, precision, cfg, epoch=epoch + 1, rng=rng, log=log,
                                 arch_step=steps, advice=SEARCH_DIVERGENCE_ADVICE)
        watch.check()
        check_finite_weights(model, epoch + 1, SEARCH_DIVERGENCE_ADVICE)
        valid_loss = evaluate(model, val_data, args.bptt, precision, "valid")
        elapsed += time.time() - started
        scalars = {"train_loss": train_loss, "train_ppl": perplexity(train_loss), "arch_loss": steps.loss.mean(),
                   "valid_loss": valid_loss, "valid_ppl": perplexity(valid_loss)}
        log.info("| end of epoch %3d | time %.1fs | train ppl %.2f | architecture-step ppl %.2f | valid ppl %.2f",
                 epoch + 1, time.time() - started, scalars["train_ppl"], perplexity(scalars["arch_loss"]),
                 scalars["valid_ppl"])
        return EpochRecord(epoch + 1, True, scalars, {"recurrent": weight_table(model)},
                           RecurrentResult(model.genotype()))

    def report(record: EpochRecord) -> None:
        if not ctx.is_main:
            return
        np.save(run_dir / "weights" / f"epoch_{record.epoch:03d}.npy", record.tables["recurrent"].values)
        log_tables(log, record.tables)
        tensorboard_tables(writer, record.tables, record.epoch)
        for key, value in record.scalars.items():
            writer.add_scalar(key, value, record.epoch)
        writer.add_text("genotype", record.result.text(), record.epoch)
        writer.flush()
        log.info("genotype = %s", record.result.text())

    def save(epochs_done: int, stopped_early: str | None) -> None:
        if ctx.is_main:
            save_checkpoint({"kind": "lm_search", **meta, "epoch": epochs_done, "args": vars(args),
                             "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "architect": architect.state_dict(), "scaler": precision.scaler.state_dict(),
                             "elapsed": elapsed, "stopped_early": stopped_early}, run_dir / "checkpoint.pt")

    model.train()
    ended = run_epochs(start, args.epochs, stop_epoch=args.stop_epoch, run_epoch=run_epoch, rules=[], report=report,
                       save=save, log=log, run_dir=run_dir)
    if writer is not None:
        writer.close()
    if ended != STOPPED and ctx.is_main:
        origin = f"{GENOTYPE_MARK}: DARTS recurrent search ({'second' if args.unrolled else 'first'} order) on " \
                 f"{corpus.folder.name}, seed {args.seed}"
        write_result(RecurrentResult(model.genotype()), genotype_file(args.genotype_name), run_dir, origin, args.data,
                     log)
    return model


if __name__ == "__main__":
    cli.run(main)
