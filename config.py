"""Config base: pydantic models from YAML/JSON files, overridden by explicit flags."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from vidlat.errors import ConfigError

C = TypeVar("C", bound="Config")
_UNIONS = (typing.Union, types.UnionType)

RESOLVED_NAME = "config.yaml"
# Top-level keys of a whole-pipeline config file, one section per command.
SECTIONS = frozenset(
    {"data", "train_ae", "encode", "train_predictor", "train_generator", "generate", "evaluate"}
)


class Config(BaseModel):
    """Strict base: unknown keys and wrong types are errors (a boolean is not a number, a number
    is not a boolean), NaN and infinities are refused; fields are validated on assignment."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        """pydantic's lax mode reads True as 1 and 1 as True; in a config that is a typo."""
        if not isinstance(data, dict):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None:
                continue
            wanted = _scalar_types(field.annotation)
            if isinstance(value, bool) and wanted and bool not in wanted and wanted & {int, float}:
                raise ValueError(f"{name}: {value} is a boolean; give a number")
            if isinstance(value, int | float) and not isinstance(value, bool) and wanted == {bool}:
                raise ValueError(f"{name}: {value} is a number; give true or false")
        return data


def _scalar_types(annotation: Any) -> set[type]:
    """The plain scalar types an annotation allows (int | None -> {int}); empty for others."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in _UNIONS else ()
    options = args or (annotation,)
    return {t for t in options if t in (bool, int, float)}


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest valid name, '' when none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON mapping (JSON is YAML, so one parser serves both)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML or JSON file")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
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
        if err["type"] == "extra_forbidden":
            owner = _model_at(cls, err["loc"][:-1])
            valid = sorted(owner.model_fields) if owner else []
            msg += did_you_mean(err["loc"][-1], valid)
            msg += f"; valid keys: {', '.join(valid)}" if valid else ""
        parts.append(f"{key}: {msg}")
    return f"invalid {cls.__name__} from {origin}: " + "; ".join(parts)


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The nested config class at `loc` (a validation error's path), None if it is not one."""
    for part in loc:
        field = cls.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        cls = annotation
    return cls


def pick_section(data: dict[str, Any], section: str, origin: str) -> dict[str, Any]:
    """This command's section of a whole-pipeline file: unknown top-level keys (a misspelt
    `train_aee:`) and a section that is not a mapping are ConfigErrors."""
    allowed = SECTIONS | {"source"}  # `source` names the data section's kind (vidlat run)
    if unknown := sorted(str(k) for k in data if k not in allowed):
        hints = "; ".join(f"{k!r}{did_you_mean(k, SECTIONS)}" for k in unknown)
        raise ConfigError(
            f"{origin} has unknown section(s) {hints}; the sections are "
            f"{', '.join(sorted(SECTIONS))}"
        )
    part = data.get(section)
    if part is not None and not isinstance(part, dict):
        raise ConfigError(
            f"section {section!r} of {origin} must be a mapping of field: value, not "
            f"{type(part).__name__}"
        )
    return dict(part or {})


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
            data = pick_section(data, section, str(config_file))  # a whole-pipeline file
        origin = f"{config_file} and flags"
    data = apply_sets(data, sets or [])
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(cls, exc, origin)) from None


def recorded(config: BaseModel, used: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`config` as plain JSON data (tuples become lists, paths strings), with the values in `used`
    in place of the fields it names: what a command worked out itself where the user left a
    default (a model's full settings, `past` read from a checkpoint). Each is validated as the
    field's own value."""
    if used:
        config = config.model_copy()
        for key, value in used.items():
            setattr(config, key, value)  # Config validates on assignment
    return json.loads(config.model_dump_json())


def write_resolved(
    config: BaseModel,
    folder: str | Path,
    name: str = RESOLVED_NAME,
    used: Mapping[str, Any] | None = None,
) -> Path:
    """Write the resolved config as YAML into `folder` (created if needed); returns the file.

    With `used` (see `recorded`) the file holds every value the command ran with, defaults it
    filled in included, so it also serves as the --config of the same run."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(recorded(config, used), sort_keys=False))
    return path
