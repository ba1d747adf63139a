"""The OpenAPI document tells the truth: schemathesis reads /openapi.json from a real
gateway process, generates requests for every operation from it, and checks each answer
against the document (status codes, content types, headers, bodies) and never a 5xx."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from tests.gateway.procs import Stack, stack

pytestmark = pytest.mark.slow

TOKEN = "conformance-token"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("conformance")
    plenty = {"INVENTORY_SEED_STOCK": "prod_1=1000000000,prod_2=1000000000,prod_3=0"}
    with stack(tmp, service_env=plenty, gateway_env={"SAGA_ADMIN_TOKEN": TOKEN}) as s:
        yield s


@pytest.fixture(scope="module")
def api_schema(live: Stack) -> OpenApiSchema:
    return schemathesis.openapi.from_url(live.url + "/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def check_operation(
    operation: APIOperation[Any, Any, Any, Any], seen: Counter[tuple[str, str, int]]
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"} if "/sagas/" in operation.path else None

    @given(case=operation.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_as_documented(case: Case[Any]) -> None:
        response = case.call_and_validate(headers=auth, checks=CHECKS)
        seen[(operation.method.upper(), operation.path, response.status_code)] += 1

    answers_as_documented()


def test_every_answer_matches_the_document(api_schema: OpenApiSchema) -> None:
    # Driven by hand rather than by schemathesis's pytest plugin, whose lazy loader does
    # not run under this pytest; the strategies and checks are the same.
    operations = []
    for result in api_schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of the document is usable
        operations.append(result.ok())
    assert len(operations) == 9
    seen: Counter[tuple[str, str, int]] = Counter()
    for operation in operations:
        check_operation(operation, seen)
    assert seen[("POST", "/orders", 201)] > 0  # the generated orders got through, too
    assert {path for _, path, _ in seen} == {op.path for op in operations}
