"""``/api/openapi.json`` and ``/api/docs/``: the document matches the app's routes and API.md."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import falcon
import falcon.inspect
import falcon.testing
import pytest
from openapi_spec_validator import validate

from gridlink.app import create_app
from gridlink.project import PROJECT_ROOT
from gridlink.resources import docs
from gridlink.services import Services
from gridlink.settings import Settings
from gridlink.web.openapi import build_document, documented_path

# The contract sits beside the checkout (../shared/API.md), or beside its worktree folder.
API_MD = next(
    (
        folder / "shared" / "API.md"
        for folder in PROJECT_ROOT.parents
        if (folder / "shared").is_dir()
    ),
    PROJECT_ROOT.parent / "shared" / "API.md",
)
METHODS = ("get", "post", "patch", "put", "delete")
# Endpoints API.md promises that open issues build (none now).
NOT_YET_SERVED: set[tuple[str, str]] = set()


@pytest.fixture(scope="module")
def document(client):
    result = client.simulate_get("/api/openapi.json")
    assert result.status_code == 200
    assert result.headers["Content-Type"] == "application/json"
    return result.json


def served_operations(app: Any) -> set[tuple[str, str]]:
    """The (path, method) pairs the app serves, read through Falcon's own route inspector."""
    return {
        (documented_path(route.path), method.method)
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    }


def document_operations(document: Any) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_the_app_serves_is_in_the_document_and_nothing_else(client, document):
    served = served_operations(client.app)
    assert len(served) > 20
    assert document_operations(document) == served


def test_the_document_covers_every_endpoint_of_api_md(document):
    if not API_MD.exists():
        pytest.skip(f"{API_MD} is not beside the checkout")
    rows = re.findall(r"^\| `(GET|POST|PATCH|DELETE) (/[^`?]*)", API_MD.read_text(), re.MULTILINE)
    promised = {(re.sub(r"<(\w+)>", r"{\1}", path).rstrip("/"), method) for method, path in rows}
    assert len(promised) > 25
    # Every path is served with and without its trailing slash (API.md writes /admin/).
    documented = {(path.rstrip("/"), method) for path, method in document_operations(document)}
    assert promised - NOT_YET_SERVED <= documented
    # Built, an endpoint leaves NOT_YET_SERVED: the list only shrinks.
    assert promised >= NOT_YET_SERVED
    assert not NOT_YET_SERVED & documented


def test_a_route_without_a_description_stops_the_build(settings, services):
    class Undescribed:
        def on_get(self, req, resp):
            resp.media = {}

    app = create_app(settings, services)
    app.add_route("/api/undescribed", Undescribed())
    with pytest.raises(LookupError, match="GET /api/undescribed has no OpenAPI description"):
        build_document(app)


def test_the_document_is_built_once_per_app(settings: Settings, services: Services, monkeypatch):
    builds = []

    def counting(app):
        builds.append(app)
        return b'{"openapi": "3.1.0"}'

    monkeypatch.setattr(docs, "document_bytes", counting)
    client = falcon.testing.TestClient(create_app(settings, services))
    bodies = {client.simulate_get("/api/openapi.json").content for _ in range(3)}
    assert (len(builds), bodies) == (1, {b'{"openapi": "3.1.0"}'})


def test_the_token_scheme_is_an_api_key_in_the_authorization_header(document):
    scheme = document["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert document["paths"]["/api/grids/"]["post"]["security"] == [{"token": []}]
    assert {} in document["paths"]["/api/grids/{slug}/"]["get"]["security"]


def test_each_operation_lists_the_errors_it_can_answer(document):
    create_link = document["paths"]["/api/links/"]["post"]
    assert set(create_link["responses"]) == {
        "201", "400", "401", "403", "404", "408", "409", "413", "414", "415", "422", "431", "503"
    }  # fmt: skip
    login = document["paths"]["/api/auth/login/"]["post"]["responses"]
    assert {"401", "429"} <= set(login)
    assert "Retry-After" in login["429"]["headers"]
    # A wrong password counts against the login throttle wherever it is checked.
    assert "429" in document["paths"]["/api/auth/password/change/"]["post"]["responses"]
    assert "429" in document["paths"]["/api/users/me/"]["delete"]["responses"]
    assert set(document["paths"]["/healthz"]["get"]["responses"]) == {"200", "401", "414", "431"}
    # Throttled before any work is done (API.md): sign-up and reset requests.
    for path in ("/api/auth/signup/", "/api/auth/password/reset/"):
        assert "Retry-After" in document["paths"][path]["post"]["responses"]["429"]["headers"]
    # Refused by the server before the app sees them, on any path.
    assert {"414", "431"} <= set(document["paths"]["/api/users/{username}/"]["get"]["responses"])
    assert "408" in document["paths"]["/api/auth/signup/"]["post"]["responses"]
    error = login["401"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}


def test_headers_and_parameters_of_api_md_are_described(document):
    profile = document["paths"]["/api/users/{username}/"]["get"]
    assert "ETag" in profile["responses"]["200"]["headers"]
    assert "304" in profile["responses"]
    assert "If-None-Match" in {p["name"] for p in profile["parameters"]}
    create_grid = document["paths"]["/api/grids/"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in create_grid["parameters"]}
    assert "Location" in create_grid["responses"]["201"]["headers"]
    list_links = document["paths"]["/api/links/"]["get"]
    assert {"grid", "limit", "starting_after"} == {p["name"] for p in list_links["parameters"]}


def test_a_created_grid_links_to_the_operations_on_it(document):
    links = document["paths"]["/api/grids/"]["post"]["responses"]["201"]["links"]
    assert links["GetGrid"] == {
        "operationId": "getGrid",
        "parameters": {"slug": "$response.body#/slug"},
    }
    operation_ids = {
        operation["operationId"]
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in METHODS
    }
    for link in links.values():
        assert link["operationId"] in operation_ids


def test_the_error_schema_is_the_error_body_of_api_md(document, client):
    detail = document["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"type", "message", "fields"}
    assert set(detail["required"]) == {"type", "message"}
    refused = client.simulate_post("/api/auth/login/", json={"username": "x", "extra": 1}).json
    assert set(refused["error"]) <= set(detail["properties"])
    assert refused["error"]["type"] in detail["properties"]["type"]["enum"]


def test_the_profile_schema_has_no_private_fields(document):
    schemas = document["components"]["schemas"]
    for name in ("Profile", "Grid", "Link"):
        assert schemas[name]["additionalProperties"] is False
        assert not {"email", "token", "password"} & set(schemas[name]["properties"])


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


def test_the_docs_page_and_its_assets_come_from_this_server_only(client):
    page = client.simulate_get("/api/docs/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "http" not in policy
    references = _References()
    references.feed(page.text)
    assert len(references.urls) >= 2
    assert "/api/openapi.json" in page.text
    # No scheme, no host: every reference is a path on this server.
    assert all(re.match(r"^/api/docs/assets/[\w.-]+$", url) for url in references.urls)
    for url in references.urls:
        asset = client.simulate_get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    css = client.simulate_get("/api/docs/assets/swagger-ui.css")
    assert css.headers["Content-Type"].startswith("text/css")
    external = re.findall(r"url\((?!\s*['\"]?data:)([^)]*)\)", css.text)
    assert external == []


def test_the_docs_page_is_served_without_its_trailing_slash_too(client):
    assert client.simulate_get("/api/docs").status_code == 200
    assert client.simulate_get("/api/docs/assets/no-such-file.js").status_code == 404
