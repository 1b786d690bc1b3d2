"""Schema violations of a workflow config as one readable line each: the key, what is wrong, the fix.

jsonschema's own messages name a key by its position (``architectures[0]``) and a failed
``oneOf`` by the whole sub-schema; :func:`check_config` names list items by their ``name`` and
says what was expected, so a user fixes the config without reading the schema.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .plan import PlanError


def key_path(config, path) -> str:
    """`architectures[cnn].set` from a jsonschema error path (names list items by their `name`)."""
    out, node = "", config
    for part in path:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            out += f"[{name or part}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(top level)"


def _expected(schema: dict, validator: str) -> str:
    """`expected null or array (...)`: the alternatives of a failed oneOf/anyOf."""
    options = [
        sub.get("type") or ("one of " + ", ".join(map(str, sub["enum"])) if "enum" in sub else "?")
        for sub in schema[validator]
    ]
    wanted = schema.get("description", "")
    return "expected " + " or ".join(map(str, options)) + (f" ({wanted})" if wanted else "")


def explain(config, error) -> str:
    """One line per schema violation: the key, what is wrong, and the fix."""
    key = key_path(config, error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        valid = ", ".join(sorted(schema.get("properties", {}))) or "none"
        where = f"{key}." if error.absolute_path else ""
        return (
            f"unknown key {', '.join(where + k for k in extra)}: remove it or fix its spelling "
            f"(valid keys here: {valid})"
        )
    if error.validator == "required":
        return f"{key}: {error.message}; add it (see workflow/schemas/config.schema.yaml)"
    if error.validator == "propertyNames":
        return f"{key}: key {error.instance!r} is not a dotted recipe key such as train.steps"
    if error.validator in ("oneOf", "anyOf"):
        return f"{key}: {error.instance!r} is not valid; {_expected(schema, error.validator)}"
    wanted = schema.get("description", "")
    return f"{key}: {error.message}" + (f" ({wanted})" if wanted else "")


def schema_errors(config, schema: dict) -> list[str]:
    """The explained violations of ``schema`` by ``config``, ordered by key."""
    import jsonschema  # a dependency of Snakemake: imported only when a config is checked

    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]
    )
    return [explain(config, e) for e in errors]


def check_config(config, schema_file: str | Path, basedir: str | Path = ".") -> None:
    """Raise :class:`PlanError` with a line per bad key (unknown key, wrong type, out of range).

    ``schema_file`` is named in the message as given and read relative to ``basedir`` (the
    workflow's root), so the message points the user at the file in their checkout.
    """
    schema = yaml.safe_load(Path(basedir, schema_file).read_text())
    lines = schema_errors(config, schema)
    if lines:
        listed = "\n".join(f"  - {line}" for line in lines)
        raise PlanError(
            f"invalid workflow configuration:\n{listed}\n"
            f"Fix the config file (or --config/--configfile); the schema with every key, "
            f"type and default is {schema_file}."
        )
