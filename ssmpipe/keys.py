"""The keys of the store: a point's run id and pack key, hashes of its canonical settings.

A run id is the hash of a point's resolved settings, schema-typed and in canonical JSON (sorted
keys, no spaces), so the same settings give the same id on any machine, whatever the key order
or the float spelling. tests/test_golden_ids.py holds ids that must never change.
"""

from __future__ import annotations

import functools
import hashlib
import json

from ssmpipe import config as cfg

PER_POINT_KEYS = ("seed", "model.init")  # settings that may differ inside one packed model


def typed(settings: dict, types: dict[str, str] | None = None) -> dict:
    """Settings with numbers as the schema types them (-1 and -1.0 both become -1.0)."""
    types = types or cfg.setting_types()
    out = cfg.plain(settings)  # a fresh copy of the nested dicts and lists
    for key, kind in types.items():
        try:
            cfg.set_path(out, key, coerce(cfg.get_path(out, key), kind))
        except KeyError:
            continue
    return out


def coerce(value, kind: str):
    """A value as the schema's type `kind` types it (booleans as they are)."""
    if isinstance(value, bool):
        return value
    return float(value) if kind == "number" else int(value) if kind == "integer" else value


def canonical(obj) -> str:
    """The JSON text a digest hashes: sorted keys, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def sha16(text: str) -> str:
    """The first 16 hex digits of text's sha256: every key of the store."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def digest(obj) -> str:
    return sha16(canonical(obj))


def run_id(settings: dict) -> str:
    """Hash of the canonical resolved settings (sorted keys, schema-typed numbers)."""
    return digest(typed(settings, _setting_types()))


@functools.lru_cache(maxsize=1)
def _setting_types() -> dict[str, str]:
    return cfg.setting_types()  # the schema is read once per process


def pack_key(settings: dict) -> str:
    """Points with the same pack key have the same shapes, data and optimiser: they pack into one model."""
    return digest(shared_settings(settings))


def shared_settings(settings: dict) -> dict:
    """settings without the PER_POINT_KEYS: what the points of one packed model share."""
    shared = dict(settings)
    for key in PER_POINT_KEYS:  # copied only along the key's path: the rest is shared, read-only
        *parents, last = key.split(".")
        node = shared
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node.pop(last, None)
    return shared


def is_per_point(key: str) -> bool:
    """Whether a dotted setting key may differ between the points of one packed model."""
    return any(key == k or key.startswith(k + ".") for k in PER_POINT_KEYS)
