"""Word-level corpora in the layout of DARTS and AWD-LSTM, batched for truncated backpropagation.

A corpus is a folder with ``train.txt``, ``valid.txt`` and ``test.txt``; the tokens of a file
are the words of each line (split on whitespace) followed by ``<eos>``. The vocabulary numbers
the words in the order they first appear in train, then valid, then test, as DARTS's
``data.Corpus`` does, so a model trained by DARTS on the same files finds its word ids.

``--data pydoc`` is an offline corpus of English documentation prose that ships with every
Python: the standard library's ``pydoc_data.topics``, turned into that layout by
`write_pydoc_corpus` (rules in its docstring) under ``data/pydoc`` on first use.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from errors import UserError
from paths import REPO_ROOT

SPLITS = ("train", "valid", "test")
EOS, UNK = "<eos>", "<unk>"
PYDOC = "pydoc"
PYDOC_DIR = REPO_ROOT / "data" / PYDOC
LAYOUT_HINT = ("a corpus folder holds train.txt, valid.txt and test.txt, one sentence per line (Penn Treebank: "
               "data/penn from AWD-LSTM's getdata.sh; WikiText-2: data/wikitext-2 with wiki.train.tokens, "
               "wiki.valid.tokens and wiki.test.tokens renamed so), or use --data pydoc for the offline corpus")


class CorpusError(UserError):
    """A corpus that cannot be read or is too small for the batches asked of it."""


class Dictionary:
    """Words and their ids, numbered in order of first appearance."""

    def __init__(self, words: list[str] | None = None):
        self.idx2word: list[str] = []
        self.word2idx: dict[str, int] = {}
        for word in words or ():
            self.add(word)

    def add(self, word: str) -> int:
        index = self.word2idx.get(word)
        if index is None:
            index = self.word2idx[word] = len(self.idx2word)
            self.idx2word.append(word)
        return index

    def __len__(self) -> int:
        return len(self.idx2word)


@dataclass
class Corpus:
    folder: Path
    dictionary: Dictionary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    def split(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def _read_split(path: Path, dictionary: Dictionary) -> torch.Tensor:
    try:
        with open(path, encoding="utf-8") as f:
            ids = [dictionary.add(word) for line in f for word in (*line.split(), EOS)]
    except OSError as e:
        raise CorpusError(f"{path} cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    tokens = torch.tensor(ids, dtype=torch.long)
    if not (tokens != dictionary.word2idx[EOS]).any():
        raise CorpusError(f"{path} holds no words; {LAYOUT_HINT}")
    return tokens


def corpus_folder(data: str) -> Path:
    """The folder `--data` names; 'pydoc' is the offline corpus, written on first use."""
    if data == PYDOC:
        if not PYDOC_DIR.is_dir():
            write_pydoc_corpus(PYDOC_DIR)
        return PYDOC_DIR
    return Path(data)


def load_corpus(data: str) -> Corpus:
    folder = corpus_folder(data)
    if not folder.is_dir():
        raise CorpusError(f"--data {data}: there is no folder {folder}; {LAYOUT_HINT}")
    missing = [f"{name}.txt" for name in SPLITS if not (folder / f"{name}.txt").is_file()]
    if missing:
        raise CorpusError(f"--data {data}: {folder} lacks {', '.join(missing)}; {LAYOUT_HINT}")
    dictionary = Dictionary([EOS])
    splits = [_read_split(folder / f"{name}.txt", dictionary) for name in SPLITS]
    return Corpus(folder, dictionary, *splits)


def check_vocabulary(corpus: Corpus, vocabulary: list[str], source: str) -> None:
    """The corpus must number its words as the checkpoint's model did."""
    words = corpus.dictionary.idx2word
    if words == vocabulary:
        return
    if len(words) != len(vocabulary):
        raise CorpusError(f"{source} was trained on a vocabulary of {len(vocabulary)} words, but {corpus.folder} "
                          f"has {len(words)}: give the --data it was trained on")
    i = next(i for i, (a, b) in enumerate(zip(words, vocabulary)) if a != b)
    raise CorpusError(f"{source} numbers its words differently from {corpus.folder} (word {i} is "
                      f"{vocabulary[i]!r} there, {words[i]!r} here): give the --data it was trained on")


# ------------------------------------------------------------------------------------------ batches

def batchify(data: torch.Tensor, batch_size: int, what: str) -> torch.Tensor:
    """(tokens,) -> (steps, batch_size): column b holds the b-th consecutive slice; the rest is dropped."""
    steps = data.numel() // batch_size
    if steps < 2:
        raise CorpusError(f"the {what} has {data.numel()} tokens, too few for batches of {batch_size} sequences "
                          f"(each needs at least 2 tokens); use a smaller batch size or a larger corpus")
    return data[:steps * batch_size].view(batch_size, steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows i..i+seq_len-1 as input and the rows one later as targets (shorter at the end of `source`)."""
    seq_len = min(seq_len, source.shape[0] - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len]


def unigram_perplexity(corpus: Corpus, split: str = "test") -> float:
    """The baseline a language model must beat: word frequencies of train (add-one smoothed over
    the vocabulary) scored on `split`."""
    counts = torch.bincount(corpus.train, minlength=len(corpus.dictionary)).double() + 1
    log_p = (counts / counts.sum()).log()
    return math.exp(-log_p[corpus.split(split)].mean().item())


# ------------------------------------------------------------------------------------------ pydoc corpus

PYDOC_BLOCK = 20        # sentences per block; of every 10 blocks the 9th is valid, the 10th test
PYDOC_MIN_COUNT = 2     # rarer training words become <unk>
_UNDERLINE = re.compile(r"\s*([*=~^-])\1*\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)*|[0-9]+")


def pydoc_sentences() -> list[list[str]]:
    """The sentences of pydoc_data.topics, in the order of the sorted topic names, tokenized."""
    from pydoc_data.topics import topics
    sentences = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            if ">>>" in paragraph or "::=" in paragraph:
                continue
            lines = [line.strip() for line in paragraph.splitlines() if not _UNDERLINE.fullmatch(line)]
            text = " ".join(lines).lower().replace("\u2019", "'")
            for sentence in _SENTENCE_END.split(text):
                words = ["N" if token.isdigit() else token for token in _TOKEN.findall(sentence)]
                if words:
                    sentences.append(words)
    return sentences


def write_pydoc_corpus(folder: Path) -> None:
    """Write the offline corpus in the PTB layout, as Mikolov's PTB is made: lower case, words only.

    Rules (fixed, so a Python version gives one corpus): the topics are read in sorted order;
    paragraphs (blank-line separated) holding '>>>' (interactive examples) or '::=' (grammar) are
    left out; heading underlines are dropped; a paragraph's lines are joined and split into
    sentences after '.', '!' or '?' followed by space; a sentence's tokens are its lower-case
    words (letters with inner apostrophes) and numbers, each number written 'N'. The sentences
    are cut into blocks of 20: of every 10 blocks the 9th goes to valid, the 10th to test, the
    others to train. Words seen fewer than 2 times in train become <unk> everywhere. The text
    comes from the running Python's pydoc_data, so other Python versions give other (similar)
    corpora; README.txt in the folder says which version wrote it.
    """
    sentences = pydoc_sentences()
    parts: dict[str, list[list[str]]] = {name: [] for name in SPLITS}
    for i, sentence in enumerate(sentences):
        block = (i // PYDOC_BLOCK) % 10
        parts["valid" if block == 8 else "test" if block == 9 else "train"].append(sentence)
    counts = Counter(word for sentence in parts["train"] for word in sentence)
    known = {word for word, n in counts.items() if n >= PYDOC_MIN_COUNT}
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, part in parts.items():
        lines = (" ".join(word if word in known else UNK for word in sentence) for sentence in part)
        (tmp / f"{name}.txt").write_text("".join(f" {line} \n" for line in lines), encoding="utf-8")
    (tmp / "README.txt").write_text(f"Written by rnn/corpus.py write_pydoc_corpus from pydoc_data.topics of Python "
                                    f"{sys.version.split()[0]}; the rules are in its docstring.\n", encoding="utf-8")
    try:
        os.rename(tmp, folder)          # atomic: a reader sees no folder or the whole corpus
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not folder.is_dir():
            raise
