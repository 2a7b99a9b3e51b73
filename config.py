"""Config base: pydantic models from YAML/JSON files, overridden by explicit flags."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vidlat.errors import ConfigError

C = TypeVar("C", bound="Config")

RESOLVED_NAME = "config.yaml"
# Top-level keys of a whole-pipeline config file, one section per command.
SECTIONS = frozenset(
    {"data", "train_ae", "encode", "train_predictor", "train_generator", "generate", "evaluate"}
)


class Config(BaseModel):
    """Strict base: unknown keys and wrong types are errors; fields are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping (JSON is YAML, so one parser serves both)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML or JSON file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of field: value, not {type(data).__name__}"
        )
    return data


_MESSAGES = {
    "extra_forbidden": "unknown key (not a field of this config)",
    "missing": "required: give it as a flag or in the --config file",
}


def format_validation_error(cls: type[BaseModel], exc: ValidationError, origin: str) -> str:
    """One line per problem, each naming the key, e.g. `steps: Input should be a valid integer`."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = _MESSAGES.get(err["type"], err["msg"])
        parts.append(f"{key}: {msg}")
    return f"invalid {cls.__name__} from {origin}: " + "; ".join(parts)


def apply_sets(data: dict[str, Any], sets: Sequence[str]) -> dict[str, Any]:
    """`data` with each "KEY=VALUE" of `sets` applied in order; KEY may be dotted
    (model_params.width=32 sets data["model_params"]["width"]); VALUE is read as YAML (32, 1e-3,
    true, [1, 2], text)."""
    data = json.loads(json.dumps(data, default=str))  # a deep copy of plain types
    for item in sets:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r} is not KEY=VALUE (dotted keys for nested fields)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is {child!r}, not a mapping")
            node = child
        node[leaf] = value
    return data


def resolve_config(
    cls: type[C],
    config_file: str | Path | None = None,
    section: str | None = None,
    sets: Sequence[str] | None = None,
    **overrides: Any,
) -> C:
    """Build `cls` from a file, then `sets` (--set KEY=VALUE), then every override whose value is
    not None.

    Flags pass None when the user did not give them, so an explicit 0 or False still wins over the
    file. `section` picks this command's part of a whole-pipeline file (one holding any of
    SECTIONS as top-level keys; a missing part is empty); any other file is the section itself.
    """
    data: dict[str, Any] = {}
    origin = "flags"
    if config_file is not None:
        data = read_config_file(config_file)
        if section is not None and SECTIONS & data.keys():
            data = dict(data.get(section) or {})  # a whole-pipeline file: this command's part
        origin = f"{config_file} and flags"
    data = apply_sets(data, sets or [])
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(cls, exc, origin)) from None


def write_resolved(config: BaseModel, folder: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved config as YAML into `folder` (created if needed); returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    data = json.loads(
        config.model_dump_json()
    )  # plain JSON types: tuples become lists, paths strings
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
