"""A report's config block: what the sweep (or study) set, in UTF-8 YAML, and the defaults it used folded away.

The snapshot <results>/<sweep>/config.yaml holds the checked config, the schema's defaults filled in
(ssmpipe.config.check), and the keys the file gave (`typed`). Here it is split against those defaults: a setting
the file gave or whose value differs from its default, every grid axis, the task's name and the model's kind are
what the sweep set; the rest are the defaults it ran with. Settings the run
never reads are left out of both: a fixed value a grid axis replaces, a task key its task does not read
(TASK_KEYS), a model key its layer does not read (MODEL_KEYS) or reads only with another setting's value
(ONLY_WITH), slurm: when train jobs run here, and in a tune study the grid (a study samples its space
instead) and the fixed values of the searched settings — the study's name heads the block, not the sweep's.
"""

from __future__ import annotations

import html

import yaml

from ssmpipe import config as cfg

# task.name -> the task.* keys its data set is made from (ssmpipe/data/<task>.py; tests/test_report.py checks
# the generated tasks against what their generators read)
TASK_KEYS = {
    "delay": {"name", "lag", "vocab", "n_train", "n_test", "seed"},
    "npz": {"name", "path", "vocab", "data_hash"},
    "majority": {"name", "n_train", "n_test", "seed", "label_noise", "input_noise"},
    "variance": {"name", "moment", "n_train", "n_test", "seed"},
    "digits": {"name", "n_train", "n_test", "seed", "permute"},
    "listops": {"name", "n_train", "n_test", "seed", "max_depth", "max_args", "length_window", "path", "data_hash"},
    "imdb": {"name", "path", "vocab", "data_hash"},
}
_LTI = {
    "model.init.scale",
    "model.init.dt_min",
    "model.init.dt_max",
    "model.init.dt",
    "model.init.dt_c",
    "model.init.c_scaling",
    "model.discretization",
    "model.train_A",
    "reg.lambda",
}
# model.kind -> the model.init.*, model.discretization / train_A and reg.* keys its layers read
# (ssmpipe/models/sequence.py); every other model.* key (d_model, d_state, n_layers, block, pooling) all read
MODEL_KEYS = {
    "s4d": _LTI | {"model.init.scheme", "model.init.real", "model.init.imag"},
    "s4": _LTI,
    "selective": {"model.init.s_A"},
}
_BY_KIND = set().union(*MODEL_KEYS.values())
# keys read only when another setting has a value (ssmpipe/models/s4d.py: real, imag by the sweep scheme;
# ssmpipe/models/sequence.py: dt_c by the autocorr Δ rule)
ONLY_WITH = {
    "model.init.real": ("model.init.scheme", "sweep"),
    "model.init.imag": ("model.init.scheme", "sweep"),
    "model.init.dt_c": ("model.init.dt", "autocorr"),
}
NAMED = ("task.name", "model.kind")  # fixed settings always in the set part, default or not


def config_section(config: dict) -> str:
    """The config block of a report page: the set part shown, the used defaults in a closed <details>."""
    chosen, defaults = split(config)
    n = _count(defaults)
    folded = (
        (f"<details><summary>Defaults it used ({n} settings)</summary><pre>{_yaml(defaults)}</pre></details>")
        if n
        else ""
    )
    what = "study" if config.get("tune") else "sweep"
    gave = (
        "its config file gave"
        if _typed(config)
        else "it gave a value other than the default of <code>workflow/schemas/config.schema.yaml</code>"
    )
    return (
        f'<section id="config"><h2>Config</h2><p>What this {what} set: its name, '
        f"{'search' if what == 'study' else 'grid'}, task, model and every setting {gave}. Settings its runs "
        f"do not read are left out.</p><pre>{_yaml(chosen)}</pre>{folded}</section>"
    )


def _typed(config: dict) -> set[str] | None:
    """The keys the config file gave (`typed`, recorded by ssmpipe.config.check); None in a snapshot from before it
    recorded them (or a garbled list)."""
    typed = config.get("typed")
    return set(typed) if isinstance(typed, list) and all(isinstance(k, str) for k in typed) else None


def split(config: dict) -> tuple[dict, dict]:
    """(what the config set, the defaults it used), both without the settings its runs do not read.

    The keys the config file gave (`typed`, which ssmpipe.config.check records: "fixed.task.lag") count as set even
    where their value is the default; a snapshot written before it recorded them (no list of strings there) is
    split by value alone."""
    typed = _typed(config) or set()
    config = _used(config)
    defaults = _defaults(cfg.load_schema())
    for key in NAMED:  # named whether default or not: a reader looks for them first
        node = defaults.get("fixed", {})
        for part in key.split(".")[:-1]:
            node = node.get(part, {})
        node.pop(key.rsplit(".", 1)[1], None)
    chosen, used = {}, {}
    for key, value in config.items():
        if key in ("sweep", "study", "grid"):
            chosen[key] = value
            continue
        set_part, default_part = _diff(value, defaults.get(key), key, typed)
        if set_part is not None:
            chosen[key] = set_part
        if key == "report" and "figures" in (set_part or {}):  # each figure as written: its defaults left out
            item = figure_defaults()
            set_part["figures"] = [
                {k: v for k, v in f.items() if k not in item or item[k] != v} for f in set_part["figures"]
            ]
        if default_part is not None:
            used[key] = default_part
    return chosen, used


def _used(config: dict) -> dict:
    """The config without what its runs never read (see the module docstring); a study named first."""
    config = {k: v for k, v in config.items() if k != "typed"}
    study = config.get("tune")
    if study:
        name = study.get("study") or f"{config['sweep']}-tune"
        config = {"study": name, **{k: v for k, v in config.items() if k not in ("sweep", "grid")}}
        config["tune"] = {k: v for k, v in study.items() if k != "study"}
    else:
        config.pop("tune", None)
    if config.get("launcher", "local") == "local":
        config.pop("slurm", None)
    fixed = config.get("fixed") or {}
    # the values a setting takes in some run: the grid's (a study's space: only its choices are known), else fixed's
    swept = study["space"] if study else config.get("grid") or {}

    def values(key: str) -> set:
        choices = swept.get(key)
        if isinstance(choices, dict):  # a study's {choice: [...]} / {grid: [...]}; uniform ranges are numbers
            choices = choices.get("choice", choices.get("grid", []))
        if choices is not None:
            return set(choices)
        try:
            return {cfg.get_path(fixed, key)}
        except (KeyError, TypeError):
            return set()

    reads = set().union(*(TASK_KEYS.get(t, set()) for t in values("task.name")))
    uses = set().union(*(MODEL_KEYS.get(k, _BY_KIND) for k in values("model.kind")))

    def keep(key: str) -> bool:
        if key in swept:
            return False
        if key.startswith("task."):
            return key.split(".", 1)[1] in reads
        if key in ONLY_WITH and ONLY_WITH[key][1] not in values(ONLY_WITH[key][0]):
            return False
        return key not in _BY_KIND or key in uses

    if "fixed" in config:
        config["fixed"] = _filter(config["fixed"], keep)
    return config


def _filter(node, keep, prefix: str = ""):
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            sub = _filter(value, keep, dotted + ".")
            if sub:
                out[key] = sub
        elif keep(dotted):
            out[key] = value
    return out


def figure_defaults() -> dict:
    """A report figure's defaults (logy, at, family), from the schema."""
    item = cfg.load_schema()["properties"]["report"]["properties"]["figures"]["items"]["properties"]
    return {k: v["default"] for k, v in item.items() if "default" in v}


def _defaults(node: dict, root: dict | None = None):
    """The schema's defaults as a config: every property with a default (objects: their properties' defaults)."""
    root = root or node
    if "$ref" in node:  # "#/$defs/settings", the only reference in the schema
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    if node.get("type") == "object" and "properties" in node:
        out = {}
        for key, sub in node["properties"].items():
            value = _defaults(sub, root)
            if value is not None:
                out[key] = value
        return out
    default = node.get("default")
    item = (node.get("items") or {}).get("properties")
    if isinstance(default, list) and item:  # a list of objects (report.figures): each with its items' defaults
        fill = {k: v["default"] for k, v in item.items() if "default" in v}
        return [{**fill, **d} for d in default]
    return default


def _diff(value, default, at: str = "", typed: set[str] = frozenset()) -> tuple[object, object]:
    """(the part of value that differs from default or was typed (its dotted key `at` in `typed`), the part equal
    to it); None for an empty part."""
    if isinstance(value, dict) and isinstance(default, dict):
        chosen, same = {}, {}
        for key, sub in value.items():
            c, s = _diff(sub, default.get(key), f"{at}.{key}", typed)
            if c is not None:
                chosen[key] = c
            if s is not None:
                same[key] = s
        return chosen or None, same or None
    if value == default and at not in typed:
        return None, None if value in (None, {}, []) else value
    return value, None


def _count(node) -> int:
    return sum(_count(v) for v in node.values()) if isinstance(node, dict) else 1


def _yaml(node: dict) -> str:
    """YAML in UTF-8 (× stays ×, not \\xD7), lists of plain values on one line, escaped for HTML."""
    return html.escape(yaml.dump(node, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=140)) if node else ""


class _Flat(dict):
    """A mapping of plain values inside a list (a report figure): one line, as the config files write them."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper, with a list of plain values in flow style ([64, 128]), each flat mapping in a list on one line,
    other mappings as blocks."""

    def represent_list(self, data):
        if all(isinstance(v, dict) and not any(isinstance(x, (dict, list)) for x in v.values()) for v in data):
            return self.represent_sequence("tag:yaml.org,2002:seq", [_Flat(v) for v in data], flow_style=False)
        flat = all(not isinstance(v, (dict, list)) for v in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)

    def represent_flat(self, data):
        return self.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(list, _Dumper.represent_list)
_Dumper.add_representer(_Flat, _Dumper.represent_flat)
