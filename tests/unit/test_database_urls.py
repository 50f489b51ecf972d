"""Database URLs with one host or several: libpq's form in, SQLAlchemy's inside, one per server."""

from __future__ import annotations

import pytest

from gridlink.db.urls import libpq_url, prefer_hosts, server_urls, sqlalchemy_url

MULTI = "postgresql://gridlink:s%40cret@10.77.0.21:5432,10.77.0.22:5432,10.77.0.23/gridlink?target_session_attrs=read-write"


def test_one_host_url_is_spelled_for_psycopg2() -> None:
    url = sqlalchemy_url("postgresql://gridlink@127.0.0.1:15432/gridlink")

    assert url == "postgresql+psycopg2://gridlink@127.0.0.1:15432/gridlink"
    assert server_urls(url) == (url,)
    assert libpq_url(url) == "postgresql://gridlink@127.0.0.1:15432/gridlink"


def test_several_hosts_split_into_one_url_per_server_without_session_options() -> None:
    url = sqlalchemy_url(MULTI)

    assert server_urls(url) == (
        "postgresql+psycopg2://gridlink:s%40cret@10.77.0.21:5432/gridlink",
        "postgresql+psycopg2://gridlink:s%40cret@10.77.0.22:5432/gridlink",
        "postgresql+psycopg2://gridlink:s%40cret@10.77.0.23/gridlink",
    )


def test_several_hosts_go_back_to_libpq_as_written() -> None:
    assert libpq_url(sqlalchemy_url(MULTI)) == MULTI


def test_a_url_already_in_sqlalchemys_form_is_read_again_unchanged() -> None:
    # A child process (gridlink seed) gets the parent's settings back in its environment.
    url = sqlalchemy_url(MULTI)
    assert sqlalchemy_url(url) == url


@pytest.mark.parametrize(
    "raw",
    ["mysql://x@h/db", "postgresql://gridlink@/gridlink", "postgresql://u@h1:5432,:5433/db"],
)
def test_a_url_without_a_host_or_of_another_scheme_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        sqlalchemy_url(raw)


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        sqlalchemy_url("postgresql://u@h1:5432,h2:often/db")


def test_preferred_hosts_come_first_in_their_order_and_the_rest_keep_theirs() -> None:
    params = {"host": "db1,db2,db3,db4", "port": "5432,5433,5432,"}

    prefer_hosts(params, ["db3:5432", "db2:5433"])

    assert params == {"host": "db3,db2,db1,db4", "port": "5432,5433,5432,"}


def test_an_ipv6_host_is_matched_by_its_bracketed_address() -> None:
    params = {"host": "db1,::1", "port": "5432,5433"}

    prefer_hosts(params, ["[::1]:5433"])

    assert params == {"host": "::1,db1", "port": "5433,5432"}


@pytest.mark.parametrize(
    "params",
    [{"host": "db1", "port": "5432"}, {"host": "db1,db2", "port": "5432"}, {"dbname": "x"}],
)
def test_one_host_or_lists_that_do_not_pair_up_are_left_alone(params: dict[str, str]) -> None:
    before = dict(params)

    prefer_hosts(params, ["db2:5432"])

    assert params == before
