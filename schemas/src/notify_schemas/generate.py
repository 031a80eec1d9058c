"""Write the JSON Schema of every topic from its pydantic model.

Run `make schemas` after changing a model; tests/test_contract.py fails while the committed
schema and the model disagree, so a contract change is always visible in review.
"""

from __future__ import annotations

import json
import sys

from notify_schemas.topics import all_topics, contract_dir


def schema_for(topic_name: str) -> dict[str, object]:
    t = all_topics()[topic_name]
    assert t.model is not None
    schema = t.model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://notify.dev/schemas/{t.schema_file}"
    return schema


def render(topic_name: str) -> str:
    return json.dumps(schema_for(topic_name), indent=2, sort_keys=True) + "\n"


def main() -> int:
    out = contract_dir() / "jsonschema"
    out.mkdir(exist_ok=True)
    for t in all_topics().values():
        if t.model is not None and t.schema_file:
            (out / t.schema_file).write_text(render(t.name))
            print(f"wrote {out / t.schema_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
