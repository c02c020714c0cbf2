"""Hostile inputs (issue 21): ssmpipe/inputs.py's YAML and JSON readers and file opener, and the data readers
(ssmpipe/data/npz.py's task files, ssmpipe/data/__init__.py's cache) against what an attacker can put in a config
or under results/: duplicate keys, alias bombs, deep nesting, FIFOs, zip bombs and .npy headers that lie. Real
files in tmp_path, a real mkfifo, a real deflate bomb; anything that could hang runs with a time limit."""

import io
import json
import os
import random
import stat
import struct
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tiny_config
from numpy.lib import format as npy

from ssmpipe import config as cfg
from ssmpipe import data, inputs
from ssmpipe.data import npz
from ssmpipe.inputs import (
    MAX_DEPTH,
    DuplicateKeyError,
    InputLimitError,
    NotAFileError,
    YAMLLimitError,
    json_depth,
    load_json,
    load_yaml,
    open_file,
    read_file,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config").rglob("*.yaml"))


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """'Billion laughs': each level a list of `width` aliases of the one before; width ** levels values."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = [f"a: &a [{', '.join(['lol'] * width)}]"]
    lines += [f"{names[i]}: &{names[i]} [{', '.join(['*' + names[i - 1]] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def finishes_at_once(fn, fifo: Path, seconds: float = 5.0):
    """fn()'s result (or its exception, raised here); the test fails if it still runs after `seconds`, and a reader
    blocked on `fifo` is then released (a writer opens it and closes it) so that no thread hangs on."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: B036 - handed to the test's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"still waiting on the FIFO {fifo} after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- YAML: duplicate keys -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, key, line, first",
    [
        ("{lr: 0.01, lr: 100.0}", "'lr'", 1, 1),
        ("train:\n  lr: 0.01\n  epochs: 3\n  lr: 100.0\n", "'lr'", 4, 2),
        ("fixed:\n  model: {d_state: 2,\n    d_state: 4}\n", "'d_state'", 3, 2),
        ("grid:\n  seed: [0, 1]\ngrid:\n  seed: [2]\n", "'grid'", 3, 1),
        ("{1: a, 0x1: b}", "1", 1, 1),  # the same key however written
    ],
)
def test_a_duplicate_key_is_an_error_naming_the_key_and_its_lines(text, key, line, first):
    assert isinstance(yaml.safe_load(text), dict)  # what safe_load does: keeps the last, silently
    with pytest.raises(DuplicateKeyError) as e:
        load_yaml(text)
    assert str(e.value) == f"duplicate key {key} at line {line} (first at line {first})"
    assert isinstance(e.value, yaml.YAMLError) and isinstance(e.value, ValueError)  # what callers catch already
    assert e.value.problem == f"duplicate key {key}" and e.value.problem_mark.line + 1 == line


def test_a_merged_key_may_be_written_again_as_yaml_allows():
    for text in [
        "base: &base {lr: 0.01, epochs: 3}\nrun: {<<: *base, lr: 0.1}\n",
        # q is merged into `later` before q itself is built: its merged keys are no duplicates of its own
        "y: &y {k: 1, j: 2}\np: {q: &x {<<: *y, k: 3}}\nlater: {<<: *x}\n",
    ]:
        assert load_yaml(text) == yaml.safe_load(text)


# --- YAML: aliases, nesting, numbers ------------------------------------------------


def test_a_1kb_alias_bomb_is_refused_at_once_without_expanding_it():
    text = alias_bomb(levels=9, width=9)  # 9 ** 9 = 387,420,489 values: 1 minute and 6 GB for json.dumps
    text += "# " + "padding " * ((1000 - len(text)) // 8) + "\n"
    assert 900 < len(text) <= 1024
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(YAMLLimitError) as e:
            load_yaml(text, what="config file 'bomb.yaml'")
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 5 and peak < 2 << 20, (seconds, peak)  # expanding it: a minute and gigabytes
    assert str(e.value).startswith(
        "config file 'bomb.yaml' expands to more than 1,000,000 values once its aliases are expanded (MAX_NODES)"
    )
    assert isinstance(e.value, InputLimitError) and isinstance(e.value, ValueError)
    assert "at line 7" in str(e.value)  # where the count passes the limit: 9 ** 7 values in g


def test_merge_keys_count_what_they_merge():
    names = "abcdefghi"
    lines = ["a: &a {" + ", ".join(f"k{j}: {j}" for j in range(9)) + "}"]
    lines += [f"{names[i]}: &{names[i]} {{<<: [{', '.join(['*' + names[i - 1]] * 9)}]}}" for i in range(1, 9)]
    with pytest.raises(YAMLLimitError, match="more than 1,000,000 values"):
        load_yaml("\n".join(lines))


def test_a_few_aliases_load_as_safe_load_loads_them_shared():
    text = (
        "defaults: &train {epochs: 3, lr: 0.01, batch_size: 32}\n"
        "seeds: &seeds [0, 1, 2]\n"
        "sweeps:\n"
        "  - {name: a, train: *train, seed: *seeds}\n"
        "  - {name: b, train: {<<: *train, lr: 0.1}, seed: *seeds}\n"
    )
    got, want = load_yaml(text), yaml.safe_load(text)
    assert got == want
    assert got["sweeps"][0]["train"] is got["defaults"] and got["sweeps"][1]["seed"] is got["seeds"]


def test_a_recursive_alias_is_refused():
    assert yaml.safe_load("a: &a [1, *a]")["a"][1][1][1][0] == 1  # safe_load makes an endless list
    with pytest.raises(YAMLLimitError, match=r"recursive alias \(\*a inside &a\) at line 1"):
        load_yaml("a: &a [1, *a]")


@pytest.mark.parametrize("flow", [True, False])
def test_nesting_is_bounded_at_max_depth(flow):
    def nested(levels):
        if flow:
            return "[" * levels + "]" * levels
        return "".join(" " * i + "- \n" for i in range(levels - 1)) + " " * (levels - 1) + "- x\n"

    assert load_yaml(nested(MAX_DEPTH)) == yaml.safe_load(nested(MAX_DEPTH))
    with pytest.raises(YAMLLimitError, match=f"nests (more than {MAX_DEPTH}|{MAX_DEPTH + 1}) levels deep"):
        load_yaml(nested(MAX_DEPTH + 1))
    with pytest.raises(YAMLLimitError, match=f"nests more than {MAX_DEPTH} levels deep"):
        load_yaml(nested(MAX_DEPTH + 2))


def test_a_huge_flow_nesting_is_refused_fast():
    start = time.perf_counter()
    with pytest.raises(YAMLLimitError, match="nests more than 100 levels deep"):
        load_yaml("[" * 200_000)  # safe_load: RecursionError
    assert time.perf_counter() - start < 2


def test_nesting_counts_what_aliases_add():
    inner = "[" * 60 + "1" + "]" * 60
    text = f"a: &a {inner}\nb: {'[' * 39}*a{']' * 39}\n"  # 1 + 39 + 60 = 100 levels: fine
    assert load_yaml(text) == yaml.safe_load(text)
    with pytest.raises(YAMLLimitError, match="nests 101 levels deep once its aliases are expanded"):
        load_yaml(f"a: &a {inner}\nb: {'[' * 40}*a{']' * 40}\n")


def test_a_long_integer_is_refused_before_python_multiplies_it_out():
    text = "x: " + "1:" * 20_000 + "1\n"  # YAML 1.1's base 60: safe_load's loop is quadratic in the length
    start = time.perf_counter()
    with pytest.raises(YAMLLimitError, match="an integer of 40,001 characters, more than 4,300"):
        load_yaml(text)
    assert time.perf_counter() - start < 1
    assert load_yaml("x: 1:30\ny: 0x" + "f" * 100) == yaml.safe_load("x: 1:30\ny: 0x" + "f" * 100)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_each_config_file_loads_as_safe_load_loads_it(path):
    text = path.read_text(encoding="utf-8")
    assert load_yaml(text) == yaml.safe_load(text)


def test_yaml_errors_stay_yaml_errors():
    for text in ["a: [1, 2", "a: *nowhere", "--- 1\n--- 2\n", "{[1]: 2}"]:
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(text)
        with pytest.raises(yaml.YAMLError):
            load_yaml(text)


# --- JSON ------------------------------------------------------------------------------


def test_a_deep_json_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "spec.json"
    path.write_bytes(b"[" * 200_000 + b"]" * 200_000)  # 400 KB
    with pytest.raises(RecursionError):
        json.loads(path.read_bytes())
    start = time.perf_counter()
    with pytest.raises(InputLimitError) as e:
        load_json(path.read_bytes(), what=f"shard spec {path.name!r}")
    assert time.perf_counter() - start < 0.5
    assert str(e.value) == "shard spec 'spec.json' nests 200,000 levels deep, more than 100 (MAX_DEPTH)"


def test_json_nesting_is_bounded_at_max_depth():
    assert load_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) == json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    with pytest.raises(InputLimitError, match="nests 101 levels deep"):
        load_json(b'{"a": ' * 101 + b"1" + b"}" * 101)


def test_a_recursion_error_becomes_an_input_limit_error(monkeypatch):
    monkeypatch.setattr(inputs, "json_depth", lambda data: 0)  # as if the scan missed it: the last resort
    with pytest.raises(InputLimitError, match="RecursionError"):
        load_json("[" * 200_000)


def _depth(obj) -> int:
    if isinstance(obj, dict):
        return 1 + max(map(_depth, obj.values()), default=0)
    if isinstance(obj, list):
        return 1 + max(map(_depth, obj), default=0)
    return 0


def _random_json(rng: random.Random, depth: int):
    pieces = ['"', "\\", "[", "]", "{", "}", '\\"', "\\\\", "x", "é", "\n", "[[[", "]]]]", '\\"[']
    if depth == 0 or rng.random() < 0.3:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(6))) if rng.random() < 0.8 else 1.5
    if rng.random() < 0.5:
        return [_random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    return {
        "".join(rng.choice(pieces) for _ in range(3)): _random_json(rng, depth - 1) for _ in range(rng.randrange(4))
    }


def test_json_depth_skips_brackets_in_strings_and_escapes():
    rng = random.Random(21)
    for _ in range(2000):
        obj = _random_json(rng, rng.randrange(8))
        text = json.dumps(obj, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        assert json_depth(text.encode()) == _depth(obj), text
        assert load_json(text) == load_json(text.encode("utf-16")) == obj
    assert json_depth(b'["[[[') == 1  # an unterminated string runs to the end


def test_json_depth_is_fast_on_a_large_document():
    points = {
        "points": [
            {
                "run_id": f"{i:016x}",
                "settings": {
                    "model": {"d_state": 16, "init": {"dt": "a[b"}},
                    "task": {"name": "delay", "path": 'c:\\"q"'},
                },
            }
            for i in range(100_000)
        ]
    }
    blob = json.dumps(points).encode()  # 17 MB
    start = time.perf_counter()
    assert json_depth(blob) == 6  # {points: [{settings: {model: {init: {
    assert time.perf_counter() - start < 0.5


# --- files: FIFOs and other things that are not files ---------------------------------


def test_open_file_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "spec.json"
    os.mkfifo(fifo)
    with pytest.raises(NotAFileError) as e:
        finishes_at_once(lambda: open_file(fifo), fifo)
    assert str(e.value) == f"{str(fifo)!r} is a FIFO (named pipe), not a regular file"
    assert e.value.kind == "a FIFO (named pipe)" and isinstance(e.value, ValueError)
    with pytest.raises(NotAFileError, match="a FIFO"):
        finishes_at_once(lambda: read_file(fifo), fifo)


def test_open_file_refuses_a_folder_and_reads_a_file(tmp_path):
    with pytest.raises(NotAFileError, match="is a folder"):
        open_file(tmp_path)
    (tmp_path / "a.json").write_bytes(b"[1]")
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    assert read_file(tmp_path / "link.json") == b"[1]"
    assert read_file(tmp_path / "a.json", max_bytes=3) == b"[1]"
    with pytest.raises(InputLimitError, match="holds 3 bytes, more than 2"):
        read_file(tmp_path / "a.json", max_bytes=2)
    with pytest.raises(FileNotFoundError):
        open_file(tmp_path / "missing.json")


def test_the_data_cache_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "delay-L16-0123456789ab.npz"
    os.mkfifo(fifo)
    with pytest.raises(NotAFileError, match="is a FIFO"):
        finishes_at_once(lambda: data.load(fifo), fifo)


def test_a_fifo_in_the_data_cache_is_quarantined_and_the_data_built_again(tmp_path):
    from ssmpipe.store import Store
    from ssmpipe.train import ensure_data

    settings = cfg.check(tiny_config(**{"grid": {}}))["fixed"]
    spec = data.spec_of(settings)
    store = Store(tmp_path)
    path = store.data_path(data.key_of(spec))
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    arrays = finishes_at_once(lambda: ensure_data(store, spec), path)
    for k in data.ARRAYS:
        np.testing.assert_array_equal(arrays[k], data.build(spec)[k])
    assert stat.S_ISREG(path.stat().st_mode)
    moved = list((tmp_path / "store" / "quarantine").iterdir())
    assert len(moved) == 1 and stat.S_ISFIFO(moved[0].lstat().st_mode) and moved[0].name.endswith(path.name)


def test_the_npz_task_refuses_a_fifo_at_once(tmp_path):
    fifo = tmp_path / "tok.npz"
    os.mkfifo(fifo)
    assert npz.path_problem(fifo, 4, 16) == "a FIFO (named pipe), not a .npz file"
    assert finishes_at_once(lambda: npz._read(fifo), fifo) == "a FIFO (named pipe), not a .npz file"
    with pytest.raises(NotAFileError, match="is a FIFO"):  # planning hashes what task.path holds
        finishes_at_once(lambda: data.content_hash(fifo), fifo)


# --- npz: zip bombs and lying headers -------------------------------------------------


def npy_bytes(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a)
    return buffer.getvalue()


def npy_header(dtype: str, shape: tuple) -> bytes:
    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def raw_zip(members: list[tuple[str, bytes, int, int, int]], copies: int = 1) -> bytes:
    """A zip written byte by byte: (name, data as stored, method (0 stored, 8 deflated), crc32, size inflated) each;
    its central directory lists the first member `copies` times (all at the one local entry)."""
    out, central = io.BytesIO(), []
    for i, (name, stored, method, crc, size) in enumerate(members):
        offset, n = out.tell(), name.encode()
        out.write(
            struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(stored), size, len(n), 0)
            + n
            + stored
        )
        entry = (
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0x21,
                crc,
                len(stored),
                size,
                len(n),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + n
        )
        central += [entry] * (copies if i == 0 else 1)
    directory, at = b"".join(central), out.tell()
    out.write(
        directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(directory), at, 0)
    )
    return out.getvalue()


def stored(name: str, a: np.ndarray) -> tuple:
    b = npy_bytes(a)
    return f"{name}.npy", b, 0, zlib.crc32(b), len(b)


def zeros_bomb(name: str, gib: float) -> tuple:
    """An int64 .npy of `gib` GiB of zeros, deflated ~1000:1 without deflating it: after a full flush the deflater
    starts afresh, so each 1 MiB of zeros deflates to the same bytes, repeated. Its CRC is left 0 (computing it would
    read the gigabytes): a reader that inflated it all would fail on the CRC, after the damage."""
    chunk, n = 1 << 20, int(gib * 1024)
    header = npy_header("<i8", (n * chunk // 8,))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH)
    assert deflate.compress(bytes(chunk)) + deflate.flush(zlib.Z_FULL_FLUSH) == block
    body = head + block * n + deflate.flush()
    inflate = zlib.decompressobj(-15)  # it is what it says: the header, then zeros (its first 3 MiB checked)
    assert inflate.decompress(body[: len(head) + 3 * len(block)]) == header + bytes(3 * chunk)
    return f"{name}.npy", body, 8, 0, len(header) + n * chunk


def good_arrays(n: int = 8, length: int = 24) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.integers(0, 4, (n, length)) for k in npz.ARRAYS}


def test_a_deflate_bomb_is_refused_from_its_headers(tmp_path):
    rest = [stored(k, a) for k, a in good_arrays().items() if k != "x_train"]
    path = tmp_path / "tok.npz"
    path.write_bytes(raw_zip([zeros_bomb("x_train", 2.5), *rest]))
    assert path.stat().st_size < 3 << 20  # 2.5 MB that inflates to 2.5 GiB
    info = zipfile.ZipFile(path).getinfo("x_train.npy")
    assert info.file_size > 2.5 * 2**30 and info.compress_type == zipfile.ZIP_DEFLATED
    start = time.perf_counter()
    problem = npz.path_problem(path, 4, 16)
    assert time.perf_counter() - start < 1
    assert problem == (
        "would hold 2.5 GiB once read as int64, more than the 2.0 GiB an npz task may "
        "(npz.MAX_BYTES); its largest array, x_train, inflates to 2.5 GiB "
        "(int64 of shape (335544320,))"
    )
    with pytest.raises(ValueError, match=r"task.path = '.*tok.npz': would hold 2.5 GiB"):
        npz.load({"path": str(path), "vocab": 4}, 16)


def test_a_header_claiming_a_huge_shape_is_refused_without_allocating_it(tmp_path):
    lying = npy_header("<i8", (1 << 20, 1 << 20)) + bytes(8 * 24)  # says 8 TiB, holds 192 bytes
    path = tmp_path / "tok.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x_train.npy", lying)
        for k, a in good_arrays().items():
            if k != "x_train":
                z.writestr(f"{k}.npy", npy_bytes(a))
    problem = npz.path_problem(path, 4, 16)
    assert problem == (
        "its x_train's header says int64 of shape (1048576, 1048576), 8.0 TiB, but its member "
        "x_train.npy holds 192 bytes of data: a damaged or crafted file"
    )


@pytest.mark.parametrize("cut", [-8, +8])
def test_a_member_that_holds_more_or_less_than_its_header_says_is_refused(tmp_path, cut):
    members = [stored(k, a) for k, a in good_arrays().items()]
    name, b, method, _, _ = members[1]
    b = b[:cut] if cut < 0 else b + bytes(cut)
    members[1] = name, b, method, zlib.crc32(b), len(b)
    path = tmp_path / "tok.npz"
    path.write_bytes(raw_zip(members))
    assert npz.path_problem(path, 4, 16) == (
        f"its y_train's header says int64 of shape (8, 24), 1,536 bytes, but its "
        f"member y_train.npy holds {1536 + cut:,} bytes of data: a damaged or "
        f"crafted file"
    )


def test_the_npz_task_still_reads_good_files_and_names_bad_ones(tmp_path):
    good = tmp_path / "good.npz"
    np.savez_compressed(good, **good_arrays())
    assert npz.path_problem(good, 4, 16) is None
    assert npz.load({"path": str(good), "vocab": 4}, 16)["x_test"].shape == (8, 16)
    np.save(tmp_path / "one.npy", np.zeros((8, 24), int))
    assert npz.path_problem(tmp_path / "one.npy", 4, 16).startswith("a single .npy array")
    (tmp_path / "junk.npz").write_bytes(b"not an npz file")
    assert "neither a zip" in npz.path_problem(tmp_path / "junk.npz", 4, 16)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:600])
    assert npz.path_problem(tmp_path / "cut.npz", 4, 16).startswith("not a readable .npz file (BadZipFile: ")
    np.savez(tmp_path / "pickle.npz", **{**good_arrays(), "x_train": np.array([object()], dtype=object)})
    assert npz.path_problem(tmp_path / "pickle.npz", 4, 16) == (
        "its x_train holds Python objects (a pickle), which ssmpipe never loads; save int arrays"
    )
    assert npz.path_problem(tmp_path, 4, 16) == "a folder, not a .npz file"
    assert npz.path_problem(tmp_path / "missing.npz", 4, 16) == "no such file"


# --- the data cache -----------------------------------------------------------------------


def test_the_cache_reads_what_save_writes(tmp_path):
    arrays = {**good_arrays(), "x_train": np.zeros((8, 24, 2), np.float32)}
    data.save(arrays, tmp_path / "d.npz")
    got = data.load(tmp_path / "d.npz")
    assert all(np.array_equal(got[k], arrays[k]) for k in data.ARRAYS)


def test_the_cache_refuses_a_bomb_and_overlapping_entries(tmp_path):
    rest = [stored(k, a) for k, a in good_arrays().items() if k != "x_train"]
    (tmp_path / "bomb.npz").write_bytes(raw_zip([zeros_bomb("x_train", 0.01), *rest]))
    with pytest.raises(ValueError, match=r"has compressed members \(x_train.npy\); save writes them stored"):
        data.load(tmp_path / "bomb.npz")
    # 200 directory entries for one stored x_train: zip's "overlapping files" bomb, 200 reads of the same bytes
    (tmp_path / "overlap.npz").write_bytes(
        raw_zip([stored("x_train", np.zeros((64, 64), np.int64)), *rest], copies=200)
    )
    with pytest.raises(ValueError, match=r"has arrays of 6.3 MiB in a file of 4\d,\d{3} bytes: its members overlap"):
        data.load(tmp_path / "overlap.npz")
    lying = npy_header("<i8", (1 << 40,)) + bytes(64)
    (tmp_path / "lying.npz").write_bytes(raw_zip([("x_train.npy", lying, 0, zlib.crc32(lying), len(lying)), *rest]))
    with pytest.raises(ValueError, match=r"its x_train's header says int64 of shape \(1099511627776,\), 8.0 TiB"):
        data.load(tmp_path / "lying.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(zipfile.BadZipFile):  # what ensure_data quarantines, as it does ValueError
        data.load(tmp_path / "junk.npz")
