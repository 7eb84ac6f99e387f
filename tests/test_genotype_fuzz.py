"""Fuzz the genotype reader: seeded mutations of the shipped genotype files either parse (and then
convert and round-trip) or raise GenotypeError; never another exception, never a hang, never code run."""
import random
import re
import signal
import time
from contextlib import contextmanager

import pytest

import genotypes as G
from paths import GENOTYPES_DIR
from shipped_genotypes import SHIPPED, SHIPPED_RECURRENT

QUICK_CASES = 2_400
SLOW_CASES = 30_000
CASE_SECONDS = 1.0      # measured: a case takes about a millisecond
HANG_SECONDS = 10       # a case still running then is a hang

BASES = ([(GENOTYPES_DIR / f"{name}.txt").read_text(encoding="utf-8") for name in SHIPPED]
         + [(G.RECURRENT_GENOTYPES_DIR / f"{name}.txt").read_text(encoding="utf-8") for name in SHIPPED_RECURRENT])

# Strings, numbers, names and single characters: the pieces the token mutations move around.
TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|-?\d+(?:\.\d+)?(?:e-?\d+)?|\w+|\S")
NUMBERS = ["0", "1", "-1", "2", "7", "255", "-0", "1000000000", "10" * 20, "9" * 5000, "1e400", "-1e400", "1e-400",
           "0x10", "1_000", "3.5", "nan", "inf", "2j", "True", "None", "...", "1" * 200_000]
CHARACTERS = list("[](){},:;=+-*/%<>!~^&|@.'\"#\\ \n\t\r") + [
    "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\u202e", "\ufeff", "\ud800", "\udfff", "é", "ß",
    "\u0661", "\U0001f600", "\u00a0", "ｇ", "ℌ"]
STRINGS = ["''", "'\\ud800'", "'\ud800'", "'sep\\x00conv'", "'\U0001f600'", "'" + "a" * 300_000 + "'",
           "b'bytes'", "u'unicode'", "r'raw\\n'", "'''triple'''", "f'{1}'"]


def payloads(marker: str) -> list[str]:
    """Expressions that, if anything evaluated them, would create `marker`."""
    return [
        f"__import__('os').system('touch {marker}')",
        f"__import__('pathlib').Path({marker!r}).touch()",
        f"open({marker!r}, 'w')",
        f"exec(\"open({marker!r}, 'w')\")",
        f"eval(\"open({marker!r}, 'w')\")",
        f"(lambda: open({marker!r}, 'w'))()",
        f"[open({marker!r}, 'w') for _ in [0]]",
        f"f\"{{open({marker!r}, 'w')}}\"",
        f"(m := open({marker!r}, 'w'))",
        f"Genotype(**{{'normal': open({marker!r}, 'w')}})",
        f"range(open({marker!r}, 'w').write('x'))",
        f"().__class__.__base__.__subclasses__()[0]({marker!r})",
        f"__builtins__['open']({marker!r}, 'w')",
        f"range(*[open({marker!r}, 'w')])",
    ]


def mutate(text: str, rng: random.Random, marker: str) -> str:
    """One to three random edits of characters, tokens, numbers, brackets, strings or code."""
    for _ in range(rng.randint(1, 3)):
        tokens = [m.span() for m in TOKEN.finditer(text)] or [(0, 0)]
        a, b = rng.choice(tokens)
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randint(1, 6))
        kind = rng.randrange(11)
        if kind == 0:       # delete characters
            text = text[:i] + text[j:]
        elif kind == 1:     # insert a character
            text = text[:i] + rng.choice(CHARACTERS) + text[i:]
        elif kind == 2:     # swap two characters
            k = rng.randrange(len(text))
            if i < len(text):
                chars = list(text)
                chars[i], chars[k] = chars[k], chars[i]
                text = "".join(chars)
        elif kind == 3:     # duplicate a stretch
            text = text[:j] + text[i:j] * rng.choice([1, 2, 50]) + text[j:]
        elif kind == 4:     # delete a token
            text = text[:a] + text[b:]
        elif kind == 5:     # duplicate a token, or swap it with another
            c, d = rng.choice(tokens)
            if rng.random() < 0.5 or (c, d) == (a, b):
                text = text[:b] + text[a:b] + text[b:]
            else:
                (a, b), (c, d) = sorted([(a, b), (c, d)])
                if b <= c:
                    text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
        elif kind == 6:     # change a number
            numbers = [m.span() for m in re.finditer(r"-?\d+", text)]
            if numbers:
                a, b = rng.choice(numbers)
                text = text[:a] + rng.choice(NUMBERS) + text[b:]
        elif kind == 7:     # an op name or string replaced
            strings = [m.span() for m in re.finditer(r"'[^']*'", text)]
            if strings:
                a, b = rng.choice(strings)
                text = text[:a] + rng.choice(STRINGS) + text[b:]
        elif kind == 8:     # a token replaced by code
            text = text[:a] + rng.choice(payloads(marker)) + text[b:]
        elif kind == 9:     # a bracket opened or closed somewhere
            text = text[:i] + rng.choice("[]()") * rng.choice([1, 1, 2, 300]) + text[i:]
        else:               # a whole field's value replaced by code
            fields = [m.end() for m in re.finditer(r"\b\w+=", text)]
            if fields:
                start = rng.choice(fields)
                end = text.find("=", start)
                end = text.rfind(",", start, end) if end > 0 else len(text) - 1
                text = text[:start] + rng.choice(payloads(marker)) + text[max(end, start):]
    return text


@contextmanager
def hang_guard(seconds: int, case: int):
    def interrupt(signum, frame):
        raise TimeoutError(f"case {case} still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_and_convert(text: str, case: int) -> bool:
    """Parse, convert and round-trip one text; True if it was accepted, False if refused in one sentence."""
    try:
        record = G.parse_genotype(text, f"case{case}.txt")
        if record.kind == G.RECURRENT:
            G.to_recurrent(record, "fuzz")
        else:
            G.to_architecture(record, "fuzz")
    except G.GenotypeError as e:
        assert str(e).startswith(f"case{case}.txt") or str(e).startswith("genotype 'fuzz'"), str(e)
        return False
    again = G.parse_genotype(G.format_genotype(record), "again")
    assert again.kind == record.kind and again.fields == record.fields
    return True


def fuzz(cases: int, tmp_path) -> None:
    marker = str(tmp_path / "marker")
    accepted, slowest = 0, 0.0
    for case in range(cases):
        rng = random.Random(case)
        text = mutate(BASES[case % len(BASES)], rng, marker)
        started = time.perf_counter()
        with hang_guard(HANG_SECONDS, case):
            try:
                accepted += read_and_convert(text, case)
            except Exception as e:  # anything but a GenotypeError fails, with the case to replay
                pytest.fail(f"case {case}: {type(e).__name__}: {e} for {text[:300]!r}")
        took = time.perf_counter() - started
        slowest = max(slowest, took)
        assert took < CASE_SECONDS, f"case {case} took {took:.2f} s"
    assert not (tmp_path / "marker").exists(), "a genotype text ran code"
    # The mutations keep some texts valid and break most: both paths are exercised.
    assert 0.02 * cases < accepted < 0.9 * cases, accepted


@pytest.mark.filterwarnings("ignore::ResourceWarning")   # the payloads leave their files open
def test_payloads_would_create_the_marker_if_evaluated(tmp_path):
    sentinel = tmp_path / "sentinel"
    for payload in payloads(str(sentinel))[2:5]:
        eval(compile(payload, "payload", "eval"))   # the test proves its payloads are live; the parser must not
        assert sentinel.exists()
        sentinel.unlink()


@pytest.mark.filterwarnings("error")   # a warning from the parser is a failure too
def test_mutated_genotypes_parse_or_are_refused_in_one_sentence(tmp_path):
    fuzz(QUICK_CASES, tmp_path)


@pytest.mark.slow
@pytest.mark.filterwarnings("error")
def test_many_more_mutated_genotypes(tmp_path):
    fuzz(SLOW_CASES, tmp_path)
