"""Generate the JSON Schema files of the contracts: `python -m schemas.generate [--check]`.

`--check` exits 1 when a file on disk differs from what the models generate (CI uses it through a test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.config import (
    BasicAuth,
    BatchConfig,
    BreakerConfig,
    CallbackBasicAuth,
    CallbackConfig,
    CallbackSecretAuth,
    CallbackSettings,
    CallbackTwilioAuth,
    KafkaSettings,
    OAuth2Auth,
    ObservabilitySettings,
    PipelineSettings,
    ProviderConfig,
    RateLimitConfig,
    ResponseConfig,
    RetryConfig,
    ServiceConfig,
    SigV4Auth,
)
from schemas.events import DeliveryStatus, SendRequest

JSON_DIR = Path(__file__).parent / "json"
REFERENCE = Path(__file__).parent.parent / "docs" / "configuration.md"
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("kafka", KafkaSettings),
    ("pipeline", PipelineSettings),
    ("observability", ObservabilitySettings),
    ("callbacks", CallbackSettings),
    ("providers.<name>", ProviderConfig),
    ("providers.<name>.auth (type: basic)", BasicAuth),
    ("providers.<name>.auth (type: oauth2)", OAuth2Auth),
    ("providers.<name>.auth (type: sigv4)", SigV4Auth),
    ("providers.<name>.batch", BatchConfig),
    ("providers.<name>.response", ResponseConfig),
    ("providers.<name>.retry", RetryConfig),
    ("providers.<name>.rate_limit", RateLimitConfig),
    ("providers.<name>.breaker", BreakerConfig),
    ("providers.<name>.callback", CallbackConfig),
    ("providers.<name>.callback.auth (type: secret)", CallbackSecretAuth),
    ("providers.<name>.callback.auth (type: basic)", CallbackBasicAuth),
    ("providers.<name>.callback.auth (type: twilio_signature)", CallbackTwilioAuth),
]
MODELS: dict[str, type[BaseModel]] = {
    "send-request.schema.json": SendRequest,
    "delivery-status.schema.json": DeliveryStatus,
    "service-config.schema.json": ServiceConfig,
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(model.model_json_schema(mode="validation"))
    if model is ServiceConfig:
        _allow_preset_entries(schema)
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def _allow_preset_entries(schema: dict[str, Any]) -> None:
    """A provider entry that names a `preset` gives only what it changes (the preset is merged under it at
    load): it is checked against `ProviderConfigOverPreset`, the provider's schema with nothing required
    (authentication excepted: an `auth` replaces the preset's whole)."""
    defs = schema["$defs"]
    partial: dict[str, str] = {}

    def relaxed(name: str) -> str:
        if name not in partial:
            partial[name] = target = "ProviderConfigOverPreset" if name == "ProviderConfig" else f"{name}OverPreset"
            copy = json.loads(json.dumps(defs[name]))
            copy.pop("required", None)
            copy["title"] = target
            defs[target] = rewrite(copy)
        return partial[name]

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and "Auth" not in ref:
                return {**node, "$ref": "#/$defs/" + relaxed(ref.removeprefix("#/$defs/"))}
            return {k: (v if k == "discriminator" else rewrite(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    providers = schema["properties"]["providers"]
    providers["additionalProperties"] = {
        "if": {"required": ["preset"], "properties": {"preset": {"type": "string"}}},
        "then": {"$ref": "#/$defs/" + relaxed("ProviderConfig")},
        "else": providers["additionalProperties"],
    }


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "see below" if value.model_dump() else "`{}`"
        return f"`{json.dumps(value)}`"
    if field.default is None:
        return "none"
    return f"`{json.dumps(field.default)}`"


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pydantic.types.", "")
    text = text.replace("<class '", "").replace("'>", "")
    return text.replace("schemas.config.", "")


def reference() -> str:
    """The configuration reference in Markdown: every option, its default and its environment variable."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `schemas/config.py` by `python -m schemas.generate`; do not edit by hand.",
        "",
        "The file is YAML. Any string may use `${NAME}` or `${NAME:-default}` to take a value from the",
        "environment (secrets belong there). Options of `kafka`, `pipeline` and `observability` can also be set",
        "by their environment variable, which wins over the file.",
    ]
    for section, model in SECTIONS:
        prefix = model.model_config.get("env_prefix") if issubclass(model, BaseModel) else None
        lines += ["", f"## `{section}`", "", (model.__doc__ or "").strip().splitlines()[0], ""]
        columns = ["option", "type", "default", *(["environment"] if prefix else []), "description"]
        lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
        for name, field in model.model_fields.items():
            desc = (field.description or "").replace("|", "\\|")
            row = [f"`{name}`", _type(field.annotation).replace("|", "\\|"), _default(field)]
            if prefix:
                row.append(f"`{prefix}{name.upper()}`")
            row.append(desc)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def generated() -> dict[Path, str]:
    """Every generated file and its content."""
    files = {JSON_DIR / name: render(model) for name, model in MODELS.items()}
    files[REFERENCE] = reference()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the files are not up to date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
