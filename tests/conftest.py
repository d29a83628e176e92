"""Session-wide test setup.

Nothing may leave the machine. The system resolver here is not on loopback,
so before any test runs dnspython's default resolver is replaced by one that
asks only the test DNS server on 127.0.0.1 (pyspf and our own code both go
through that default).
"""

from __future__ import annotations

import dns.resolver
import pytest

from tests.support import dnsserver


def _loopback_resolver(port: int) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.timeout = 2.0
    resolver.lifetime = 2.0
    resolver.cache = None
    return resolver


_SERVER = dnsserver.start()
dns.resolver.default_resolver = _loopback_resolver(_SERVER.port)


@pytest.fixture(scope="session")
def dns_server():
    """The loopback DNS server; tests add zones with ``dns_server.load(...)``."""
    return _SERVER
