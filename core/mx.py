"""Where a recipient's mail goes next: transports, downstream, smarthost, MX.

The route of a recipient is decided by its domain: a ``transports`` entry
wins; mail for a relay domain (and all inbound mail) goes to the
``downstream`` server; other outbound mail goes to the ``smarthost`` or,
when none is set, to the domain's MX hosts. MX and address lookups go
through :mod:`core.dns` (dnspython, asynchronous, the configured
``dns_servers``), never the C library's resolver.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from core import dns

# RFC 5321 5.1: try MX hosts in preference order; we stop after this many.
MAX_MX_HOSTS = 5


@dataclasses.dataclass(frozen=True)
class Hop:
    """A next hop: fixed addresses, or a domain whose MX is looked up."""

    name: str  # for logs and for grouping recipients
    targets: tuple[tuple[str, int], ...] = ()
    mx_domain: str = ""


class RouteError(Exception):
    """No address for a hop; ``reply`` is an SMTP-style line for the report."""

    def __init__(self, reply: str, permanent: bool):
        super().__init__(reply)
        self.reply = reply
        self.permanent = permanent


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".") if "@" in address else ""


def route(settings, recipient: str, direction: str) -> Hop:
    """The next hop for ``recipient`` of a message going ``direction``."""
    domain = domain_of(recipient)
    hop = settings.transports.get(domain)
    if hop is not None:
        return Hop(f"transport:{domain}", (hop,))
    local = not domain or domain in settings.relay_domains
    if direction == "in" or local:
        return Hop("downstream", (settings.downstream,))
    if settings.smarthost[0]:
        return Hop("smarthost", (settings.smarthost,))
    return Hop(f"mx:{domain}", mx_domain=domain)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _addresses(host: str) -> list[str]:
    found: list[str] = []
    for rtype in ("AAAA", "A"):
        found.extend(rdata.address for rdata in await dns.alookup_rdata(host, rtype))
    return found


async def _lookup_mx(domain: str) -> list[tuple[str, int]]:
    try:
        records = sorted((r.preference, str(r.exchange).rstrip("."))
                         for r in await dns.alookup_rdata(domain, "MX"))
        if len(records) == 1 and records[0][1] in ("", "."):
            # RFC 7505 3: a null MX says the domain takes no mail.
            raise RouteError(f"556 5.1.10 domain {domain} accepts no mail "
                             "(null MX)", True)
        if not records:
            # RFC 5321 5.1: no MX means the domain itself is the mail host.
            if not await _addresses(domain):
                raise RouteError(f"550 5.1.2 domain {domain} has no mail host",
                                 True)
            records = [(0, domain)]
        targets: list[tuple[str, int]] = []
        for _pref, host in records[:MAX_MX_HOSTS]:
            addresses = [host] if _is_ip(host) else await _addresses(host)
            targets.extend((address, 25) for address in addresses)
    except dns.DNSTempError as exc:
        raise RouteError(f"451 4.4.3 DNS lookup for {domain} failed: {exc}",
                         False) from None
    if not targets:
        raise RouteError(f"451 4.4.4 no address for the MX hosts of {domain}", False)
    return targets


async def targets(hop: Hop) -> list[tuple[str, int]]:
    """Addresses to try for ``hop``, in order; raises RouteError."""
    if hop.targets:
        return list(hop.targets)
    return await _lookup_mx(hop.mx_domain)
