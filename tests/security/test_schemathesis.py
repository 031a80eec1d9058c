"""Requests generated from the ingest and inbox OpenAPI documents (schemathesis), valid and
invalid, sent to the real apps over HTTP: never a 5xx, never a response that contradicts
the app's own schema. Bounded: a few examples per operation and mode, no shrinking."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import Engine

from notify_common.auth import issue_user_token
from notify_common.testing.infra import Broker
from notify_inbox.app import build_app as build_inbox
from notify_ingest.app import build_app as build_ingest

from .conftest import SERVICE_TOKEN, inbox_settings, ingest_settings, served

pytestmark = pytest.mark.integration

EXAMPLES = 8  # per operation and mode; together both apps stay well under a minute
BUDGET_S = 60.0


@pytest.fixture
def inbox_api(database_url: str, engine: Engine) -> Iterator[tuple[str, dict[str, str]]]:
    # Limits off: hundreds of requests from one user would otherwise be mostly 429s.
    settings = inbox_settings(database_url, user_rate_limit_per_minute=0)
    token = issue_user_token(settings, "u-fuzz")
    with served(build_inbox(settings, engine=engine)) as url:
        yield url, {"Authorization": f"Bearer {token}"}


@pytest.fixture
def ingest_api(
    broker: Broker, topic_prefix: str, database_url: str
) -> Iterator[tuple[str, dict[str, str]]]:
    settings = ingest_settings(
        broker, topic_prefix, database_url=database_url, ingest_rate_limit_per_minute=0
    )
    with served(build_ingest(settings)) as url:
        yield url, {"Authorization": f"Bearer {SERVICE_TOKEN}"}


def fuzz(url: str, headers: dict[str, str]) -> int:
    """Every operation of the app's OpenAPI, in both modes; the number of requests sent."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the OpenAPI document lists no operation"
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                nonlocal sent
                response = case.call(base_url=url, headers=headers, timeout=10)
                sent += 1
                case.validate_response(
                    response, checks=[not_a_server_error, response_schema_conformance]
                )

            try:
                check()
            except Unsatisfiable:
                # Nothing about the operation can be invalid (it takes no input).
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def test_inbox_survives_its_own_openapi(inbox_api: tuple[str, dict[str, str]]) -> None:
    started = time.monotonic()
    assert fuzz(*inbox_api) > 0
    assert time.monotonic() - started < BUDGET_S


def test_ingest_survives_its_own_openapi(ingest_api: tuple[str, dict[str, str]]) -> None:
    started = time.monotonic()
    assert fuzz(*ingest_api) > 0
    assert time.monotonic() - started < BUDGET_S
