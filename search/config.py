"""The run config: YAML blocks owned by each package, composed and validated here.

`load_config(path, overrides)` reads YAML, applies `key=value` overrides (dotted keys, YAML values),
validates with pydantic, and reports the first problem as one `InputError` line naming the file and
the dotted field path.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from models.config import ModelConfig, ObjectiveConfig, PretrainConfig, TrainConfig
from pruning.config import PruneConfig, Stage3Config
from search.schema import SearchConfig
from vqa.config import DataConfig
from vqa.errors import InputError


class RunConfig(BaseModel):
    """A whole run. Blocks: `data` (vqa); `model`, `objective` (stage 1's loss L1), `pretrain`,
    `finetune` (models); `pruning` (stage 2, its loss L2) and `stage3` (pruning); `search`."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    pretrain: PretrainConfig | None = None
    finetune: TrainConfig | None = None
    pruning: PruneConfig | None = None
    stage3: Stage3Config | None = None
    search: SearchConfig | None = None

    def resolved(self) -> RunConfig:
        """A copy with every path absolute."""
        update: dict[str, Any] = {"data": self.data.resolved(), "model": self.model.resolved()}
        for name in ("pretrain", "finetune", "pruning", "stage3", "search"):
            block = getattr(self, name)
            if block is not None:
                update[name] = block.resolved()
        pruning, stage3 = update.get("pruning"), update.get("stage3")
        # Stage 2 starts from stage 1's kept model unless told otherwise; stage 3 writes beside it.
        if pruning is not None and pruning.checkpoint is None and self.finetune is not None:
            best = update["finetune"].output_dir / "best"
            update["pruning"] = pruning = pruning.model_copy(update={"checkpoint": best})
        if stage3 is not None and stage3.output_dir is None and pruning is not None:
            stage3_dir = pruning.output_dir / "stage3"
            update["stage3"] = stage3.model_copy(update={"output_dir": stage3_dir})
        return self.model_copy(update=update)

    def blocks_yaml(self, *names: str) -> str:
        """The resolved blocks `names` as YAML: what a stage saves and compares on resume."""
        dumped = self.resolved().model_dump(mode="json")
        return yaml.safe_dump({n: dumped[n] for n in names}, sort_keys=False)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not key.strip() or any(not p for p in parts):
        raise InputError(
            f"malformed override '{text}': expected key=value, e.g. data.selection_seed=1"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"malformed override '{text}': the value is not valid YAML") from None
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of `raw` with every override set (intermediate mappings created as needed)."""
    out = yaml.safe_load(yaml.safe_dump(raw))  # deep copy through YAML keeps it plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise InputError(f"override '{text}': '{p}' is not a mapping")
            node = child
        node[parts[-1]] = value
    return out


def _alternatives(annotation: Any) -> list[Any]:
    """The types an annotation allows: the members of a union (`X | None` included), without
    `Annotated`'s metadata."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _alternatives(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [t for arg in get_args(annotation) for t in _alternatives(arg)]
    return [annotation]


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _models_at(loc: Sequence[str | int]) -> list[type[BaseModel]]:
    """The config models that hold the field at `loc` (pydantic's error location, the field's
    own name last): RunConfig's fields walked down through nested models, optional blocks,
    mappings (a key) and lists (an index)."""
    current: list[Any] = [RunConfig]
    for part in loc[:-1]:
        following: list[Any] = []
        for annotation in (t for a in current for t in _alternatives(a)):
            origin, args = get_origin(annotation), get_args(annotation)
            if _is_model(annotation):
                if isinstance(part, str) and part in annotation.model_fields:
                    following.append(annotation.model_fields[part].annotation)
                elif part == annotation.__name__:  # a union's tag in the location
                    following.append(annotation)
            elif isinstance(origin, type) and issubclass(origin, Mapping) and len(args) == 2:
                following.append(args[1])
            elif isinstance(part, int) and origin in (list, tuple, set) and args:
                following.append(args[0])
        current = following
    return [t for a in current for t in _alternatives(a) if _is_model(t)]


def _did_you_mean(loc: Sequence[str | int]) -> str:
    """` (did you mean 'x'?)` for an unknown field at `loc` close to a field of its model."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    names = sorted({n for model in _models_at(loc) for n in model.model_fields})
    close = difflib.get_close_matches(loc[-1], names, n=3, cutoff=0.6)
    if not close and len(loc[-1]) >= 3:  # a field's start, e.g. `grace` for `grace_period`
        close = [n for n in names if n.startswith(loc[-1])][:3]
    if not close:
        return ""
    quoted = [f"'{n}'" for n in close]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
    return f" (did you mean {listed}?)"


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field" + _did_you_mean(first["loc"])
    elif first["type"] == "missing":
        msg = "missing field"
    value = first.get("input")
    shown = (
        ""
        if first["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
        else f" (got {value!r})"
    )
    return f"{source}: {where}: {msg}{shown}"


def validate_config(raw: Any, source: str) -> RunConfig:
    """Validate plain data as a `RunConfig`; `source` names it in the error line."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a YAML mapping at the top level")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise InputError(_describe(e, source)) from None


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate the YAML run config at `path`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: malformed YAML{where}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a YAML mapping at the top level")
    return validate_config(apply_overrides(raw, overrides or []), str(path))


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (paths absolute), as saved next to what a command writes."""
    return yaml.safe_dump(config.resolved().model_dump(mode="json"), sort_keys=False)
