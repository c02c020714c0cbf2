"""IMDb sentiment (SPEC 001; LRA's Text task reads the same reviews), from local files.

`task.path` is a folder holding either
- the `aclImdb` release: train/pos, train/neg, test/pos, test/neg with one review per *.txt
  file (the folder itself or one holding `aclImdb/`; train/unsup is not read), or
- its Parquet export (columns `text`, `label` with 0 = negative, 1 = positive): the *.parquet
  files under the folder whose name starts with `train` / `test` or that sit in a `train` /
  `test` folder, e.g. plain_text/train-00000-of-00001.parquet (an `unsupervised` file is not read).
Both give the same arrays: reviews are put in a canonical order (by label, then text) whatever
order the files list them in.

Tokenizer (needs no download): `<br />` tags become spaces, the text is lowercased and split
into words, runs of letters/digits with inner apostrophes (`don't`). The vocabulary has
task.vocab ids: 0 = pad, 1 = unknown, then the task.vocab - 2 most frequent words of the train
split (ties in alphabetical order). Set task.vocab for this task (e.g. 20000; the schema's
default is small). A review keeps its first seq_len words and is LEFT-padded with 0, so the
last step is the review's last kept word, which `pooling: last` reads. Label: 1 positive,
0 negative, one per sequence. n_train / n_test are unused: every review of both splits is read.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ssmpipe.data.listops import pad_left

PAD, UNK = 0, 1
SPLITS = ("train", "test")
CLASSES = {"neg": 0, "pos": 1}
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def load(task: dict, seq_len: int) -> dict[str, np.ndarray]:
    reviews = read(task["path"])
    vocab = build_vocab([words(t) for t in reviews["train"][0]], task["vocab"] - 2)
    out = {}
    for split in SPLITS:
        texts, labels = reviews[split]
        out[f"x_{split}"] = pad_left([encode(words(t), vocab) for t in texts], seq_len, PAD)
        out[f"y_{split}"] = labels
    return out


def read(path: str | Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """split -> (texts, labels (n,) int64), in canonical order (label, then text)."""
    layout = _layout(Path(path))
    if layout is None:
        raise FileNotFoundError(f"task.path = {str(path)!r}: {path_problem(path)}")
    kind, where = layout
    out = {}
    for split in SPLITS:
        if kind == "folder":
            pairs = [
                (f.read_text(encoding="utf-8"), label)
                for name, label in CLASSES.items()
                for f in sorted((where / split / name).glob("*.txt"))
            ]
        else:
            pairs = _read_parquet(where[split])
        pairs.sort(key=lambda p: (p[1], p[0]))
        out[split] = ([t for t, _ in pairs], np.array([label for _, label in pairs], dtype=np.int64))
    return out


def path_problem(path: str | Path) -> str | None:
    """Why `path` holds no IMDb data set, or None when it does."""
    path = Path(path)
    if not path.is_dir():
        return "no such folder (IMDb reads an aclImdb folder or its Parquet export)"
    layout = _layout(path)
    if layout is None:
        return (
            "the folder holds neither aclImdb's train/pos, train/neg, test/pos, test/neg "
            "nor train and test *.parquet files"
        )
    if layout[0] == "parquet":  # each file's schema (its footer) only: the rows are checked as they are read
        import pyarrow.parquet as pq

        for f in sorted({f for files in layout[1].values() for f in files}):
            try:
                columns = pq.read_schema(f).names
            except (OSError, ValueError) as e:
                return f"{f.relative_to(path)} is not a readable Parquet file ({type(e).__name__})"
            if not {"text", "label"} <= set(columns):
                return f"{f.relative_to(path)} needs columns text and label, has {', '.join(columns)}"
    return None


def words(text: str) -> list[str]:
    return _WORD.findall(_BREAK.sub(" ", text).lower())


def build_vocab(train_words: list[list[str]], n_words: int) -> dict[str, int]:
    """word -> id (2, 3, ...) for the n_words most frequent train words, ties alphabetical."""
    counts = Counter(w for ws in train_words for w in ws)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max(n_words, 0)]
    return {w: i + 2 for i, (w, _) in enumerate(ranked)}


def encode(ws: list[str], vocab: dict[str, int]) -> list[int]:
    return [vocab.get(w, UNK) for w in ws]


def _layout(path: Path):
    """('folder', aclImdb root) or ('parquet', split -> files), or None."""
    if not path.is_dir():
        return None
    for root in (path, path / "aclImdb"):
        if all((root / s / c).is_dir() for s in SPLITS for c in CLASSES):
            return "folder", root
    files = {
        split: sorted(
            p for p in path.rglob("*.parquet") if p.name.startswith(split) or split in p.relative_to(path).parts[:-1]
        )
        for split in SPLITS
    }
    return ("parquet", files) if all(files.values()) else None


def _read_parquet(files: list[Path]) -> list[tuple[str, int]]:
    import pyarrow.parquet as pq

    pairs = []
    for f in files:
        table = pq.read_table(f)
        if not {"text", "label"} <= set(table.column_names):
            raise ValueError(f"{f}: an IMDb Parquet file needs columns text and label, has {table.column_names}")
        labels = table.column("label").to_pylist()
        if not set(labels) <= {0, 1}:
            raise ValueError(f"{f}: labels must be 0 (negative) or 1 (positive), found {sorted(set(labels))}")
        pairs += zip(table.column("text").to_pylist(), labels)
    return pairs
