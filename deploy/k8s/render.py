"""Render the Notify Helm chart offline, like `helm template`, without a helm binary.

    .venv/bin/python deploy/k8s/render.py [-f VALUES.yaml ...] [--out DIR] [--name RELEASE]

Uses helm-python-sdk (Helm's own Go SDK through ctypes), so what renders here renders the same
in `helm install`. Values files are merged left to right like repeated `helm -f`; the result is
validated against values.schema.json first. With --out, each template is written to
DIR/<template file> and everything to DIR/all.yaml; without it, all manifests go to stdout.
`make chart` renders the default and the production values into render/ for review;
tests/deploy imports `render` and `merge_values` from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "notify"


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of two values files: maps merge, anything else is replaced, and a
    null removes the key (so an override can switch off a default)."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_values(paths: list[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        values = merge_values(values, yaml.safe_load(path.read_text()) or {})
    return values


def render(
    values: dict[str, Any] | None = None,
    *,
    name: str = "notify",
    namespace: str = "notify",
    chart: Path = CHART,
) -> dict[str, str]:
    """Template file name (e.g. "deployments.yaml") -> rendered text, for non-empty templates.

    Raises helm_python.HelmValuesError when the values break values.schema.json and
    helm_python.HelmRenderError when a template fails (e.g. a `required` value is missing).
    """
    import helm_python as helm  # a 75 MB native library: load it only when rendering

    with helm.Chart.load(chart) as loaded:
        loaded.validate_schema(values or {})
        rendered = loaded.render(values or {}, name=name, namespace=namespace, is_install=True)
    out = {}
    for path, text in rendered.items():
        # Keys are "<chart>/templates/<file>"; helpers and disabled templates render empty.
        filename = path.split("/templates/", 1)[-1]
        if text.strip():
            out[filename] = text
    return out


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt is not a manifest)."""
    docs = []
    for filename, text in sorted(rendered.items()):
        if not filename.endswith((".yaml", ".yml")):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--values", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, help="directory to write the manifests to")
    parser.add_argument("--name", default="notify", help="release name")
    parser.add_argument("--namespace", default="notify")
    args = parser.parse_args(argv)

    rendered = render(load_values(args.values), name=args.name, namespace=args.namespace)
    everything = "\n---\n".join(
        text.strip() for f, text in sorted(rendered.items()) if f.endswith(".yaml")
    )
    if args.out is None:
        print(everything)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*"):
        if old.is_file():
            old.unlink()  # a template that renders nothing now must not linger from last time
    for filename, text in rendered.items():
        (args.out / filename).write_text(text.strip() + "\n")
    (args.out / "all.yaml").write_text(everything + "\n")
    print(f"{args.out}: {len(manifests(rendered))} manifests from {len(rendered)} templates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
