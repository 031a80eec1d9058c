"""The template registry: every shipped template renders, overrides win, mistakes are
caught at load with the file and variable named, never sent as a literal placeholder."""

from __future__ import annotations

from pathlib import Path

import pytest

from notify_common.templates import (
    API_ACTIONS,
    VARIABLES,
    TemplateError,
    TemplateRegistry,
)


def sample(type_: str) -> dict[str, str]:
    return {name: f"<{name}>" for name in VARIABLES[type_]}


def test_every_shipped_template_renders_every_field_without_placeholders():
    registry = TemplateRegistry.load()
    templates = list(registry)
    # Every type has at least its English template, and the French ones are there too.
    assert {(t.type, t.locale) for t in templates} >= {(t, "en") for t in VARIABLES} | {
        ("NEW_MESSAGE", "fr"),
        ("MENTION", "fr"),
    }
    for t in templates:
        r = t.render(sample(t.type))
        for text in (r.title, r.body, r.url or "", *(v for a in r.actions for v in a.values())):
            assert "{{" not in text and "}}" not in text, (t.source, text)
        assert r.title and r.body
        for a in r.actions:
            assert a["label"]
            assert ("url" in a) != ("action" in a)
            if "action" in a:
                assert a["action"] in API_ACTIONS
            else:
                assert a["url"].startswith("/"), "shipped buttons stay on the app's origin"


def test_message_templates_fill_the_event_values():
    r = TemplateRegistry.load().render(
        "MENTION",
        "en",
        {
            "server_id": "s1",
            "server_name": "Guild",
            "channel_id": "c9",
            "channel_name": "general",
            "sender_id": "u2",
            "sender_name": "Ada",
            "message_id": "m7",
            "preview": "hello @you",
        },
    )
    assert r.title == "Ada mentioned you in Guild #general"
    assert r.body == "hello @you"
    assert r.url == "/servers/s1/channels/c9"
    assert r.actions == (
        {"label": "Reply", "url": "/servers/s1/channels/c9?reply=m7"},
        {"label": "Mark as read", "action": "mark_read"},
    )


def test_locale_falls_back_to_the_language_then_english():
    reg = TemplateRegistry.load()
    assert reg.get("NEW_MESSAGE", "fr-CA").locale == "fr"
    assert reg.get("NEW_MESSAGE", "FR").locale == "fr"
    assert reg.get("NEW_MESSAGE", "ja").locale == "en"
    assert reg.get("NEW_MESSAGE", None).locale == "en"
    assert reg.get("SYSTEM", "fr").locale == "en"


def test_announcement_without_action_url_renders_no_url():
    r = TemplateRegistry.load().render(
        "ADMIN_ANNOUNCEMENT",
        "en",
        {"announcement_id": "a", "server_id": None, "title": "T", "body": "B", "action_url": None},
    )
    assert (r.title, r.body, r.url) == ("T", "B", None)


def test_a_missing_value_is_an_error_not_a_literal():
    with pytest.raises(TemplateError, match=r"NEW_MESSAGE/en .*'sender_name' has no value"):
        TemplateRegistry.load().render(
            "NEW_MESSAGE", "en", {**sample("NEW_MESSAGE"), "sender_name": None}
        )


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_the_deployers_folder_overrides_and_adds_locales(tmp_path: Path):
    folder = write(
        tmp_path / "t",
        "NEW_MESSAGE.en.yaml",
        'title: "{{sender_name}} wrote"\nbody: "{{ preview }}"\n',
    )
    write(
        folder, "NEW_MESSAGE.de.yaml", 'title: "Neu von {{ sender_name }}"\nbody: "{{ preview }}"\n'
    )
    reg = TemplateRegistry.load(folder)
    values = sample("NEW_MESSAGE")
    assert reg.render("NEW_MESSAGE", "en", values).title == "<sender_name> wrote"
    assert reg.render("NEW_MESSAGE", "de-AT", values).title == "Neu von <sender_name>"
    # Untouched shipped templates stay.
    assert reg.get("MENTION", "en").source.endswith("defaults/MENTION.en.yaml")


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        (
            "NEW_MESSAGE.en.yaml",
            'title: "{{ sendr_name }}"\nbody: x\n',
            r"unknown variable 'sendr_name'",
        ),
        ("NEW_MESSAGE.en.yaml", 'title: "{{ sender name }}"\nbody: x\n', r"malformed placeholder"),
        ("NEW_MESSAGE.en.yaml", 'title: "{{ preview }"\nbody: x\n', r"malformed placeholder"),
        ("NEW_MESSAGE.en.yaml", "title: x\n", r"body is required"),
        ("NEW_MESSAGE.en.yaml", "title: x\nbody: y\nsubject: z\n", r"unknown fields \['subject'\]"),
        (
            "NEW_MESSAGE.en.yaml",
            "title: x\nbody: y\nactions: [{label: a}]\n",
            r"exactly one of url or action",
        ),
        (
            "NEW_MESSAGE.en.yaml",
            "title: x\nbody: y\nactions: [{label: a, action: delete_all}]\n",
            r"unknown action 'delete_all'",
        ),
        (
            "NEW_MESSAGE.en.yaml",
            "title: x\nbody: y\nactions: [{label: a, url: /a}, {label: b, url: /b},"
            " {label: c, url: /c}]\n",
            r"at most 2",
        ),
        ("PROMO.en.yaml", "title: x\nbody: y\n", r"unknown notification type"),
        ("new_message.yaml", "title: x\nbody: y\n", r"<TYPE>.<locale>.yaml"),
        ("NEW_MESSAGE.en.yaml", "title: [unclosed\n", r"not valid YAML"),
    ],
)
def test_mistakes_stop_the_load_naming_file_and_problem(
    tmp_path: Path, name: str, text: str, error: str
):
    folder = write(tmp_path / "t", name, text)
    with pytest.raises(TemplateError, match=error) as info:
        TemplateRegistry.load(folder)
    assert name in str(info.value) or "unknown notification type" in str(info.value)


def test_a_missing_folder_is_an_error(tmp_path: Path):
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateRegistry.load(tmp_path / "nope")
