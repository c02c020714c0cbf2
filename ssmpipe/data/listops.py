"""ListOps (LRA; SPEC 000 and 001): evaluate a nested list expression, 10 classes.

Expressions are LRA's: operators MIN, MAX, MED (median, rounded down), SM (sum mod 10) over
digits 0..9, nested up to `max_depth` levels with 2..`max_args` arguments per operator. In
LRA's TSV files (`Source\\tTarget`, header row) an expression is written with parentheses,
e.g. `( ( ( [MAX 2 ) 9 ) ] )` for MAX(2, 9) = 9.

Tokens (16, task.vocab is unused; the mapping of the paper's reference code): parentheses are
stripped, which leaves the prefix form `[MAX 2 9 ]`, still evaluable since each operator
opens with its token and closes with `]`:
    digits 0..9 -> 0..9, [MIN -> 10, [MAX -> 11, [MED -> 12, [SM -> 13, ] -> 14, pad -> 15.
Sequences longer than seq_len keep their first seq_len tokens; shorter ones are LEFT-padded
(pad tokens first), so the last step is the expression's end, which `pooling: last` reads.
Label: the expression's value, one per sequence.

Two sources:
- `task.path` unset: generated here with LRA's generator (same tree distribution: a node below
  max_depth is an operator with probability 0.25, else a digit), seeded by task.seed.
  Expressions are kept when their token count lies in (seq_len - length_window, seq_len], so
  none is truncated (the paper's reference data uses T ± 5: length_window 10); all are
  distinct across train and test, as in LRA. n_train / n_test expressions.
- `task.path` a folder holding LRA's `basic_train.tsv` and `basic_test.tsv` (`basic_val.tsv`
  is not read): every row of both files; n_train / n_test, max_depth, max_args and
  length_window are unused.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS = (MIN, MAX, MED, SUM_MOD)
VALUE_P = 0.25  # LRA: a node (above max_depth) is an operator w.p. VALUE_P
TOKENS = tuple(str(d) for d in range(10)) + OPERATORS + (END, "<pad>")
TOKEN_ID = {t: i for i, t in enumerate(TOKENS)}
PAD = TOKEN_ID["<pad>"]
VOCAB = len(TOKENS)  # 16
FILES = {"train": "basic_train.tsv", "test": "basic_test.tsv"}


def load(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    """The ListOps data set: read from task.path when set, else generated."""
    return read(task["path"], seq_len) if task.get("path") else generate(task, seq_len)


def generate(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    n_train, n_test = task["n_train"], task["n_test"]
    trees = generate_trees(
        task["seed"], n_train + n_test, seq_len, task["length_window"], task["max_depth"], task["max_args"]
    )
    x = pad_left([to_tokens(to_string(t)) for t in trees], seq_len)
    y = np.array([to_value(t) for t in trees], dtype=np.int64)
    return {"x_train": x[:n_train], "y_train": y[:n_train], "x_test": x[n_train:], "y_test": y[n_train:]}


def read(path: str | Path, seq_len: int) -> dict[str, np.ndarray]:
    """LRA's TSV files from a folder: x (n seq_len) tokens, y (n,) labels."""
    problem = path_problem(path)
    if problem:
        raise FileNotFoundError(f"task.path = {str(path)!r}: {problem}")
    out = {}
    for split, name in FILES.items():
        sources, targets = read_tsv(Path(path) / name)
        out[f"x_{split}"] = pad_left(
            [to_tokens(s, where=f"{Path(path) / name}, row {i + 1}") for i, s in enumerate(sources)], seq_len
        )
        out[f"y_{split}"] = np.array(targets, dtype=np.int64)
    return out


def path_problem(path: str | Path) -> str | None:
    """Why `path` is not a ListOps folder, or None when it is."""
    path = Path(path)
    if not path.is_dir():
        return "no such folder (ListOps reads LRA's basic_train.tsv and basic_test.tsv from a folder)"
    missing = [name for name in FILES.values() if not (path / name).is_file()]
    if missing:
        return f"the folder has no {' and no '.join(missing)} (LRA's ListOps files)"
    for name in FILES.values():  # the header only: rows are checked as they are read
        try:
            with open(path / name, newline="", encoding="utf-8") as f:
                first = next((r for r in csv.reader(f, delimiter="\t") if r), [])
        except (OSError, UnicodeDecodeError) as e:
            return f"{name} cannot be read as text ({type(e).__name__})"
        if first[:2] != ["Source", "Target"]:
            return f"{name} is not an LRA ListOps file (its first row must be Source<TAB>Target)"
    return None


# --- expressions -------------------------------------------------------------
# A tree is LRA's nested pair: a digit is an int; an operator over v0..vk is
# ((((op, v0), v1), ..., vk), END), which to_string writes with LRA's parentheses.


def generate_trees(
    seed: int, n: int, seq_len: int, length_window: int, max_depth: int = 10, max_args: int = 10
) -> list:
    """n distinct trees whose token count lies in (seq_len - length_window, seq_len]."""
    rng = random.Random(seed)
    lo = seq_len - length_window
    seen: set = set()
    trees = []
    draws = repeats = 0
    while len(trees) < n:
        draws += 1
        if repeats > 1000 + 20 * n or (draws > 1_000_000 and not trees):
            raise ValueError(
                f"listops: {draws - 1} draws gave only {len(trees)} distinct expressions of "
                f"{max(lo + 1, 1)}..{seq_len} tokens (depth ≤ {max_depth}, ≤ {max_args} arguments), "
                f"{n} needed: raise seq_len or task.length_window, or lower n_train + n_test"
            )
        tree, length = generate_tree(rng, 1, max_depth, max_args, seq_len)
        if tree is None or length <= lo:
            continue
        if tree in seen:
            repeats += 1
        else:
            seen.add(tree)
            trees.append(tree)
    return trees


def generate_tree(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: float = float("inf")):
    """LRA's generate_tree -> (tree, token count); (None, count) as soon as the count passes `budget`.

    Stopping early only skips trees that would be rejected as too long anyway.
    """
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        return rng.choice(range(10)), 1
    length = 2  # the operator and END
    values = []
    for _ in range(rng.randint(2, max_args)):
        sub, sub_length = generate_tree(rng, depth + 1, max_depth, max_args, budget - length)
        length += sub_length
        if sub is None or length > budget:
            return None, length
        values.append(sub)
    t = (rng.choice(OPERATORS), values[0])
    for v in values[1:]:
        t = (t, v)
    return (t, END), length


def to_string(t) -> str:
    """LRA's Source text of a tree, with its parentheses."""
    if isinstance(t, (str, int)):
        return str(t)
    return "( " + to_string(t[0]) + " " + to_string(t[1]) + " )"


def to_value(t):
    """The value of a tree (LRA's to_value: an operator gathers its arguments, END applies it)."""
    if not isinstance(t, tuple):
        return t
    left, right = to_value(t[0]), to_value(t[1])
    if isinstance(left, str):  # an operator: first argument
        return left, [right]
    if right == END:
        return apply(*left)
    return left[0], left[1] + [right]  # one more argument


def apply(op: str, args: list[int]) -> int:
    if op == MIN:
        return min(args)
    if op == MAX:
        return max(args)
    if op == MED:
        return int(np.median(args))
    return sum(args) % 10


def to_tokens(source: str, where: str = "") -> list[int]:
    """Token ids of a Source text: whitespace-separated words, parentheses dropped."""
    try:
        return [TOKEN_ID[w] for w in source.split() if w not in ("(", ")")]
    except KeyError as e:
        raise ValueError(
            f"{where or 'listops'}: unknown token {e.args[0]!r}; expected digits, "
            f"{', '.join(OPERATORS)}, {END} and parentheses"
        ) from None


def pad_left(seqs: list[list[int]], seq_len: int, pad: int = PAD) -> np.ndarray:
    """(n seq_len) int64: each sequence cut to its first seq_len tokens, then left-padded with `pad`."""
    out = np.full((len(seqs), seq_len), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[:seq_len]
        if s:
            out[i, seq_len - len(s) :] = s
    return out


# --- LRA's TSV files ---------------------------------------------------------


def read_tsv(path: str | Path) -> tuple[list[str], list[int]]:
    """Sources and targets of one LRA TSV file (header `Source\\tTarget`)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if r]
    if not rows or rows[0][:2] != ["Source", "Target"]:
        raise ValueError(f"{path}: not an LRA ListOps file (first row must be Source<TAB>Target)")
    try:
        return [r[0] for r in rows[1:]], [int(r[1]) for r in rows[1:]]
    except (IndexError, ValueError):
        raise ValueError(f"{path}: every row needs a Source and an integer Target") from None


def write_tsv(path: str | Path, trees: list) -> None:
    """Trees as an LRA TSV file (as LRA's generator writes it: csv, tab-separated, header row)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["Source", "Target"])
        writer.writerows([to_string(t), to_value(t)] for t in trees)
