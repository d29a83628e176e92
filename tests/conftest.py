"""Session-wide test setup.

Nothing may leave the machine. The system resolver here is not on loopback,
so before any test runs dnspython's default resolver is replaced by one that
asks only the test DNS server on 127.0.0.1 (pyspf and our own code both go
through that default).
"""

from __future__ import annotations

import contextlib
import os

import dns.asyncresolver
import dns.resolver
import pytest

from core import config
from tests.support import dnsserver

# Shared real peers as fixtures: clamd (a real daemon with EICAR signatures).
pytest_plugins = ["tests.support.clamd"]

# The admin's own ./portcullis.conf (or the appliance's) must not change what
# the tests see: every test builds the settings it needs.
config.CHECKOUT_CONFIG = config.Path("/nonexistent/portcullis.conf")
config.APPLIANCE_CONFIG = config.Path("/nonexistent/portcullis.conf")
for _name in [n for n in os.environ if n.startswith("PORTCULLIS_")]:
    del os.environ[_name]


def _loopback_resolver(port: int, kind=dns.resolver.Resolver):
    resolver = kind(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 2.0
    resolver.lifetime = 2.0
    resolver.cache = None
    return resolver


_SERVER = dnsserver.start()
dns.resolver.default_resolver = _loopback_resolver(_SERVER.port)
# The same for code that asks dns.asyncresolver's own default directly.
dns.asyncresolver.default_resolver = _loopback_resolver(
    _SERVER.port, dns.asyncresolver.Resolver)


@pytest.fixture(scope="session")
def dns_server():
    """The loopback DNS server; tests add zones with ``dns_server.load(...)``."""
    return _SERVER


@pytest.fixture
def dns_zone(dns_server):
    """Records for one test: ``dns_zone("a.example. A 192.0.2.1")`` or
    ``dns_zone(path=case / "dns.txt")``; gone (and the resolver cache empty)
    after the test."""
    from core import dns as core_dns

    stack = contextlib.ExitStack()

    def load(text: str = "", path=None):
        core_dns.clear_cache()
        stack.enter_context(dns_server.zone(text, path))
        return dns_server

    yield load
    stack.close()
    core_dns.clear_cache()
