"""Generate the JSON Schema files of the contracts: `python -m schemas.generate [--check]`.

`--check` exits 1 when a file on disk differs from what the models generate (CI uses it through a test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.config import ServiceConfig
from schemas.events import DeliveryStatus, SendRequest

JSON_DIR = Path(__file__).parent / "json"
MODELS: dict[str, type[BaseModel]] = {
    "send-request.schema.json": SendRequest,
    "delivery-status.schema.json": DeliveryStatus,
    "service-config.schema.json": ServiceConfig,
}


def render(model: type[BaseModel]) -> str:
    schema: dict[str, Any] = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(model.model_json_schema(mode="validation"))
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def generated() -> dict[Path, str]:
    """Every generated file and its content."""
    return {JSON_DIR / name: render(model) for name, model in MODELS.items()}


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
