"""The papers' tasks (ssmpipe/data/): each generator against its definition, the file loaders
against small fixtures in the real formats, config checks of data paths, and one tiny training
per task through the real training loop."""

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_config

from ssmpipe import config as cfg
from ssmpipe import data, sweep
from ssmpipe.data import digits, imdb, listops, majority, variance
from ssmpipe.store import Store
from ssmpipe.train import ensure_data, train_group

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LISTOPS_DIR = FIXTURES / "listops"
ACLIMDB = FIXTURES / "aclImdb"
IMDB_PARQUET = FIXTURES / "imdb_parquet"


def task_settings(name: str, **task) -> dict:
    """A task's settings with the schema's defaults filled in."""
    config = tiny_config(**{"fixed.task": {"name": name, **task}, "fixed.seq_len": 64, "grid": {}})
    return cfg.check(config)["fixed"]["task"]


# --- majority ------------------------------------------------------------------


def test_majority_labels_are_the_majority_of_the_bits():
    T = 51
    arrays = majority.generate(task_settings("majority", n_train=500, n_test=2000, seed=3), T)
    x, y = arrays["x_test"], arrays["y_test"]
    assert x.shape == (2000, T) and y.shape == (2000,)
    assert set(np.unique(x)) <= {0, 1} and x.dtype.kind == "i" and y.dtype.kind == "i"
    np.testing.assert_array_equal(y, (x.sum(1) > T / 2).astype(int))  # the test split is clean
    k = x.sum(1)  # k ~ U{0..T}: all of 0..T occur, mean T/2, ones at varied positions
    assert k.min() == 0 and k.max() == T and abs(k.mean() - T / 2) < 1.5
    assert 0.4 < y.mean() < 0.6
    first_ones = x[(k > 0) & (k < T)].argmax(1)
    assert len(np.unique(first_ones)) > 10


def test_majority_label_noise_flips_only_ones_to_zeros_on_train():
    T, p = 20, 0.25
    arrays = majority.generate(task_settings("majority", n_train=20000, n_test=100, label_noise=p), T)
    clean = (arrays["x_train"].sum(1) > T / 2).astype(int)  # inputs carry no noise: the clean label
    y = arrays["y_train"]
    assert not ((clean == 0) & (y == 1)).any()  # never 0 -> 1
    flipped = ((clean == 1) & (y == 0)).sum() / (clean == 1).sum()
    n_ones = (clean == 1).sum()
    assert abs(flipped - p) < 4 * np.sqrt(p * (1 - p) / n_ones), flipped
    np.testing.assert_array_equal(arrays["y_test"], (arrays["x_test"].sum(1) > T / 2).astype(int))


def test_majority_noise_settings_leave_the_test_split_and_clean_inputs_alone():
    T = 30
    clean = majority.generate(task_settings("majority", n_train=5000, label_noise=0.0), T)
    noisy = majority.generate(task_settings("majority", n_train=5000, label_noise=0.0, input_noise=0.25), T)
    for k in ("x_test", "y_test", "y_train"):  # input noise keeps the clean labels (the reference code's noise)
        np.testing.assert_array_equal(clean[k], noisy[k])
    assert (noisy["x_train"] <= clean["x_train"]).all()  # only 1 -> 0
    dropped = 1 - noisy["x_train"].sum() / clean["x_train"].sum()
    assert abs(dropped - 0.25) < 0.01
    np.testing.assert_array_equal(clean["y_train"], (clean["x_train"].sum(1) > T / 2).astype(int))


# --- variance-growing process --------------------------------------------------


def test_variance_process_grows_linearly_with_slope_moment():
    b, L = 0.5, 200
    arrays = variance.generate(task_settings("variance", moment=b, n_train=8000, n_test=10), L)
    x, y = arrays["x_train"], arrays["y_train"]
    assert x.shape == (8000, L) and x.dtype == np.float32 and y.shape == (8000,) and y.dtype == np.float32
    var = x.astype(np.float64).var(0)  # (L)
    slope, intercept = np.polyfit(np.arange(L), var, 1)
    assert abs(slope - b) < 0.05 * b and abs(intercept - 1) < 0.5
    assert np.abs(x.mean(0) / np.sqrt(var / len(x))).max() < 5  # zero mean at every t
    info = data.describe(arrays, task_settings("variance"))
    assert info == {"input": "real", "d_input": 1, "target": "sequence", "n_out": 1, "loss": "mse"}


@pytest.mark.parametrize("b, L", [(0.01, 50), (1.0, 1000)])
def test_variance_target_is_a_fixed_unit_variance_functional(b, L):
    arrays = variance.generate(task_settings("variance", moment=b, n_train=4000, n_test=1000, seed=1), L)
    y = np.concatenate([arrays["y_train"], arrays["y_test"]]).astype(np.float64)
    assert abs(y.var() - 1) < 0.1 and abs(y.mean()) < 0.1  # Var y = 1 whatever L and b
    # y is the documented functional of x: Σ_l k_l x_{L-1-l}, up to the normalisation
    x = arrays["x_train"].astype(np.float64)
    w = variance.teacher_kernel(1, L)[::-1]
    pred = x @ w
    np.testing.assert_allclose(y[:4000] / y[:4000].std(), pred / pred.std(), rtol=1e-3, atol=1e-3)
    # the same teacher at every length: the kernel at L is a prefix of the kernel at 2L
    np.testing.assert_allclose(variance.teacher_kernel(1, 2 * L)[:L], variance.teacher_kernel(1, L))


# --- digits ----------------------------------------------------------------------


def test_digits_shapes_labels_and_split():
    arrays = digits.generate(task_settings("digits", n_train=1000, n_test=797), 64)
    assert arrays["x_train"].shape == (1000, 64) and arrays["x_test"].shape == (797, 64)
    assert arrays["x_train"].dtype == np.float32 and arrays["y_train"].dtype == np.int64
    both_x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    both_y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    assert both_x.min() == 0 and both_x.max() == 1
    assert sorted(np.unique(both_y)) == list(range(10))
    # every image exactly once across the two splits: the multiset of (image, label) rows is sklearn's
    from sklearn.datasets import load_digits

    ref = load_digits()
    ours = sorted(map(tuple, np.column_stack([both_x * 16, both_y]).round().astype(int)))
    theirs = sorted(map(tuple, np.column_stack([ref.data, ref.target]).astype(int)))
    assert ours == theirs
    info = data.describe(arrays, task_settings("digits"))
    assert info == {"input": "real", "d_input": 1, "target": "sequence", "n_out": 10, "loss": "ce"}


def test_digits_permutation_is_a_fixed_permutation_from_the_seed():
    perm = digits.permutation(5)
    assert sorted(perm) == list(range(64)) and not (perm == np.arange(64)).all()
    np.testing.assert_array_equal(perm, digits.permutation(5))
    assert not (perm == digits.permutation(6)).all()
    plain = digits.generate(task_settings("digits", seed=5), 64)
    permuted = digits.generate(task_settings("digits", seed=5, permute=True), 64)
    for split in ("train", "test"):  # same split, pixels reordered by `perm`
        np.testing.assert_array_equal(permuted[f"x_{split}"], plain[f"x_{split}"][:, perm])
        np.testing.assert_array_equal(permuted[f"y_{split}"], plain[f"y_{split}"])
    other = digits.generate(task_settings("digits", seed=6), 64)
    assert not np.array_equal(other["y_train"], plain["y_train"])  # the split follows the seed


def test_digits_longer_sequences_are_left_padded_with_zeros():
    short = digits.generate(task_settings("digits"), 64)
    long = digits.generate(task_settings("digits"), 80)
    assert (long["x_train"][:, :16] == 0).all()
    np.testing.assert_array_equal(long["x_train"][:, 16:], short["x_train"])


# --- ListOps ---------------------------------------------------------------------

# The test's own reading of the 16 tokens, and an evaluator written independently of
# ssmpipe.data.listops (a stack over the token sequence instead of LRA's nested pairs).
WORDS = {**{str(d): d for d in range(10)}, "[MIN": 10, "[MAX": 11, "[MED": 12, "[SM": 13, "]": 14}
PAD = 15


def evaluate_tokens(tokens) -> int:
    stack = []
    for t in tokens:
        t = int(t)
        if t == PAD:
            continue
        if t == 14:
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            s = sorted(args)
            stack.append(
                {
                    "min": s[0],
                    "max": s[-1],
                    "sm": sum(s) % 10,
                    "med": s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) // 2,
                }[op]
            )
        elif t >= 10:
            stack.append({10: "min", 11: "max", 12: "med", 13: "sm"}[t])
        else:
            stack.append(t)
    assert len(stack) == 1, stack
    return stack[0]


def read_lra(path: Path):
    """The test's own reading of an LRA TSV file: header, then Source<TAB>Target rows."""
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["Source", "Target"]
    rows = [line.split("\t") for line in lines[1:] if line]
    return [[WORDS[w] for w in s.split() if w not in "()"] for s, _ in rows], [int(t) for _, t in rows]


def test_listops_evaluator_on_known_expressions():
    for source, value in [
        ("( ( ( [MAX 2 ) 9 ) ] )", 9),
        ("( ( ( ( [MED 1 ) 2 ) 7 ) ] )", 2),
        ("( ( ( ( ( [MED 1 ) 2 ) 5 ) 8 ) ] )", 3),
        ("( ( ( ( [SM 5 ) 7 ) 9 ) ] )", 1),
        ("( ( ( [MIN 4 ) ( ( ( [MAX 2 ) 3 ) ] ) ) ] )", 3),
    ]:
        tokens = listops.to_tokens(source)
        assert evaluate_tokens(tokens) == value
        assert [t for t in tokens if t >= 10] and "(" not in str(tokens)
    assert listops.to_tokens("( ( ( [MAX 2 ) 9 ) ] )") == [11, 2, 9, 14]


def test_listops_generated_labels_are_the_expressions_values():
    L, window = 120, 40
    task = task_settings("listops", n_train=300, n_test=100, length_window=window, seed=2)
    arrays = listops.load(task, L)
    assert arrays["x_train"].shape == (300, L) and arrays["y_train"].shape == (300,)
    assert arrays["x_test"].shape == (100, L) and arrays["y_test"].shape == (100,)
    x = np.concatenate([arrays["x_train"], arrays["x_test"]])
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    assert x.min() >= 0 and x.max() < 16
    assert [evaluate_tokens(row) for row in x] == y.tolist()
    lengths = (x != PAD).sum(1)
    assert (lengths > L - window).all() and (lengths <= L).all()
    for row, n in zip(x, lengths):  # left-padded: pads first, the expression's `]` last
        assert (row[: L - n] == PAD).all() and (row[L - n :] != PAD).all() and row[-1] == 14
    assert len({row.tobytes() for row in x}) == len(x)  # distinct across train and test, as in LRA
    assert len(np.unique(y)) >= 6
    again = listops.load(task, L)
    for k in data.ARRAYS:
        np.testing.assert_array_equal(again[k], arrays[k])
    assert data.describe(arrays, task)["d_input"] == 16 and data.describe(arrays, task)["n_out"] == 10


def test_listops_tsv_loader_reads_lra_files():
    for split in ("train", "val", "test"):  # the fixture is itself right: its labels are its expressions' values
        tokens, targets = read_lra(LISTOPS_DIR / f"basic_{split}.tsv")
        assert len(targets) == 20 and [evaluate_tokens(t) for t in tokens] == targets
    assert "\r\n" in (LISTOPS_DIR / "basic_train.tsv").read_bytes().decode()  # csv's line ends, as LRA's writer
    task = task_settings("listops", path=str(LISTOPS_DIR))
    arrays = listops.load(task, 48)
    for split in ("train", "test"):
        tokens, targets = read_lra(LISTOPS_DIR / f"basic_{split}.tsv")
        np.testing.assert_array_equal(arrays[f"y_{split}"], targets)
        x = arrays[f"x_{split}"]
        assert x.shape == (20, 48)
        assert [row[row != PAD].tolist() for row in x] == tokens
        assert [evaluate_tokens(row) for row in x] == targets
    short = listops.load(task, 16)["x_train"]  # longer expressions keep their first 16 tokens
    tokens, _ = read_lra(LISTOPS_DIR / "basic_train.tsv")
    for row, t in zip(short, tokens):
        assert row.tolist() == [PAD] * (16 - min(16, len(t))) + t[:16]


def test_listops_generator_writes_what_the_loader_reads(tmp_path):
    trees = listops.generate_trees(seed=1, n=30, seq_len=60, length_window=20)
    for split in ("train", "test"):
        listops.write_tsv(tmp_path / f"basic_{split}.tsv", trees)
    arrays = listops.load(task_settings("listops", path=str(tmp_path)), 60)
    np.testing.assert_array_equal(arrays["y_train"], [listops.to_value(t) for t in trees])
    with open(tmp_path / "basic_train.tsv", newline="") as f:
        assert next(csv.reader(f, delimiter="\t")) == ["Source", "Target"]


def test_listops_generation_fails_clearly_when_too_few_expressions_fit():
    with pytest.raises(ValueError, match="distinct expressions"):
        listops.generate_trees(seed=0, n=50, seq_len=3, length_window=2)


# --- IMDb --------------------------------------------------------------------------


def test_imdb_tokenizer():
    assert imdb.words("I loved it<br /><br />Great music, I'd watch it AGAIN!") == [
        "i",
        "loved",
        "it",
        "great",
        "music",
        "i'd",
        "watch",
        "it",
        "again",
    ]


def test_imdb_folder_and_parquet_give_the_same_arrays():
    folder = imdb.load(task_settings("imdb", path=str(ACLIMDB), vocab=30), 12)
    parquet = imdb.load(task_settings("imdb", path=str(IMDB_PARQUET), vocab=30), 12)
    for k in data.ARRAYS:
        np.testing.assert_array_equal(folder[k], parquet[k])
    assert folder["x_train"].shape == (8, 12) and folder["x_test"].shape == (4, 12)  # unsupervised not read
    assert sorted(folder["y_train"]) == [0] * 4 + [1] * 4 and sorted(folder["y_test"]) == [0, 0, 1, 1]
    assert folder["x_train"].max() < 30 and folder["x_train"].dtype == np.int64


def test_imdb_vocabulary_padding_and_labels():
    arrays = imdb.load(task_settings("imdb", path=str(ACLIMDB), vocab=5), 40)
    texts, labels = imdb.read(ACLIMDB)["train"]
    train_words = [imdb.words(t) for t in texts]
    counts = pd.Series([w for ws in train_words for w in ws]).value_counts()
    top3 = sorted(counts.index, key=lambda w: (-counts[w], w))[:3]  # pad 0, unknown 1, then 3 words
    expected = {w: i + 2 for i, w in enumerate(top3)}
    for row, ws, label, text in zip(arrays["x_train"], train_words, arrays["y_train"], texts):
        ids = [expected.get(w, 1) for w in ws]
        assert row.tolist() == [0] * (40 - len(ids)) + ids  # left-padded, every word kept
        is_pos = text in [t for t, y in zip(texts, labels) if y == 1]
        assert label == int(is_pos)
    pos_folder = {f.read_text() for f in (ACLIMDB / "train" / "pos").glob("*.txt")}
    assert {t for t, y in zip(texts, labels) if y == 1} == pos_folder
    cut = imdb.load(task_settings("imdb", path=str(ACLIMDB), vocab=5), 4)["x_train"]
    for row, ws in zip(cut, train_words):  # long reviews keep their first words
        assert row.tolist() == [expected.get(w, 1) for w in ws[:4]]


# --- config checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    "task, value, words",
    [
        ({"name": "imdb", "path": "/nonexistent/aclImdb"}, "/nonexistent/aclImdb", ["no such folder"]),
        ({"name": "imdb", "path": str(LISTOPS_DIR)}, str(LISTOPS_DIR), ["aclImdb", "parquet"]),
        ({"name": "listops", "path": "/nonexistent/lra"}, "/nonexistent/lra", ["no such folder"]),
        ({"name": "listops", "path": str(ACLIMDB)}, str(ACLIMDB), ["basic_train.tsv"]),
    ],
)
def test_a_missing_data_path_is_a_config_error(task, value, words):
    with pytest.raises(cfg.ConfigError) as e:
        cfg.check(tiny_config(**{"fixed.task": task}))
    msg = str(e.value)
    assert "task.path" in msg and repr(value) in msg and all(w in msg for w in words), msg


def test_config_checks_of_the_new_tasks(tmp_path):
    with pytest.raises(cfg.ConfigError, match="task.path is missing"):
        cfg.check(tiny_config(**{"fixed.task": {"name": "imdb"}}))
    with pytest.raises(cfg.ConfigError, match=r"grid.seq_len\[0\].*seq_len = 32.*digits"):
        cfg.check(tiny_config(**{"fixed.task": {"name": "digits"}, "fixed.seq_len": 64, "grid.seq_len": [32, 64]}))
    with pytest.raises(cfg.ConfigError, match="task.n_train = 1500.*1797"):
        cfg.check(
            tiny_config(
                **{
                    "fixed.task": {"name": "digits", "n_train": 1500, "n_test": 400},
                    "fixed.seq_len": 64,
                    "grid.seq_len": [64],
                }
            )
        )
    with pytest.raises(cfg.ConfigError, match="task.name"):
        cfg.check(tiny_config(**{"fixed.task": {"name": "mnist"}}))
    for task in (
        {"name": "imdb", "path": str(ACLIMDB)},
        {"name": "imdb", "path": str(IMDB_PARQUET)},
        {"name": "listops", "path": str(LISTOPS_DIR)},
        {"name": "listops"},
        {"name": "majority"},
        {"name": "variance", "moment": 1.0},
    ):
        cfg.check(tiny_config(**{"fixed.task": task}))


# --- one tiny training per task --------------------------------------------------------


def _points(task: dict, seq_len: int, **changes):
    config = cfg.check(
        tiny_config(
            **{
                "fixed.task": task,
                "fixed.seq_len": seq_len,
                "grid.seq_len": [seq_len],
                "grid.seed": [0],
                "grid.model.init.real": [-0.5],
                "fixed.train.epochs": 3,
                **changes,
            }
        )
    )
    return [{"run_id": p.run_id, "settings": p.settings, "shard": "test"} for p in sweep.expand(config)]


def _train(points, tmp_path):
    arrays = ensure_data(Store(tmp_path), data.spec_of(points[0]["settings"]))
    rows = train_group(points, arrays, torch.device("cpu"), None, lambda *a: None)
    return pd.DataFrame(rows).set_index(["run_id", "epoch"]).sort_index()


@pytest.mark.parametrize(
    "task, seq_len, kind",
    [
        ({"name": "majority", "n_train": 128, "n_test": 64}, 24, "s4d"),
        ({"name": "majority", "n_train": 128, "n_test": 64}, 24, "selective"),
        ({"name": "digits", "permute": True, "n_train": 128, "n_test": 64}, 64, "s4d"),
        ({"name": "listops", "n_train": 96, "n_test": 32, "length_window": 20}, 40, "s4d"),
        ({"name": "listops", "path": str(LISTOPS_DIR)}, 48, "s4d"),
        ({"name": "imdb", "path": str(ACLIMDB), "vocab": 40}, 16, "s4d"),
        ({"name": "imdb", "path": str(IMDB_PARQUET), "vocab": 40}, 16, "selective"),
    ],
)
def test_each_classification_task_trains(tmp_path, task, seq_len, kind):
    rows = _train(_points(task, seq_len, **{"fixed.model.kind": kind}), tmp_path)
    assert (rows["status"] == "ok").all() and len(rows) == 4
    assert np.isfinite(rows[["train_loss", "test_loss"]].to_numpy()).all()
    assert rows["train_acc"].between(0, 1).all() and rows["test_acc"].between(0, 1).all()
    assert rows["train_loss"].iloc[-1] != rows["train_loss"].iloc[0]  # it trained


def test_variance_regression_trains_and_its_loss_falls(tmp_path):
    task = {"name": "variance", "moment": 0.1, "n_train": 256, "n_test": 64}
    rows = _train(_points(task, 200, **{"fixed.train.epochs": 8, "fixed.train.lr": 0.01}), tmp_path)
    assert (rows["status"] == "ok").all() and len(rows) == 9
    assert rows["train_acc"].isna().all()  # regression: no accuracy
    assert rows["train_loss"].iloc[-1] < 0.8 * rows["train_loss"].iloc[0], rows["train_loss"].tolist()
