"""Sweep configs: loading, validation against workflow/schemas/config.schema.yaml, defaults.

This module owns what a valid config is (`check`; a tune: section's, `check_tune`): the schema,
through `snakemake.utils.validate`, and what a schema cannot say. Every error is one line naming
the offending key and value, raised before anything is written or any job starts.
"""

from __future__ import annotations

import copy
import difflib
import importlib.util
import math
import os
import re
from pathlib import Path

import yaml

from ssmpipe.columns import LENGTH_METRICS, MEASURES, METRICS, PROFILES
from ssmpipe.errors import ConfigError, InputError
from ssmpipe.inputs import InputLimitError, check_size, load_yaml, read_file
from ssmpipe.layout import NAME, RESERVED

# The config schema: workflow/schemas/config.schema.yaml, through a link in the package (a wheel holds a copy).
SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"

# PyYAML (and so Snakemake's config loader) reads `1e-3` as a string (YAML 1.1).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
SEARCHERS = {"optuna": "optuna", "hyperopt": "hyperopt"}  # tune.search -> the module it needs
__all__ = ["ConfigError", "InputError"]  # and every public name below


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def load(path: str | Path) -> dict:
    """Read a YAML config file and return it checked, with defaults filled in."""
    return check(read(path))


def load_sweeps(path: str | Path) -> list[dict]:
    """The checked sweeps of a config file: its own, or those of the experiments it lists (`sweeps`)."""
    return sweeps(read(path))


def load_experiments(path: str | Path) -> tuple[list[dict], dict[str, str]]:
    """A config file's checked sweeps, and those of the experiments it lists that need data not here (`experiments`)."""
    return experiments(read(path))


def load_slurm(path: str | Path) -> tuple[str, dict]:
    """A config file's sweep name and its checked `slurm:` section (defaults filled in), the rest unchecked.

    For the process that waits on a shard's SLURM job: it needs no more, and so imports no
    more than yaml and jsonschema (a full check imports pandas: ~50 MB in each of them).
    """
    from jsonschema import Draft202012Validator

    raw = read(path)
    schema = load_schema()
    part = {
        "type": "object",
        "required": ["sweep"],
        "properties": {k: schema["properties"][k] for k in ("sweep", "slurm")},
    }
    errors = sorted(Draft202012Validator(part).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    defaults = {k: v["default"] for k, v in schema["properties"]["slurm"]["properties"].items() if "default" in v}
    slurm = {**defaults, **raw.get("slurm", {})}
    _check_slurm(slurm)
    return raw["sweep"], slurm


def check(config: dict) -> dict:
    """Validate `config`; return a copy with defaults filled in, or raise ConfigError. The copy's `typed` lists the
    dotted keys the config gave itself (a checked config passed again keeps its list)."""
    from jsonschema import Draft202012Validator, ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    _bounded(config)
    config = _apply_scale(_finite_numbers(copy.deepcopy(dict(config))))
    if "typed" not in config:  # before the defaults go in; a checked config passed again keeps its list
        config["typed"] = sorted(flatten(config))
    schema = load_schema()
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    try:
        validate(config, str(SCHEMA_PATH), set_default=True)  # fills in the schema's defaults
    except (WorkflowError, ValidationError) as e:  # unreachable after the check above, kept honest
        raise ConfigError(str(e)) from None
    check_name(config["sweep"], "sweep")
    _check_results(config["results"])
    _check_grid(config, schema)
    for label, settings in _extremes(config["fixed"], [(f"grid.{k}", k, v) for k, v in config["grid"].items()], "grid"):
        _check_settings(settings, label)
    _check_slurm(config["slurm"])
    _check_report(config["report"])
    if config.get("tune"):  # here, so the workflow stops on a bad space before planning writes anything
        check_tune(config)
    return config


# A config of configs: `experiments: [files]` plans them all in one DAG; these keys, given beside the list (or
# with --config), override every experiment's own.
EXPERIMENT_OVERRIDES = ("results", "scale", "launcher", "slurm")


def sweeps(config: dict) -> list[dict]:
    """The checked sweep configs a config stands for: itself, or each file its `experiments:` list names, with
    EXPERIMENT_OVERRIDES put in, less those that need data not here (`experiments`). ConfigError naming the key or
    file; two experiments may not share a sweep name."""
    return experiments(config)[0]


def experiments(config: dict) -> tuple[list[dict], dict[str, str]]:
    """(the checked sweeps of `config`, {experiment file: why it cannot run here} for the files of its
    `experiments:` list that need data not here (`needs_data`): those are left out of the sweeps, not an error).
    A config without `experiments:` is its own sweep, checked as it is (a missing data set is a ConfigError)."""
    _bounded(config)
    if "experiments" not in config:
        return [check(config)], {}
    extra = sorted(set(config) - {"experiments", *EXPERIMENT_OVERRIDES})
    if extra:
        raise ConfigError(
            f"unknown key {extra[0]!r} beside experiments:; allowed: experiments, {', '.join(EXPERIMENT_OVERRIDES)}"
        )
    files = config["experiments"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"experiments = {files!r}: a list of experiment config files")
    out, waiting, seen = [], {}, {}
    for i, path in enumerate(files):
        raw = read(path)
        raw.update({k: config[k] for k in EXPERIMENT_OVERRIDES if k in config})
        why = needs_data(raw)
        try:
            checked = None if why else check(raw)
        except ConfigError as e:
            raise ConfigError(f"experiments[{i}] ({path}): {e}") from None
        name = checked["sweep"] if checked else raw.get("sweep")
        if name in seen:
            raise ConfigError(f"experiments[{i}] ({path}): sweep {name!r} is also experiments[{seen[name]}]'s")
        seen[name] = i
        if why:
            waiting[path] = why
        else:
            out.append(checked)
    if not out:
        why = "; ".join(f"{path}: {reason}" for path, reason in waiting.items())
        raise ConfigError(f"experiments: every one needs data not here ({why})")
    return out, waiting


# Tasks read from task.path that ssmpipe cannot make itself: what such a path must hold.
DATA_NEEDED = {
    "imdb": "an aclImdb folder (or its Parquet export) is needed (IMDb is not generated)",
    "npz": "a .npz file is needed (task npz is not generated)",
}


def needs_data(config: dict) -> str | None:
    """Why a sweep config cannot run here for want of data, in one line, or None when it can.

    Only a task read from task.path that ssmpipe cannot generate counts (DATA_NEEDED: imdb, npz), in `fixed` or on
    the grid: its path unset ("task.path: an aclImdb folder (or its Parquet export) is needed (IMDb is not
    generated)"), or naming nothing that holds such a data set ("task.path = '/data/aclImdb': no such folder ...").
    `config` is an experiment's file as read (its `scales` merged by its `scale`, default small) or a checked
    config; a config broken otherwise gives None (`check` names its error). Reads the path, writes nothing.
    """
    from ssmpipe.data import imdb

    try:
        config = _apply_scale(_finite_numbers(copy.deepcopy(dict(config))))
    except ConfigError:
        return None
    fixed = config.get("fixed") if isinstance(config.get("fixed"), dict) else {}
    task = fixed.get("task") if isinstance(fixed.get("task"), dict) else {}
    grid = config.get("grid") if isinstance(config.get("grid"), dict) else {}
    names = grid.get("task.name") or [task.get("name", "delay")]
    paths = grid.get("task.path") or [task.get("path")]
    for name in (n for n in names if n in DATA_NEEDED):
        for path in paths:
            if not path:
                return f"task.path: {DATA_NEEDED[name]}"
            if not isinstance(path, str):
                return None  # not a path: check() says so
            problem = (
                imdb.path_problem(path)
                if name == "imdb"
                else (None if Path(path).is_file() else "no such file (task npz reads a .npz file)")
            )
            if problem:
                return f"task.path = {path!r}: {problem}"
    return None


def check_name(name: str, key: str = "sweep") -> None:
    """A sweep (or study) name must be a plain folder name under the results root, and not one of the store's."""
    if not isinstance(name, str) or not NAME.fullmatch(name):  # fullmatch: "probe\n" is no name ($ would pass it)
        raise ConfigError(f"{key} = {name!r}: not a sweep name (letters, digits and _ . -, not starting with . or -)")
    if name.lower() in RESERVED:
        raise ConfigError(
            f"{key} = {name!r}: the results root's {name.lower()}/ folder is the store's, not a "
            f"sweep's (reserved: {', '.join(RESERVED)}); choose another name"
        )


def setting_schema(key: str, schema: dict | None = None) -> dict | None:
    """The schema of one leaf setting, by dotted key (e.g. model.init.real); None if unknown."""
    node = (schema or load_schema())["$defs"]["settings"]
    for part in key.split("."):
        props = node.get("properties") if node.get("type") == "object" else None
        if not props or part not in props:
            return None
        node = props[part]
    return None if node.get("type") == "object" else node


def setting_types(schema: dict | None = None) -> dict[str, str]:
    """Dotted key -> JSON type ('integer', 'number', 'string', 'boolean', 'array' of integers) of every leaf setting."""
    out: dict[str, str] = {}

    def walk(node: dict, prefix: str) -> None:
        if node.get("type") == "object":
            for name, sub in node["properties"].items():
                walk(sub, f"{prefix}{name}.")
        else:
            out[prefix[:-1]] = node.get("type", "string")  # enums of names are strings

    walk((schema or load_schema())["$defs"]["settings"], "")
    return out


def get_path(d: dict, key: str):
    for part in key.split("."):
        d = d[part]
    return d


def set_path(d: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        d = d.setdefault(part, {})
    d[last] = value


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested settings as {dotted key: value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def plain(obj):
    """A copy with plain dicts and lists (Snakemake's config may hold OrderedDicts), for YAML and hashing."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v) for v in obj]
    return obj


# --- a tune: section (a study's search space; ssmpipe/tune/ runs it) -------------------------------------------


def study_name(config: dict) -> str:
    """The name of a config's tune study: its folder under the results root."""
    return config["tune"].get("study") or f"{config['sweep']}-tune"


def max_epochs(config: dict) -> int:
    """The most epochs any trial of the config's study trains (ASHA's max_t)."""
    spec = config["tune"]["space"].get("train.epochs")
    if spec:
        ((kind, values),) = spec.items()
        return max(int(v) for v in values)
    return int(config["fixed"]["train"]["epochs"])


def check_tune(config: dict) -> None:
    """What the schema cannot say about a checked config's `tune:` section; ConfigError naming key and value.

    The study's name must be neither the sweep's nor a store folder's. Every space key must be a known leaf
    setting and every value (both ends of a range) valid for it; ranges only over number settings, low < high
    (low > 0 for loguniform); the settings at each value, and at the extreme corner, pass a grid's checks.
    """
    from jsonschema import Draft202012Validator

    if not config.get("tune"):
        raise ConfigError(
            "the config has no tune: section (a search space to run a study over); "
            "see README.md, 'Hyperparameter search'"
        )
    tune, schema = config["tune"], load_schema()
    types = setting_types(schema)
    check_name(study_name(config), "tune.study")
    if study_name(config) == config["sweep"]:  # its runs.parquet and report would replace the sweep's
        raise ConfigError(f"tune.study = {study_name(config)!r} is the sweep's own name; name the study otherwise")
    for key, spec in tune["space"].items():
        ((kind, values),) = spec.items()
        where = f"tune.space.{key}"
        leaf = setting_schema(key, schema)
        if leaf is None:
            raise ConfigError(
                f"{where}: unknown setting {key!r} ({kind}: {values!r}){_did_you_mean(key, types)}; "
                f"{_settings_hint(types)}"
            )
        if kind in ("uniform", "loguniform"):
            if types[key] != "number":
                raise ConfigError(
                    f"{where}.{kind} = {values!r}: {key} is a setting of type {types[key]}, "
                    f"not a number; search it with choice or grid"
                )
            if (
                len(values) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
                or not values[0] < values[1]
            ):
                raise ConfigError(f"{where}.{kind} = {values!r}: needs [low, high], two numbers with low < high")
            if kind == "loguniform" and values[0] <= 0:
                raise ConfigError(f"{where}.loguniform = {values!r}: low must be > 0 for a log scale")
        else:
            _no_repeats(values, f"{where}.{kind}")
        _check_values(Draft202012Validator(leaf), values, f"{where}.{kind}")
    if tune["search"] != "random":
        grids = [k for k, s in tune["space"].items() if "grid" in s]
        if grids:
            raise ConfigError(
                f"tune.space.{grids[0]}: grid entries need tune.search 'random' "
                f"(tune.search = {tune['search']!r} samples every key)"
            )
        if importlib.util.find_spec(SEARCHERS[tune["search"]]) is None:
            raise ConfigError(
                f"tune.search = {tune['search']!r}: the {SEARCHERS[tune['search']]} package is not "
                f"installed (pip install 'ssmpipe[search]'), or use search: random"
            )
    epochs = max_epochs(config)
    if tune["scheduler"] == "asha" and tune["grace_period"] > epochs:
        raise ConfigError(
            f"tune.grace_period = {tune['grace_period']!r} is more than the {epochs} epochs a trial "
            f"trains (train.epochs)"
        )
    axes = [(f"tune.space.{k}.{kind}", k, v) for k, spec in tune["space"].items() for kind, v in spec.items()]
    for label, settings in _extremes(config["fixed"], axes, "tune.space"):
        _check_settings(settings, label)


# --- internals ---------------------------------------------------------------


def read(path: str | Path) -> dict:
    """A config file's mapping, unchecked, read as untrusted YAML (`inputs.load_yaml`: no duplicate key, bounded
    work); ConfigError naming the file. Snakemake's YAML templating (`__use_yte__`, which runs the file's Python when
    Snakemake reads it) is refused: an ssmpipe config is data."""
    path = Path(path)
    if path.is_dir() or not path.exists():
        raise ConfigError(f"config file {str(path)!r} " + ("is a folder" if path.is_dir() else "does not exist"))
    try:
        raw = load_yaml(read_file(path).decode("utf-8"), f"config file {str(path)!r}")
    except InputLimitError as e:  # an alias bomb, a document nested too deep: it says which limit
        raise ConfigError(str(e)) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not a text (UTF-8) file") from None
    except OSError as e:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:  # a duplicate key too
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or e
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {problem}{at}") from None
    except ValueError as e:  # not a regular file (a FIFO: reading it would wait forever)
        raise ConfigError(f"config file {e}") from None
    if isinstance(raw, dict) and "__use_yte__" in raw:
        raise ConfigError(
            f"config file {str(path)!r}: __use_yte__ = {raw['__use_yte__']!r}: Snakemake's YAML templating runs code "
            f"from the file; an ssmpipe config is plain data (remove the key)"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {str(path)!r} "
            + ("is empty" if raw is None else f"must hold a mapping, got {type(raw).__name__}")
        )
    return raw


def _bounded(config: dict) -> None:
    """A config parsed elsewhere (Snakemake's --configfile) walked with bounded work before anything else walks it:
    a YAML alias bomb is cheap to parse into shared parts, and then exponential to walk."""
    try:
        check_size(config)
    except InputLimitError as e:
        raise ConfigError(str(e)) from None


def _apply_scale(config: dict) -> dict:
    """An experiment's `scales: {small: {...}, paper: {...}}`: the one `scale` names (default small) is merged in."""
    scales = config.pop("scales", None)
    if scales is None:
        return config
    scale = config.setdefault("scale", "small")
    if not isinstance(scales, dict) or scale not in scales:
        known = ", ".join(scales) if isinstance(scales, dict) else "none"
        raise ConfigError(f"scale = {scale!r}: the config's scales are {known}")
    return _merge(config, scales[scale])


def _merge(base: dict, over: dict) -> dict:
    """base with over put in: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _finite_numbers(node, path=()):
    """Exponent strings ('1e-3') as floats; NaN or ±infinity anywhere (YAML .nan, .inf, '1e999') is an error."""
    if isinstance(node, dict):
        return {k: _finite_numbers(v, (*path, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_finite_numbers(v, (*path, i)) for i, v in enumerate(node)]
    value = float(node) if isinstance(node, str) and _EXPONENT_FLOAT.match(node.strip()) else node
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_where(path)} = {node!r}: not a finite number (NaN and infinity are not allowed)")
    return value


def _check_results(root: str) -> None:
    """The results root must be a folder this process can write, or one it can create; its path plain text (every
    rule's paths begin with it: a brace would be a Snakemake wildcard, a line break would end an sbatch line)."""
    bad = next((c for c in root if c in "{}" or not c.isprintable()), None)
    if bad is not None:
        why = "a Snakemake wildcard brace" if bad in "{}" else f"the control character {bad!r}"
        raise ConfigError(f"results = {root!r}: a results path may not hold {why}")
    path = Path(root)
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"results = {root!r}: a broken symbolic link (to {os.readlink(path)!r})")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"results = {root!r}: a file, not a folder (the store needs a folder)")
    parent = path.absolute()
    while not parent.exists() and not parent.is_symlink():  # the nearest existing folder is where it is created
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"results = {root!r}: {str(parent)!r} is a file, not a folder, so the store cannot be made")
    if not os.access(parent, os.W_OK | os.X_OK):
        what = "the folder" if parent == path.absolute() else f"{str(parent)!r}, where it would be made,"
        raise ConfigError(f"results = {root!r}: {what} is not writable")


def _where(path) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _did_you_mean(word: str, known) -> str:
    """' (did you mean 'x'?)' for a close known name, else ''."""
    close = difflib.get_close_matches(str(word), list(known), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _settings_hint(types) -> str:
    """Where the settings are listed, rather than all of them on one line."""
    groups = sorted({k.split(".")[0] for k in types})
    return f"settings are dotted keys under {', '.join(groups)} (all of them: workflow/schemas/config.schema.yaml)"


def _describe(error, schema: dict | None = None, prefix: str = "") -> str:
    """One line naming the key, the value and what is wrong."""
    where = prefix + _where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        base = f"{where}." if error.absolute_path or prefix else ""
        return (
            f"unknown key {base}{extra[0]!r} (value {error.instance[extra[0]]!r}){_did_you_mean(extra[0], allowed)}; "
            f"allowed keys here: {', '.join(allowed)}"
        )
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "minItems" and error.instance == []:
        return f"{where} = []: an axis needs at least one value"
    return f"{where} = {error.instance!r}: {error.message}"


def _check_grid(config: dict, schema: dict) -> None:
    from jsonschema import Draft202012Validator

    for key, values in config["grid"].items():
        leaf = setting_schema(key, schema)
        if leaf is None:
            raise ConfigError(
                f"grid.{key}: unknown setting {key!r} (values {values!r}){_did_you_mean(key, setting_types(schema))}; "
                f"{_settings_hint(setting_types(schema))}"
            )
        _check_values(Draft202012Validator(leaf), values, f"grid.{key}")
        _no_repeats(values, f"grid.{key}")
    n = math.prod(len(values) for values in config["grid"].values())  # counted, not expanded
    if n > config["max_points"]:
        axes = " × ".join(f"{len(v)} {k}" for k, v in config["grid"].items())
        raise ConfigError(
            f"grid: {n:,} points ({axes}) is more than max_points = {config['max_points']:,}, "
            f"and planning them would take minutes; shrink the grid, or raise the limit with "
            f"`max_points: {n}` in the config (or --config max_points={n})"
        )


def _check_values(validator, values: list, where: str) -> None:
    for i, value in enumerate(values):
        for error in validator.iter_errors(value):
            raise ConfigError(f"{where}[{i}] = {value!r}: {error.message}")


def _no_repeats(values: list, where: str) -> None:
    seen = []
    for value in values:
        if value in seen:
            raise ConfigError(f"{where} has the value {value!r} twice")
        seen.append(value)


# Settings bounded by another (lag < seq_len, dt_min <= dt_max): largest and smallest of each, at one corner.
_CORNER_MAX, _CORNER_MIN = ("task.lag", "model.init.dt_min"), ("seq_len", "model.init.dt_max")


def _extremes(fixed: dict, axes: list[tuple[str, str, list]], corner_label: str):
    """(label, settings) at every value of each axis (label, key, values), one axis at a time (the sum of their
    lengths, not their product), then at the extreme corner, where the cross-field bounds can fail."""
    corner = copy.deepcopy(fixed)
    yield "fixed", fixed
    for label, key, values in axes:
        for i, value in enumerate(values):
            settings = copy.deepcopy(fixed)
            set_path(settings, key, value)
            yield f"{label}[{i}]", settings
        if key in _CORNER_MAX + _CORNER_MIN:
            set_path(corner, key, (max if key in _CORNER_MAX else min)(values))
    yield f"{corner_label} (extreme corner)", corner


def _check_settings(settings: dict, where: str) -> None:
    for T in settings["test_seq_lens"]:  # each test length must make a data set of the task, as seq_len does
        _check_settings({**settings, "seq_len": T, "test_seq_lens": []}, f"{where} (test_seq_lens: {T})")
    task = settings["task"]
    if task["name"] == "delay" and task["lag"] >= settings["seq_len"]:
        raise ConfigError(f"{where}: task.lag = {task['lag']!r} must be shorter than seq_len = {settings['seq_len']!r}")
    if task["name"] == "npz":
        from ssmpipe.data import npz

        path = task.get("path")
        if path is None:
            raise ConfigError(f"{where}: task.path is missing; task 'npz' needs a path to a .npz file")
        problem = npz.path_problem(path, task["vocab"], settings["seq_len"])
        if problem:
            raise ConfigError(f"{where}: task.path = {path!r}: {problem}")
    if task["name"] in ("imdb", "listops"):  # imdb reads a folder; listops reads one when path is set
        from ssmpipe.data import imdb, listops

        path = task.get("path")
        if path is None and task["name"] == "imdb":
            raise ConfigError(
                f"{where}: task.path is missing; task 'imdb' needs a folder (aclImdb or its Parquet export)"
            )
        problem = path and {"imdb": imdb, "listops": listops}[task["name"]].path_problem(path)
        if problem:
            raise ConfigError(f"{where}: task.path = {path!r}: {problem}")
    if task["name"] == "digits":
        from ssmpipe.data import digits

        if settings["seq_len"] < digits.PIXELS:
            raise ConfigError(
                f"{where}: seq_len = {settings['seq_len']!r}: task 'digits' needs seq_len ≥ "
                f"{digits.PIXELS} (one 8×8 image)"
            )
        if task["n_train"] + task["n_test"] > digits.N_IMAGES:
            raise ConfigError(
                f"{where}: task.n_train = {task['n_train']!r} plus task.n_test = "
                f"{task['n_test']!r} exceeds the {digits.N_IMAGES} images of task 'digits'"
            )
    init = settings["model"]["init"]
    if settings["model"]["kind"] == "selective":  # its Δ is input-dependent and it has no kernel
        for key, value, lti in (
            ("model.init.dt", init["dt"], "s4d"),
            ("model.init.c_scaling", init["c_scaling"], "none"),
            ("reg.lambda", settings["reg"]["lambda"], 0.0),
        ):
            if value != lti:
                raise ConfigError(
                    f"{where}: {key} = {value!r} needs an LTI layer (model.kind s4d or s4), "
                    f"not model.kind = 'selective'"
                )
    if init["dt_min"] > init["dt_max"]:
        raise ConfigError(
            f"{where}: model.init.dt_min = {init['dt_min']!r} is larger than model.init.dt_max = {init['dt_max']!r}"
        )


def _check_slurm(slurm: dict) -> None:
    limit_s = slurm["timeout_min"] * 60
    if slurm["signal_delay_s"] >= limit_s:
        raise ConfigError(
            f"slurm.signal_delay_s = {slurm['signal_delay_s']!r} must be shorter than the time limit "
            f"slurm.timeout_min = {slurm['timeout_min']!r} ({limit_s} s)"
        )
    if slurm["shards_per_job"] > 1 and slurm["array_size"] == 1:
        raise ConfigError(
            f"slurm.shards_per_job = {slurm['shards_per_job']!r} needs job arrays: slurm.array_size = 1 sends each "
            "shard as a job of its own; raise array_size, or set shards_per_job to 1"
        )


def _check_report(report: dict) -> None:
    settings = set(setting_types())
    metrics = set(METRICS) | set(MEASURES) | {"gap"}
    for i, spec in enumerate(report["figures"]):
        where = f"report.figures[{i}]"
        if not re.fullmatch(r"[a-z0-9_]+", spec["name"]):  # a file name: the schema's $ lets "x\n" through
            raise ConfigError(f"{where}.name = {spec['name']!r}: lowercase letters, digits and _ only")
        known = {"profile": set(PROFILES), "lengths": set(LENGTH_METRICS)}.get(spec["kind"], metrics)
        if spec["metric"] not in known:
            raise ConfigError(
                f"{where}.metric = {spec['metric']!r}: not a metric of kind {spec['kind']!r}; known: "
                f"{', '.join(sorted(known))}"
            )
        for key in ("x", "group", "panel"):
            if key in spec and spec[key] not in settings:
                raise ConfigError(f"{where}.{key} = {spec[key]!r}: not a setting")
        for key in {"profile": ("x",), "lengths": ("x", "group")}.get(spec["kind"], ()):
            if key in spec:  # their axes are fixed: the lag τ; train length × test length
                raise ConfigError(f"{where}: kind {spec['kind']!r} takes no {key} ({key} = {spec[key]!r})")
        heatmap = spec["kind"] == "heatmap"
        if spec["kind"] in ("lines", "heatmap") and "x" not in spec or heatmap and "group" not in spec:
            raise ConfigError(f"{where}: kind {spec['kind']!r} needs x" + (" and group" if heatmap else ""))
