"""Loading the configuration file: YAML, `${ENV}` interpolation, environment overrides and validation.

A bad configuration raises `ConfigError` listing each bad field as `path.to.field: reason`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from consumer.auth import SIGV4_MISSING, sigv4_available
from consumer.errors import ConfigError
from schemas.config import (
    AUTH_MODELS,
    CALLBACK_AUTH_MODELS,
    CallbackSettings,
    KafkaSettings,
    ObservabilitySettings,
    PipelineSettings,
    ProviderConfig,
    ServiceConfig,
    SigV4Auth,
)

_PRESETS = resources.files("consumer") / "presets"
_PRESET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Error paths of an `auth` section name the union member (class or discriminator tag): left out, the path
# reads `providers.x.auth.password` rather than `providers.x.auth.basic.password`.
_AUTH_MODELS = (*AUTH_MODELS, *CALLBACK_AUTH_MODELS)
_AUTH_CLASSES = frozenset(model.__name__ for model in _AUTH_MODELS)
_AUTH_TAGS = frozenset(get_args(model.model_fields["type"].annotation)[0] for model in _AUTH_MODELS)
_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaSettings,
    "pipeline": PipelineSettings,
    "observability": ObservabilitySettings,
    "callbacks": CallbackSettings,
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
            elif (
                loc in _AUTH_CLASSES
                or (loc in _AUTH_TAGS and parts and parts[-1] == "auth")
                or str(loc).startswith(("function-", "literal["))
            ):
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
    raw, problems, skipped = _with_presets(raw)
    tree, missing_env = interpolate(raw, environ)
    problems += missing_env
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
        if name in skipped:
            continue
        try:
            parsed[str(name)] = ProviderConfig.model_validate(body)
        except ValidationError as exc:
            problems += format_validation_error(exc, f"providers.{name}")
    for name, provider in parsed.items():
        if isinstance(provider.auth, SigV4Auth) and not sigv4_available():
            problems.append(f"providers.{name}.auth: {SIGV4_MISSING}")
    if problems:
        raise ConfigError(source, problems)
    return ServiceConfig(providers=parsed, **sections)


def known_presets() -> list[str]:
    """Names of the provider presets shipped in `consumer/presets/`."""
    return sorted(item.name.removesuffix(".yaml") for item in _PRESETS.iterdir() if item.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The provider section of a shipped preset; `KeyError` for an unknown name."""
    if not _PRESET_NAME.fullmatch(name) or name not in known_presets():
        raise KeyError(name)
    doc = yaml.safe_load((_PRESETS / f"{name}.yaml").read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise KeyError(name)
    return doc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge key by key, `None` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_preset(body: dict[str, Any]) -> dict[str, Any]:
    """A provider section with its `preset` merged under it. The user's values win; `auth` is taken whole
    from the user when given (credentials of one kind never mix with another's). Raises `ValueError`."""
    name = body.get("preset")
    if not isinstance(name, str):
        raise ValueError(f"must be the name of a preset ({', '.join(known_presets())})")
    try:
        preset = load_preset(name)
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(known_presets())})") from None
    merged = merge_patch(preset, {k: v for k, v in body.items() if k != "auth"})
    if "auth" in body:
        merged.pop("auth", None)
        if body["auth"] is not None:
            merged["auth"] = body["auth"]
    merged["preset"] = name
    return dict(merged)


def _with_presets(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str], set[Any]]:
    """The tree with every provider's preset applied (before `${ENV}` interpolation, so presets may use it),
    the problems found, and the providers that could not be expanded."""
    providers = raw.get("providers")
    if not isinstance(providers, dict):
        return raw, [], set()
    problems: list[str] = []
    skipped: set[Any] = set()
    expanded: dict[Any, Any] = {}
    for name, body in providers.items():
        if isinstance(body, dict) and "preset" in body:
            try:
                body = apply_preset(body)
            except ValueError as exc:
                problems.append(f"providers.{name}.preset: {exc}")
                skipped.add(name)
        expanded[name] = body
    return {**raw, "providers": expanded}, problems, skipped


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
