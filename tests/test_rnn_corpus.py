"""Word-level corpora in the PTB layout, the offline pydoc corpus, batches and the unigram baseline."""
import math
import re
import sys

import pytest
import torch

from corpus import (EOS, UNK, Corpus, CorpusError, Dictionary, batchify, check_vocabulary, get_batch, load_corpus,
                    unigram_perplexity, write_pydoc_corpus)


def write_corpus(folder, train: str, valid: str, test: str):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def test_tokens_are_the_words_of_each_line_then_eos_numbered_by_first_appearance(tmp_path):
    folder = write_corpus(tmp_path / "c", " the cat sat \n the  dog\n", "a cat\n", "the bird\n")
    corpus = load_corpus(str(folder))
    assert corpus.dictionary.idx2word == [EOS, "the", "cat", "sat", "dog", "a", "bird"]
    words = corpus.dictionary.idx2word
    assert [words[i] for i in corpus.train] == ["the", "cat", "sat", EOS, "the", "dog", EOS]
    assert [words[i] for i in corpus.valid] == ["a", "cat", EOS] and corpus.test.tolist() == [1, 6, 0]


def test_a_missing_folder_or_file_says_which_files_go_where(tmp_path):
    with pytest.raises(CorpusError, match=r"there is no folder .*nowhere; a corpus folder holds train.txt, "
                                          r"valid.txt and test.txt.*--data pydoc"):
        load_corpus(str(tmp_path / "nowhere"))
    folder = write_corpus(tmp_path / "c", "a b\n", "a\n", "b\n")
    (folder / "valid.txt").unlink()
    with pytest.raises(CorpusError, match=r"lacks valid.txt; a corpus folder holds"):
        load_corpus(str(folder))


@pytest.mark.parametrize("text", ["", "\n\n   \n"])
def test_an_empty_split_is_one_sentence(tmp_path, text):
    folder = write_corpus(tmp_path / "c", "a b\n", "a\n", text)
    with pytest.raises(CorpusError, match=r"test.txt holds no words"):
        load_corpus(str(folder))


def test_text_that_is_not_utf8_is_one_sentence(tmp_path):
    folder = write_corpus(tmp_path / "c", "a b\n", "a\n", "b\n")
    (folder / "train.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(CorpusError, match=r"train.txt is not UTF-8 text"):
        load_corpus(str(folder))


def test_batchify_makes_columns_of_consecutive_tokens_and_get_batch_shifts_targets():
    data = torch.arange(23)
    batched = batchify(data, 4, "training split")
    assert batched.shape == (5, 4) and batched[:, 1].tolist() == [5, 6, 7, 8, 9]
    x, y = get_batch(batched, 1, 3)
    assert torch.equal(x, batched[1:4]) and torch.equal(y, batched[2:5])
    x, y = get_batch(batched, 3, 35)                       # the last batch is shorter
    assert x.shape[0] == 1 and torch.equal(y, batched[4:5])
    with pytest.raises(CorpusError, match="the test split has 7 tokens, too few for batches of 4 sequences"):
        batchify(torch.arange(7), 4, "test split")


def test_unigram_perplexity_is_add_one_smoothed_train_frequencies():
    dictionary = Dictionary([EOS, "a", "b", "c"])
    corpus = Corpus(None, dictionary, torch.tensor([1, 1, 1, 2, 0]), torch.tensor([1]), torch.tensor([1, 3]))
    p_a, p_c = 4 / 9, 1 / 9                                 # counts + 1: eos 2, a 4, b 2, c 1
    assert unigram_perplexity(corpus) == pytest.approx(math.exp(-(math.log(p_a) + math.log(p_c)) / 2))


def test_a_checkpoint_vocabulary_must_be_the_corpus_vocabulary(tmp_path):
    corpus = load_corpus(str(write_corpus(tmp_path / "c", "x y\n", "y\n", "x\n")))
    check_vocabulary(corpus, [EOS, "x", "y"], "m.pt")
    with pytest.raises(CorpusError, match=r"m.pt was trained on a vocabulary of 4 words, but .* has 3: give the --data"):
        check_vocabulary(corpus, [EOS, "x", "y", "z"], "m.pt")
    with pytest.raises(CorpusError, match=r"m.pt numbers its words differently .*word 1 is 'y' there, 'x' here"):
        check_vocabulary(corpus, [EOS, "y", "x"], "m.pt")


def test_the_pydoc_corpus_is_fixed_english_prose_in_the_ptb_layout(tmp_path):
    write_pydoc_corpus(tmp_path / "a")
    write_pydoc_corpus(tmp_path / "b")
    for name in ("train.txt", "valid.txt", "test.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sys.version.split()[0] in (tmp_path / "a" / "README.txt").read_text()
    corpus = load_corpus(str(tmp_path / "a"))
    sizes = [corpus.split(s).numel() for s in ("train", "valid", "test")]
    assert sizes[0] > 40_000 and all(0.07 < n / sum(sizes) < 0.13 for n in sizes[1:])
    train_words = set(corpus.train.tolist())
    assert set(corpus.valid.tolist()) <= train_words and set(corpus.test.tolist()) <= train_words
    text = (tmp_path / "a" / "train.txt").read_text()
    assert re.fullmatch(r"( [a-z']+| N| <unk>)+ \n", text.splitlines(keepends=True)[0])
    assert not re.search(r"[A-Z.,;:()\"]", text.replace("N ", "").replace("<unk>", ""))
    assert f" {UNK} " in text and " the " in text and " statement " in text
    assert not (tmp_path / ".a.tmp").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
