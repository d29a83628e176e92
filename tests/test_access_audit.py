"""Every endpoint declares who may call it, and refuses callers without a session.

The audit walks the whole URL map, so a view added later without a
decorator from app/access.py fails here.
"""

from __future__ import annotations

import re

import pytest

from tests.test_web import build

# Reachable without a session, on purpose.
PUBLIC = {"static", "ui.auth_login"}


@pytest.fixture
def app(tmp_path):
    return build(tmp_path)


def _example_url(rule) -> str:
    # Fill every URL variable with a plausible value of its converter.
    def value(match):
        converter = match.group(1) or "string"
        return "1" if converter == "int" else "0000000000000000"

    return re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", value, rule.rule)


def test_every_view_declares_its_access(app):
    undeclared = []
    for endpoint, view in app.view_functions.items():
        if endpoint in PUBLIC:
            continue
        if getattr(view, "access", None) not in ("login", "api"):
            undeclared.append(endpoint)
    assert undeclared == []


def test_public_views_are_only_the_allow_list(app):
    public = {endpoint for endpoint, view in app.view_functions.items()
              if getattr(view, "access", None) == "public"}
    assert public <= PUBLIC


def test_no_endpoint_answers_without_a_session(app):
    client = app.test_client()
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        url = _example_url(rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            checked += 1
            if rule.endpoint.startswith("api."):
                assert response.status_code == 401, (method, url)
                assert response.is_json
            else:
                assert response.status_code == 302, (method, url)
                assert response.location.startswith("/login"), (method, url)
    assert checked >= 15
