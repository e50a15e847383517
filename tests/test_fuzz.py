"""Fuzzing: random text and token-level mutations of the examples through ``load`` and the CLI.

Only :class:`PdeError` may escape; its message names file:line:col when it has a position and the
CLI exits 2 without a traceback.  2,000 cases in CI, 100,000 in the slow-marked run.  A case that
takes longer than the guard (10 s in CI, where the machine may be loaded; 2 s in the slow run) is
reported as a hang.
"""
from __future__ import annotations

import random
import re
import signal
import time
from pathlib import Path

import pytest

import pde2net
from pde2net import cli
from pde2net.errors import PdeError

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.pde"))
TOKEN_RE = re.compile(r"\s+|#[^\n]*|\d+\.?\d*(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|\*\*|.", re.S)
VOCAB = (
    "pde param field diffusivity flux equation grid size boundary stencil scheme dt dx dxx dxxxx dy "
    "grad div laplace norm exp log sqrt abs tanh sin cos atan min max explicit fed fsi implicit "
    "multigrid neumann periodic dirichlet forward backward central tau steps cycles cycle_length "
    "tau_max solver cg jacobi iterations levels pre post update lambda class exec eval __import__ "
    "__x u x y s s2 g phi N NX NY h hx hy 0 1 -1 2 0.5 1e-3 1e999 10^10^10 9^9^9 1e-400 "
    "( ) [ ] , = + - * / ^ ** @ # \n \t а ℓ \x00 \u200b 0x10 1_000 .5 5. 1e 0/0 (-1)^0.5"
).split(" ") + ["\n", "\t", " ", "((((((((((", "))))))))))", "exp(exp(exp(exp(exp(1)))))"]


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def mutate(text: str, rng: random.Random) -> str:
    toks = TOKEN_RE.findall(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(toks)) if toks else 0
        if op == 0 and toks:
            del toks[i]
        elif op == 1:
            toks.insert(i, rng.choice(VOCAB))
        elif op == 2 and toks:
            toks[i] = rng.choice(VOCAB)
        elif op == 3 and toks:
            toks.insert(i, toks[i])
        elif op == 4 and len(toks) > 1:
            j = rng.randrange(len(toks))
            toks[i], toks[j] = toks[j], toks[i]
        else:
            toks.insert(i, rng.choice(VOCAB) * rng.randint(2, 40))
    return "".join(toks)


def random_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice(VOCAB) + rng.choice(" \n(,") for _ in range(rng.randint(0, 40)))
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000), 10]))
                   for _ in range(rng.randint(0, 200)))


def cases(count: int, seed: int):
    rng = random.Random(seed)
    texts = [p.read_text() for p in EXAMPLES]
    for k in range(count):
        yield k, (mutate(rng.choice(texts), rng) if k % 5 else random_text(rng))


def check_load(text: str, path: Path, guard: float) -> str:
    """Compiles the text through ``load``: a Program or a well-formed PdeError, within the guard."""
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, guard)
    try:
        pde2net.load(path)
        return "ok"
    except PdeError as err:
        msg = err.format()
        assert "error:" in msg and "Traceback" not in msg
        if err.pos is not None:
            assert msg.startswith(f"{path}:{err.pos.line}:{err.pos.col}: error: "), msg
        if err.expected is not None:
            assert "expected: " in msg
        return "error"
    except Hang:
        raise AssertionError(f"load took more than {guard} s on:\n{text!r}") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_fuzz(count: int, seed: int, guard: float, tmp_path: Path) -> dict:
    seen = {"ok": 0, "error": 0}
    path = tmp_path / "fuzz.pde"
    slowest = 0.0
    for _, text in cases(count, seed):
        t0 = time.perf_counter()
        seen[check_load(text, path, guard)] += 1
        slowest = max(slowest, time.perf_counter() - t0)
    seen["slowest"] = slowest
    return seen


def test_fuzz_load(tmp_path):
    seen = run_fuzz(2000, seed=1, guard=10.0, tmp_path=tmp_path)
    # the mutations must exercise both outcomes, or the fuzzer tests nothing
    assert seen["ok"] > 50 and seen["error"] > 1000, seen


def test_fuzz_cli_exit_2_with_position(tmp_path, capsys):
    """Through the CLI (``check``, in-process): exit 2 and file:line:col for bad specs."""
    path = tmp_path / "bad.pde"
    done = 0
    for _, text in cases(400, seed=2):
        try:
            pde2net.compile_text(text, str(path))
            continue  # a valid mutant: its check runs sympy, which test_fuzz_load covers
        except PdeError as err:
            pos = err.pos
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        rc = cli.main(["check", str(path)])
        err_text = capsys.readouterr().err
        assert rc == 2, text
        assert "Traceback" not in err_text and "internal error" not in err_text
        if pos is not None:
            assert err_text.startswith(f"{path}:{pos.line}:{pos.col}: error: "), err_text
        done += 1
    assert done > 200


def test_cli_reports_invalid_utf8_and_missing_files(tmp_path, capsys):
    path = tmp_path / "latin1.pde"
    path.write_bytes(b"pde x\nparam k = 1 # caf\xe9\n")
    assert cli.main(["check", str(path)]) == 2
    assert f"{path}:2:1: error: the file is not valid UTF-8" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "missing.pde")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.slow
def test_fuzz_load_100k(tmp_path):
    seen = run_fuzz(100_000, seed=7, guard=2.0, tmp_path=tmp_path)
    assert seen["slowest"] < 2.0 and seen["ok"] > 1000
