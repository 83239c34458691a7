"""Loading the configuration file: YAML, `${ENV}` interpolation, environment overrides and validation.

A bad configuration raises `ConfigError` listing each bad field as `path.to.field: reason`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from consumer.errors import ConfigError
from schemas.config import (
    KafkaSettings,
    ObservabilitySettings,
    PipelineSettings,
    ProviderConfig,
    ServiceConfig,
)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaSettings,
    "pipeline": PipelineSettings,
    "observability": ObservabilitySettings,
}


def interpolate(node: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[str]]:
    """Replace `${NAME}` and `${NAME:-default}` in every string of a YAML tree.

    Returns the new tree and the problems found (a reference to an unset variable without a default).
    """
    problems: list[str] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, str):

            def sub(match: re.Match[str]) -> str:
                name, default = match.group(1), match.group(2)
                if name in env:
                    return env[name]
                if default is not None:
                    return default
                problems.append(f"{where or '<root>'}: environment variable {name} is not set")
                return ""

            return _ENV_REF.sub(sub, value)
        if isinstance(value, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(node, path), problems


def format_validation_error(error: ValidationError, prefix: str = "") -> list[str]:
    """Turn a pydantic error into `path: reason` lines, without echoing input values (they may be secrets)."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        parts = [prefix] if prefix else []
        for loc in item["loc"]:
            if isinstance(loc, int):
                parts[-1:] = [f"{parts[-1]}[{loc}]"] if parts else [f"[{loc}]"]
            elif loc in {"NoAuth", "BasicAuth"} or str(loc).startswith(("function-", "literal[")):
                continue
            else:
                parts.append(str(loc))
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{'.'.join(parts) or '<root>'}: {message}")
    return lines


def parse_config(raw: Any, source: str = "<config>", env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Validate an already-parsed YAML tree into a `ServiceConfig` (templates are checked separately)."""
    environ = os.environ if env is None else env
    if not isinstance(raw, dict):
        raise ConfigError(source, ["<root>: the configuration must be a mapping"])
    tree, problems = interpolate(raw, environ)
    unknown = sorted(set(tree) - {*_SECTIONS, "providers"})
    problems += [f"{key}: unknown section" for key in unknown]
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        values = tree.get(name) or {}
        if not isinstance(values, dict):
            problems.append(f"{name}: must be a mapping")
            continue
        try:
            sections[name] = _with_env(cls, values, environ)
        except ValidationError as exc:
            problems += format_validation_error(exc, name)
    providers = tree.get("providers")
    if not isinstance(providers, dict) or not providers:
        problems.append("providers: at least one provider is required")
        providers = {}
    parsed: dict[str, ProviderConfig] = {}
    for name, body in providers.items():
        try:
            parsed[str(name)] = ProviderConfig.model_validate(body)
        except ValidationError as exc:
            problems += format_validation_error(exc, f"providers.{name}")
    if problems:
        raise ConfigError(source, problems)
    return ServiceConfig(providers=parsed, **sections)


def _with_env(cls: type[Any], values: dict[str, Any], env: Mapping[str, str]) -> Any:
    if env is os.environ:
        return cls(**values)
    # An explicit environment (tests, `validate --env`): apply it the same way the settings class would.
    prefix = cls.model_config.get("env_prefix", "")
    merged = dict(values)
    for field in cls.model_fields:
        key = f"{prefix}{field}".upper()
        if key in env:
            merged[field] = env[key]
    return cls.model_validate(merged)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> ServiceConfig:
    """Read, interpolate and validate the YAML configuration at `path`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"<file>: cannot read: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise ConfigError(source, [f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(raw, source, env)
