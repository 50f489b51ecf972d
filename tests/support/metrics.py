"""Read /metrics as tests do: every sample by name and labels; an admin to read the rest."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import falcon.testing
from prometheus_client.parser import text_string_to_metric_families

from gridlink.commands.accounts import set_admin
from gridlink.commands.unit_of_work import run_command
from gridlink.services import Services
from tests.support.api import ApiUser, login, sign_up

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_admin(client: falcon.testing.TestClient, services: Services) -> ApiUser:
    """Sign up an administrator and return it with an admin's token.

    A promotion revokes the user's tokens: the token is a login's after it.
    """
    admin = sign_up(client, "admin")
    run_command(services, partial(set_admin, username=admin.username, is_admin=True))
    result = login(client, admin.username, admin.password)
    assert result.status_code == 200, result.text
    return replace(admin, token=result.json["token"])


def scrape(client: falcon.testing.TestClient, admin: ApiUser) -> Samples:
    """Return every sample of ``/metrics`` by name and labels, scraped with an admin's token."""
    result = client.simulate_get("/metrics", headers=admin.headers)
    assert result.status_code == 200
    assert result.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(result.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
