"""The one DNS resolver of the gateway: cached, bounded in time, dnspython.

``lookup(name, rdtype)`` and ``await alookup(name, rdtype)`` return the
answer as a list of strings (addresses, joined TXT strings, ``"10 mx.host"``
for MX, target names without the final dot). A name that does not exist,
or has no data of that type, gives ``[]``; a timeout, SERVFAIL or any
other failure raises :class:`DNSTempError`, so a caller can tell "not
listed" from "could not ask".

With no ``dns_servers`` configured the lookups go through dnspython's
default resolver object (``dns.resolver.get_default_resolver()``), taken
afresh on every call, so whatever replaces that default (the system
configuration, or the test suite's loopback resolver) applies here too.

Limits: answers are cached per process for their TTL (capped at
``MAX_TTL``), non-existence for ``NEGATIVE_TTL``; failures are not cached.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)

MAX_TTL = 3600.0
NEGATIVE_TTL = 60.0
CACHE_SIZE = 20000


class DNSTempError(Exception):
    """The question could not be answered now (timeout, SERVFAIL, network)."""


@dataclasses.dataclass(frozen=True)
class _Config:
    servers: tuple[tuple[str, int], ...] = ()
    timeout: float = 5.0


_config = _Config()
_cache: "collections.OrderedDict[tuple[str, str], tuple[float, tuple]]" = (
    collections.OrderedDict()
)
_lock = threading.Lock()
_own: dict[str, object] = {}  # resolvers built from _config, by kind


def parse_server(text: str) -> tuple[str, int]:
    """``192.0.2.53``, ``192.0.2.53:5353``, ``[2001:db8::53]:53`` or ``::1``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, 53
    if not host or not 0 < port < 65536:
        raise ValueError(f"DNS server {text!r}: host, host:port or [v6]:port")
    return host, port


def configure(servers=(), timeout: float = 5.0) -> None:
    """Set the servers (``host[:port]`` strings; empty: default resolver)."""
    global _config
    parsed = tuple(parse_server(s) if isinstance(s, str) else tuple(s)
                   for s in servers)
    _config = _Config(servers=parsed, timeout=float(timeout))
    _own.clear()
    clear_cache()


def configure_from(settings) -> None:
    """Apply the ``dns_servers`` and ``dns_timeout`` settings."""
    configure(getattr(settings, "dns_servers", ()),
              getattr(settings, "dns_timeout", 5.0))


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def resolver() -> dns.resolver.Resolver:
    """The resolver the ``dns_servers`` setting asks for (see ``configure``)."""
    return _sync_resolver()


def _nameservers(servers) -> list:
    return [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]


def _sync_resolver() -> dns.resolver.Resolver:
    if not _config.servers:
        return dns.resolver.get_default_resolver()
    resolver = _own.get("sync")
    if resolver is None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = _nameservers(_config.servers)
        resolver.timeout = resolver.lifetime = _config.timeout
        resolver.cache = None
        _own["sync"] = resolver
    return resolver


def _async_resolver() -> dns.asyncresolver.Resolver:
    # The async resolver copies its servers from the sync one in use, so the
    # default resolver (or its test replacement) decides where queries go.
    source = _sync_resolver()
    cached = _own.get("async")
    if cached is not None and cached[0] is source:
        return cached[1]
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = list(source.nameservers)
    resolver.port = source.port
    resolver.timeout = source.timeout
    resolver.lifetime = source.lifetime
    resolver.cache = None
    _own["async"] = (source, resolver)
    return resolver


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return name.lower().rstrip("."), rdtype.upper()


def _cached(key) -> tuple | None:
    with _lock:
        entry = _cache.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del _cache[key]
            return None
        _cache.move_to_end(key)
        return entry[1]


def _store(key, rdatas: tuple, ttl: float) -> None:
    with _lock:
        _cache[key] = (time.monotonic() + min(ttl, MAX_TTL), rdatas)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def _qname(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name.rstrip(".") + ".")
    except dns.exception.DNSException as exc:
        # A name that cannot be asked (label too long, empty label) has no data.
        raise ValueError(str(exc)) from None


def _finish(key, answer) -> tuple:
    if answer.rrset is None:
        rdatas: tuple = ()
        ttl = NEGATIVE_TTL
    else:
        rdatas = tuple(answer.rrset)
        ttl = float(answer.rrset.ttl)
    _store(key, rdatas, ttl)
    return rdatas


def _failed(name: str, rdtype: str, exc: Exception) -> DNSTempError:
    return DNSTempError(f"{rdtype} {name}: {type(exc).__name__}: {exc}")


def lookup_rdata(name: str, rdtype: str) -> tuple:
    """The rdata objects of the answer (cached); ``()`` when there are none."""
    key = _key(name, rdtype)
    hit = _cached(key)
    if hit is not None:
        return hit
    try:
        qname = _qname(name)
    except ValueError:
        return ()
    try:
        answer = _sync_resolver().resolve(
            qname, rdtype, lifetime=_config.timeout, raise_on_no_answer=False,
            search=False,
        )
    except dns.resolver.NXDOMAIN:
        _store(key, (), NEGATIVE_TTL)
        return ()
    except (dns.exception.DNSException, OSError) as exc:
        raise _failed(name, rdtype, exc) from None
    return _finish(key, answer)


async def alookup_rdata(name: str, rdtype: str) -> tuple:
    """Async :func:`lookup_rdata`."""
    key = _key(name, rdtype)
    hit = _cached(key)
    if hit is not None:
        return hit
    try:
        qname = _qname(name)
    except ValueError:
        return ()
    try:
        answer = await _async_resolver().resolve(
            qname, rdtype, lifetime=_config.timeout, raise_on_no_answer=False,
            search=False,
        )
    except dns.resolver.NXDOMAIN:
        _store(key, (), NEGATIVE_TTL)
        return ()
    except (dns.exception.DNSException, OSError) as exc:
        raise _failed(name, rdtype, exc) from None
    return _finish(key, answer)


def to_text(rdata) -> str:
    """One answer as a plain string."""
    rdtype = rdata.rdtype
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rdata.address
    if rdtype == dns.rdatatype.TXT:
        # RFC 7208 s3.3: the strings of one record are joined without spaces.
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}"
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME, dns.rdatatype.NS):
        return rdata.target.to_text(omit_final_dot=True)
    return rdata.to_text()


def lookup(name: str, rdtype: str) -> list[str]:
    """Answers of type ``rdtype`` for ``name``; [] if none; DNSTempError."""
    return [to_text(r) for r in lookup_rdata(name, rdtype)]


async def alookup(name: str, rdtype: str) -> list[str]:
    """Async :func:`lookup`."""
    return [to_text(r) for r in await alookup_rdata(name, rdtype)]
