"""Notification templates: what a notification says, per type and locale.

One template per (notification type, locale) gives the title, the body, the click-through
url and up to two action buttons, with ``{{ variable }}`` placeholders filled from the
source event. The fanout renders them once per source event and locale, so the feed, the
push message and the email all show the same rendered text (and the push and the email the
same buttons).

Files: ``<TYPE>.<locale>.yaml`` in ``defaults/`` (shipped), overridable file by file — and
extendable with new locales — by a folder the deployer mounts (NOTIFY_TEMPLATES_DIR).

Placeholders are names only: no expressions, filters or loops, so a deployer's template
cannot run code. Every placeholder must be a variable the type provides (``VARIABLES``),
checked when the registry loads, so a typo stops the service at start with the file and
name in the message instead of a literal "{{ nmae }}" reaching a user. A variable without a
value at render time is an error too (the fanout dead-letters the event with that reason).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULTS = Path(__file__).parent / "defaults"
DEFAULT_LOCALE = "en"

_MESSAGE = frozenset(
    {
        "server_id",
        "server_name",
        "channel_id",
        "channel_name",
        "sender_id",
        "sender_name",
        "message_id",
        "preview",
    }
)
_ANNOUNCEMENT = frozenset({"announcement_id", "server_id", "title", "body", "action_url"})
# The variables each notification type provides.
VARIABLES: dict[str, frozenset[str]] = {
    "NEW_MESSAGE": _MESSAGE,
    "MENTION": _MESSAGE,
    "ADMIN_ANNOUNCEMENT": _ANNOUNCEMENT,
    "SYSTEM": _ANNOUNCEMENT,
}
# Buttons that call the API instead of opening a page; the app (and the push service
# worker, through the app) knows how to perform each.
API_ACTIONS = frozenset({"mark_read"})
# Browsers show at most two notification actions (Notification.maxActions in Chromium).
MAX_ACTIONS = 2
MAX_LABEL = 40

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FILE = re.compile(r"^(?P<type>[A-Z_]+)\.(?P<locale>[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*)\.yaml$")


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered; the message names the template."""


@dataclass(frozen=True)
class _Text:
    """A string with placeholders, split once at load."""

    parts: tuple[str, ...]  # literal, name, literal, name, …, literal
    where: str

    @classmethod
    def compile(cls, raw: Any, *, where: str, allowed: frozenset[str]) -> _Text:
        if not isinstance(raw, str):
            raise TemplateError(f"{where}: must be a string")
        pieces = _PLACEHOLDER.split(raw)
        for literal in pieces[0::2]:
            if "{{" in literal or "}}" in literal:
                raise TemplateError(f"{where}: malformed placeholder in {raw!r}")
        for name in pieces[1::2]:
            if name not in allowed:
                raise TemplateError(
                    f"{where}: unknown variable {name!r}; this type provides "
                    + ", ".join(sorted(allowed))
                )
        return cls(tuple(pieces), where)

    @property
    def names(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def render(self, variables: Mapping[str, Any], *, missing_ok: bool = False) -> str:
        out = []
        for i, piece in enumerate(self.parts):
            if i % 2 == 0:
                out.append(piece)
                continue
            value = variables.get(piece)
            if value is None:
                if missing_ok:
                    continue
                raise TemplateError(f"{self.where}: variable {piece!r} has no value")
            out.append(str(value))
        return "".join(out)


@dataclass(frozen=True)
class Rendered:
    title: str
    body: str
    url: str | None
    actions: tuple[dict[str, str], ...]  # {"label", "url"} or {"label", "action"}


@dataclass(frozen=True)
class _Action:
    label: _Text
    url: _Text | None
    action: str | None


@dataclass(frozen=True)
class Template:
    type: str
    locale: str
    source: str
    title: _Text
    body: _Text
    url: _Text | None
    actions: tuple[_Action, ...]

    @classmethod
    def parse(cls, type_: str, locale: str, doc: Any, *, source: str) -> Template:
        where = f"template {type_}/{locale} ({source})"
        allowed = VARIABLES.get(type_)
        if allowed is None:
            raise TemplateError(
                f"{where}: unknown notification type; known: {', '.join(sorted(VARIABLES))}"
            )
        if not isinstance(doc, dict):
            raise TemplateError(f"{where}: expected a mapping with title and body")
        unknown = set(doc) - {"title", "body", "url", "actions"}
        if unknown:
            raise TemplateError(f"{where}: unknown fields {sorted(unknown)}")
        for required in ("title", "body"):
            if required not in doc:
                raise TemplateError(f"{where}: {required} is required")
        raw_actions = doc.get("actions") or []
        if not isinstance(raw_actions, list) or len(raw_actions) > MAX_ACTIONS:
            raise TemplateError(f"{where}: actions must be a list of at most {MAX_ACTIONS}")
        actions = []
        for i, a in enumerate(raw_actions):
            at = f"{where} actions[{i}]"
            if not isinstance(a, dict) or "label" not in a:
                raise TemplateError(f"{at}: needs a label")
            if ("url" in a) == ("action" in a):
                raise TemplateError(f"{at}: needs exactly one of url or action")
            if "action" in a and a["action"] not in API_ACTIONS:
                raise TemplateError(
                    f"{at}: unknown action {a['action']!r}; known: {', '.join(sorted(API_ACTIONS))}"
                )
            if set(a) - {"label", "url", "action"}:
                raise TemplateError(
                    f"{at}: unknown fields {sorted(set(a) - {'label', 'url', 'action'})}"
                )
            actions.append(
                _Action(
                    label=_Text.compile(a["label"], where=f"{at}.label", allowed=allowed),
                    url=_Text.compile(a["url"], where=f"{at}.url", allowed=allowed)
                    if "url" in a
                    else None,
                    action=a.get("action"),
                )
            )
        return cls(
            type=type_,
            locale=locale,
            source=source,
            title=_Text.compile(doc["title"], where=f"{where} title", allowed=allowed),
            body=_Text.compile(doc["body"], where=f"{where} body", allowed=allowed),
            url=_Text.compile(doc["url"], where=f"{where} url", allowed=allowed)
            if doc.get("url") is not None
            else None,
            actions=tuple(actions),
        )

    def render(self, variables: Mapping[str, Any]) -> Rendered:
        actions = []
        for a in self.actions:
            label = a.label.render(variables)[:MAX_LABEL]
            if a.url is not None:
                actions.append({"label": label, "url": a.url.render(variables)})
            else:
                actions.append({"label": label, "action": str(a.action)})
        # The click-through url is optional: an announcement without one renders none.
        url = self.url.render(variables, missing_ok=True) if self.url is not None else ""
        return Rendered(
            title=self.title.render(variables),
            body=self.body.render(variables),
            url=url or None,
            actions=tuple(actions),
        )


class TemplateRegistry:
    def __init__(self, templates: Mapping[tuple[str, str], Template]) -> None:
        self._templates = dict(templates)
        missing = [t for t in VARIABLES if (t, DEFAULT_LOCALE) not in self._templates]
        if missing:
            raise TemplateError(f"no {DEFAULT_LOCALE!r} template for {', '.join(missing)}")

    @classmethod
    def load(cls, override_dir: Path | str | None = None) -> TemplateRegistry:
        """The shipped templates, then the override folder's files on top of them."""
        found: dict[tuple[str, str], Template] = {}
        folders = [DEFAULTS] + ([Path(override_dir)] if override_dir else [])
        for folder in folders:
            if not folder.is_dir():
                raise TemplateError(f"templates folder {folder} does not exist")
            for path in sorted(folder.glob("*.yaml")):
                m = _FILE.match(path.name)
                if m is None:
                    raise TemplateError(f"{path}: name must be <TYPE>.<locale>.yaml")
                try:
                    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
                except yaml.YAMLError as exc:
                    raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
                locale = m["locale"].lower()
                found[(m["type"], locale)] = Template.parse(
                    m["type"], locale, doc, source=str(path)
                )
        return cls(found)

    def __iter__(self) -> Iterator[Template]:
        return iter(self._templates.values())

    def get(self, type_: str, locale: str | None) -> Template:
        """The template for the locale, else its language ("pt-br" → "pt"), else English."""
        loc = (locale or DEFAULT_LOCALE).lower()
        for candidate in (loc, loc.split("-", 1)[0], DEFAULT_LOCALE):
            t = self._templates.get((type_, candidate))
            if t is not None:
                return t
        raise TemplateError(f"no template for notification type {type_!r}")

    def render(self, type_: str, locale: str | None, variables: Mapping[str, Any]) -> Rendered:
        return self.get(type_, locale).render(variables)
