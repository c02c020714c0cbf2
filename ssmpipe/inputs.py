"""Reading untrusted input (every config string, every file under results/) with bounded work: YAML without
duplicate keys and with aliases counted as if expanded (MAX_NODES) and nesting bounded (MAX_DEPTH), JSON with its
nesting bounded before it is parsed, and files opened only when they are regular files (never blocking on a FIFO).
The bottom layer: imports nothing from ssmpipe.
"""

from __future__ import annotations

import json
import os
import re
import stat
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

MAX_DEPTH = 100  # nesting of a YAML or JSON document (ssmpipe's own nest under 10); aliases expanded
MAX_NODES = 1_000_000  # values of a YAML document counted as if its aliases were expanded (a config has ~100s)
MAX_INT_CHARS = 4300  # a YAML integer's characters: Python's own limit for int(str), which YAML's 1:2:3 (base 60)
# and 0x… forms do not meet (base 60 costs quadratic time in its length)


class InputLimitError(ValueError):
    """A document over one of this module's limits; the message says which limit and by what (the caller adds the
    file's name)."""


class YAMLLimitError(InputLimitError, yaml.YAMLError):
    """`load_yaml`'s InputLimitError: also a yaml.YAMLError, so code that catches YAML's errors catches it."""


class DuplicateKeyError(ConstructorError, ValueError):
    """A YAML mapping with a key twice: yaml.safe_load keeps the last silently; here it is an error (a
    yaml.YAMLError, with `problem` and `problem_mark` as YAML's own errors have them)."""

    def __init__(self, key: object, mark, first):
        super().__init__(None, None, f"duplicate key {_short(key)}", mark)
        self.key, self.first_mark = key, first

    def __str__(self) -> str:
        return f"{self.problem} at line {self.problem_mark.line + 1} (first at line {self.first_mark.line + 1})"


class NotAFileError(ValueError):
    """A path that is there but is no regular file (a FIFO, socket, device or folder); `kind` says which."""

    def __init__(self, path: str | Path, kind: str):
        super().__init__(f"{str(path)!r} is {kind}, not a regular file")
        self.path, self.kind = str(path), kind


def load_yaml(text: str, what: str = "YAML") -> object:
    """yaml.safe_load's result for one document, refusing a duplicate key (DuplicateKeyError) and a document that is
    recursive, nests deeper than MAX_DEPTH or holds more than MAX_NODES values once its aliases are expanded
    (YAMLLimitError), checked while it is composed: the work is linear in the text, however its aliases multiply.
    what: names the document in messages. Pure-Python SafeLoader: libyaml's CSafeLoader composes in C, out of reach
    of the checks."""
    loader = _Loader(text, what)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_json(data: bytes | str, what: str = "JSON") -> object:
    """json.loads, refusing (InputLimitError) a document nested deeper than MAX_DEPTH before parsing it (a linear
    scan of its brackets outside strings), so a file of '[' * 200000 is an error, not a RecursionError."""
    if isinstance(data, str):
        scan = data.encode("utf-8", "surrogatepass")
    else:  # json.loads reads UTF-16 and -32 too: scanned as UTF-8, where a quote or bracket byte is that character
        encoding = json.detect_encoding(data)
        scan = data if encoding == "utf-8" else data.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    depth = json_depth(scan)
    if depth > MAX_DEPTH:
        raise InputLimitError(f"{what} nests {depth:,} levels deep, more than {MAX_DEPTH} (MAX_DEPTH)")
    try:
        return json.loads(data)
    except RecursionError:  # not reached after the scan; kept as the last resort it was meant to be
        raise InputLimitError(f"{what} nests too deep for Python's parser (RecursionError)") from None


def check_size(obj: object, what: str = "the config") -> None:
    """An already-parsed document (Snakemake's --configfile, read by its own loader) walked with bounded work:
    InputLimitError once it holds more than MAX_NODES values (shared parts counted each time they occur, as a walk
    over it would meet them) or nests deeper than MAX_DEPTH; the walk stops there, so the check costs at most
    MAX_NODES steps however many times its aliases multiply it."""
    count, stack = 0, [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise InputLimitError(
                f"{what} holds more than {MAX_NODES:,} values (MAX_NODES; YAML aliases counted as expanded)"
            )
        if depth > MAX_DEPTH:
            raise InputLimitError(f"{what} nests more than {MAX_DEPTH} levels deep (MAX_DEPTH)")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, depth + 1) for v in node)


def json_depth(data: bytes) -> int:
    """How deep a JSON text's arrays and objects nest; brackets in strings do not count. All in C (replace, translate,
    a regex over what is left, a running sum): about 30 ms for 20 MB of ssmpipe's JSON, which json.loads reads in
    450 ms."""
    if b"\\" in data:  # escapes: backslashes pair up from the left; an escaped quote ends no string
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Quotes and brackets only; "" goes (a string without brackets, or one string's end and the next's start with no
    # bracket between: either way the quotes keep alternating), so only strings with brackets in them are left.
    marks = data.translate(None, _NOT_MARK).replace(b'""', b"")
    brackets = _STRING.sub(b"", marks)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def open_file(path: str | Path) -> BinaryIO:
    """`path` opened for binary reading if it is a regular file (links followed); NotAFileError, at once, for a
    FIFO, socket, device or folder. Opening a FIFO to read waits for a writer (forever), so the open is non-blocking
    and the check is on what was opened (fstat), not only on the name (stat, before: no device is even opened)."""
    _check_regular(path, os.stat(path).st_mode)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # the path may have been swapped since the stat
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | Path, max_bytes: int | None = None) -> bytes:
    """A regular file's bytes (`open_file`); InputLimitError if it holds more than max_bytes."""
    with open_file(path) as f:
        if max_bytes is not None and (size := os.fstat(f.fileno()).st_size) > max_bytes:
            raise InputLimitError(f"{str(path)!r} holds {size:,} bytes, more than {max_bytes:,}")
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:  # it grew while being read
        raise InputLimitError(f"{str(path)!r} holds more than {max_bytes:,} bytes")
    return data


def file_kind(mode: int) -> str:
    """What an st_mode is, to name in a message: "a regular file", "a FIFO (named pipe)", "a folder", …"""
    return next((kind for test, kind in _KINDS if test(mode)), "an unknown kind of file")


_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link"),
)


def _check_regular(path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotAFileError(path, file_kind(mode))


_NOT_MARK = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"?')  # in json_depth's marks: a string's brackets (unterminated: to the end)
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Loader(yaml.SafeLoader):
    """SafeLoader, counting as it composes: each node's values and depth once expanded, from its children's (an
    alias's node is complete, so its counts are known: no node is walked twice)."""

    def __init__(self, text: str, what: str):
        super().__init__(text)
        self.what = what
        self.depth = 0  # nodes being composed (the composer recurses once per level)
        self.counts: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) with aliases expanded
        self.keys: dict[int, list] = {}  # id(mapping node) -> its key nodes as written (merging adds others)
        self.expanded = ""  # what the messages add once the document has aliases

    def compose_node(self, parent, index):
        event = self.peek_event()
        if self.depth > MAX_DEPTH:  # before recursing further (the precise check is below, on the way back)
            raise self._limit(f"nests more than {MAX_DEPTH} levels deep (MAX_DEPTH)", event.start_mark)
        self.depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if isinstance(event, yaml.AliasEvent):
            self.expanded = " once its aliases are expanded"
            if id(node) not in self.counts:  # still being composed: the alias is inside its own anchor
                raise self._limit(f"has a recursive alias (*{event.anchor} inside &{event.anchor})", event.start_mark)
            values, depth = self.counts[id(node)]
        else:
            children = (
                node.value
                if isinstance(node, SequenceNode)
                else [n for pair in node.value for n in pair]
                if isinstance(node, MappingNode)
                else ()
            )
            counted = [self.counts[id(child)] for child in children]
            values = 1 + sum(v for v, _ in counted)
            depth = 0 if isinstance(node, ScalarNode) else 1 + max((d for _, d in counted), default=0)
            self.counts[id(node)] = values, depth
            if isinstance(node, MappingNode):
                self.keys[id(node)] = [key for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
        if values > MAX_NODES:
            raise self._limit(
                f"expands to more than {MAX_NODES:,} values{self.expanded} (MAX_NODES): {values:,} in the node",
                node.start_mark,
            )
        if self.depth + depth > MAX_DEPTH:
            raise self._limit(
                f"nests {self.depth + depth} levels deep{self.expanded}, more than {MAX_DEPTH} "
                f"(MAX_DEPTH), through the node",
                node.start_mark,
            )
        return node

    def construct_mapping(self, node, deep=False):
        """SafeLoader's, after refusing a key written twice in the mapping (a key it merges with `<<` may be written
        again: YAML's override; node.value may already hold the merged keys, where it was merged into another)."""
        if isinstance(node, MappingNode):
            seen = {}
            for key_node in self.keys.get(id(node), ()):
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # unhashable: SafeLoader's own error follows
                    continue
                if first is not key_node:
                    raise DuplicateKeyError(key, key_node.start_mark, first.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        if len(node.value) > MAX_INT_CHARS:
            raise self._limit(
                f"has an integer of {len(node.value):,} characters, more than {MAX_INT_CHARS:,}", node.start_mark
            )
        return super().construct_yaml_int(node)

    def _limit(self, problem: str, mark) -> YAMLLimitError:
        error = YAMLLimitError(f"{self.what} {problem} at line {mark.line + 1}")
        error.problem, error.problem_mark = problem, mark  # as YAML's own errors have them
        return error


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
