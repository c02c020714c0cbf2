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
    return check(raw)


def check(config: dict) -> dict:
    """Validate `config`; return a copy with defaults filled in, or raise ConfigError."""
    from jsonschema import Draft202012Validator, ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    config = _coerce_exponent_strings(copy.deepcopy(dict(config)))
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
    """Dotted key -> JSON type ('integer', 'number', 'string', 'boolean') of every leaf setting."""
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
    init = settings["model"]["init"]
    if init["dt_min"] > init["dt_max"]:
        raise ConfigError(f"{where}: model.init.dt_min = {init['dt_min']!r} is larger than "
                          f"model.init.dt_max = {init['dt_max']!r}")


def _check_slurm(slurm: dict) -> None:
    limit_s = slurm["timeout_min"] * 60
    if slurm["signal_delay_s"] >= limit_s:
        raise ConfigError(f"slurm.signal_delay_s = {slurm['signal_delay_s']!r} must be shorter than the time limit "
                          f"slurm.timeout_min = {slurm['timeout_min']!r} ({limit_s} s)")
