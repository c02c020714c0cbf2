"""Sweep configs: loading, validation against workflow/schemas/config.schema.yaml, defaults.

This module owns what a valid config is. Snakemake (workflow/rules/common.smk)
and the `ssmpipe` CLI both call `check`, which validates with the same schema
file through `snakemake.utils.validate` and adds the checks a JSON schema
cannot express (grid keys, grid values, data paths, cross-field bounds).
Every error names the offending key and value.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# PyYAML (and so Snakemake's config loader) reads `1e-3` as a string (YAML 1.1).
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the value."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def load(path: str | Path) -> dict:
    """Read a YAML config file and return it checked, with defaults filled in."""
    return check(_read(path))


def load_slurm(path: str | Path) -> tuple[str, dict]:
    """A config file's sweep name and its checked `slurm:` section (defaults filled in), the rest unchecked.

    For the process that waits on a shard's SLURM job: it needs no more, and so imports no
    more than yaml and jsonschema (a full check imports pandas: ~50 MB in each of them).
    """
    from jsonschema import Draft202012Validator

    raw = _read(path)
    schema = load_schema()
    part = {"type": "object", "required": ["sweep"],
            "properties": {k: schema["properties"][k] for k in ("sweep", "slurm")}}
    errors = sorted(Draft202012Validator(part).iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    defaults = {k: v["default"] for k, v in schema["properties"]["slurm"]["properties"].items() if "default" in v}
    slurm = {**defaults, **raw.get("slurm", {})}
    _check_slurm(slurm)
    return raw["sweep"], slurm


def check(config: dict) -> dict:
    """Validate `config`; return a copy with defaults filled in, or raise ConfigError."""
    from jsonschema import Draft202012Validator, ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = _apply_scale(_coerce_exponent_strings(copy.deepcopy(dict(config))))
    schema = load_schema()
    errors = sorted(Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_describe(errors[0], schema))
    try:
        validate(config, str(SCHEMA_PATH), set_default=True)  # fills in the schema's defaults
    except (WorkflowError, ValidationError) as e:  # unreachable after the check above, kept honest
        raise ConfigError(str(e)) from None
    _check_grid(config, schema)
    for label, settings in _axis_extremes(config):
        _check_settings(settings, label)
    _check_slurm(config["slurm"])
    _check_report(config["report"])
    return config


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


# --- internals ---------------------------------------------------------------


def _read(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with open(path) as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(raw).__name__}")
    return raw


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


def _coerce_exponent_strings(node):
    if isinstance(node, dict):
        return {k: _coerce_exponent_strings(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_coerce_exponent_strings(v) for v in node]
    if isinstance(node, str) and _EXPONENT_FLOAT.match(node.strip()):
        return float(node)
    return node


def _where(path) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
    return ".".join(parts).replace(".[", "[") or "<top level>"


def _describe(error, schema: dict | None = None, prefix: str = "") -> str:
    """One line naming the key, the value and what is wrong."""
    where = prefix + _where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        base = f"{where}." if error.absolute_path or prefix else ""
        return (f"unknown key {base}{extra[0]!r} (value {error.instance[extra[0]]!r}); "
                f"allowed keys here: {', '.join(allowed)}")
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
            raise ConfigError(f"grid.{key}: unknown setting {key!r} (values {values!r}); "
                              f"known settings: {', '.join(sorted(setting_types(schema)))}")
        validator = Draft202012Validator(leaf)
        for i, value in enumerate(values):
            for error in validator.iter_errors(value):
                raise ConfigError(f"grid.{key}[{i}] = {value!r}: {error.message}")
        seen = []
        for value in values:
            if value in seen:
                raise ConfigError(f"grid.{key} has the value {value!r} twice")
            seen.append(value)


def _axis_extremes(config: dict):
    """Settings at every axis value, one axis at a time (sum of axis lengths, not their product)."""
    base = copy.deepcopy(config["fixed"])
    yield "fixed", base
    for key, values in config["grid"].items():
        for i, value in enumerate(values):
            settings = copy.deepcopy(base)
            set_path(settings, key, value)
            yield f"grid.{key}[{i}]", settings
    # Cross-field bounds (lag < seq_len, dt_min <= dt_max) can fail only at a grid corner:
    corner = copy.deepcopy(base)
    for key, values in config["grid"].items():
        if key in ("task.lag", "model.init.dt_min"):
            set_path(corner, key, max(values))
        elif key in ("seq_len", "model.init.dt_max"):
            set_path(corner, key, min(values))
    yield "grid (extreme corner)", corner


def _check_settings(settings: dict, where: str) -> None:
    for T in settings["test_seq_lens"]:  # each test length must make a data set of the task, as seq_len does
        _check_settings({**settings, "seq_len": T, "test_seq_lens": []}, f"{where} (test_seq_lens: {T})")
    task = settings["task"]
    if task["name"] == "delay" and task["lag"] >= settings["seq_len"]:
        raise ConfigError(f"{where}: task.lag = {task['lag']!r} must be shorter than "
                          f"seq_len = {settings['seq_len']!r}")
    if task["name"] == "npz":
        path = task.get("path")
        if path is None:
            raise ConfigError(f"{where}: task.path is missing; task 'npz' needs a path to a .npz file")
        if not Path(path).is_file():
            raise ConfigError(f"{where}: task.path = {path!r}: no such file")
    if task["name"] in ("imdb", "listops"):  # imdb reads a folder; listops reads one when path is set
        from ssmpipe.data import imdb, listops

        path = task.get("path")
        if path is None and task["name"] == "imdb":
            raise ConfigError(f"{where}: task.path is missing; task 'imdb' needs a folder "
                              f"(aclImdb or its Parquet export)")
        problem = path and {"imdb": imdb, "listops": listops}[task["name"]].path_problem(path)
        if problem:
            raise ConfigError(f"{where}: task.path = {path!r}: {problem}")
    if task["name"] == "digits":
        from ssmpipe.data import digits

        if settings["seq_len"] < digits.PIXELS:
            raise ConfigError(f"{where}: seq_len = {settings['seq_len']!r}: task 'digits' needs seq_len ≥ "
                              f"{digits.PIXELS} (one 8×8 image)")
        if task["n_train"] + task["n_test"] > digits.N_IMAGES:
            raise ConfigError(f"{where}: task.n_train = {task['n_train']!r} plus task.n_test = "
                              f"{task['n_test']!r} exceeds the {digits.N_IMAGES} images of task 'digits'")
    init = settings["model"]["init"]
    if settings["model"]["kind"] == "selective":  # its Δ is input-dependent and it has no kernel
        for key, value, lti in (("model.init.dt", init["dt"], "s4d"), ("model.init.c_scaling", init["c_scaling"], "none"),
                                ("reg.lambda", settings["reg"]["lambda"], 0.0)):
            if value != lti:
                raise ConfigError(f"{where}: {key} = {value!r} needs an LTI layer (model.kind s4d or s4), "
                                  f"not model.kind = 'selective'")
    if init["dt_min"] > init["dt_max"]:
        raise ConfigError(f"{where}: model.init.dt_min = {init['dt_min']!r} is larger than "
                          f"model.init.dt_max = {init['dt_max']!r}")


def _check_slurm(slurm: dict) -> None:
    limit_s = slurm["timeout_min"] * 60
    if slurm["signal_delay_s"] >= limit_s:
        raise ConfigError(f"slurm.signal_delay_s = {slurm['signal_delay_s']!r} must be shorter than the time limit "
                          f"slurm.timeout_min = {slurm['timeout_min']!r} ({limit_s} s)")


def _check_report(report: dict) -> None:
    from ssmpipe.store import LENGTH_METRICS, MEASURES, METRICS, PROFILES

    settings = set(setting_types())
    metrics = set(METRICS) | set(MEASURES) | {"gap"}
    for i, spec in enumerate(report["figures"]):
        where = f"report.figures[{i}]"
        known = {"profile": set(PROFILES), "lengths": set(LENGTH_METRICS)}.get(spec["kind"], metrics)
        if spec["metric"] not in known:
            raise ConfigError(f"{where}.metric = {spec['metric']!r}: not a metric of kind {spec['kind']!r}; known: "
                              f"{', '.join(sorted(known))}")
        for key in ("x", "group", "panel"):
            if key in spec and spec[key] not in settings:
                raise ConfigError(f"{where}.{key} = {spec[key]!r}: not a setting")
        for key in {"profile": ("x",), "lengths": ("x", "group")}.get(spec["kind"], ()):
            if key in spec:  # their axes are fixed: the lag τ; train length × test length
                raise ConfigError(f"{where}: kind {spec['kind']!r} takes no {key} ({key} = {spec[key]!r})")
        if spec["kind"] in ("lines", "heatmap") and "x" not in spec or spec["kind"] == "heatmap" and "group" not in spec:
            raise ConfigError(f"{where}: kind {spec['kind']!r} needs x" + (" and group" if spec["kind"] == "heatmap" else ""))
