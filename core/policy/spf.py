"""SPF (RFC 7208) on the HELO and MAIL FROM identities, checked at RCPT.

pyspf does the evaluation, with its RFC 7208 s4.6.4 limits: 10 terms that
query DNS, 2 void lookups, and a time limit (``spf.timeout``, 20 s by
default as s4.6.4 suggests). Exceeding a limit is ``permerror``; a DNS
failure is ``temperror``. pyspf is synchronous, so it runs in a small
thread pool, bounded again by ``asyncio.wait_for``.

pyspf's DNS function is pointed at :mod:`core.dns` (``spf.DNSLookup``), so
SPF shares the gateway's resolver, cache, timeout and configured servers;
with none configured that is dnspython's default resolver, as pyspf's own
lookup would use.

Verdicts: ``fail`` refuses with 550 5.7.23 and the domain's explanation
(s8.4, RFC 7372); ``softfail`` and ``neutral`` add spam score;
``permerror`` is accepted, or refused with 550 5.5.2 when
``spf.permerror`` is ``reject`` (s8.7); ``temperror`` is accepted, or
deferred with 451 4.4.3 when ``spf.temperror`` is ``defer`` (s8.6). Every
accepted message gets Received-SPF (s9.1) and Authentication-Results (RFC
8601) headers.

Results are kept for ``RECENT_SECONDS`` per (client, sender, HELO), except
temperror, so a run of transactions from one sender is evaluated once.

Limits: Authentication-Results headers that the message already carries
under our name are not removed here (RFC 8601 s5); the content filter must
not trust them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import ipaddress
import logging

import spf as pyspf

from core import dns as portdns
from core import replies
from core.policy.base import HookResult, SessionInfo
from core.policy.check import (
    Check, exempt, show, split_address, state, tag, tx,
)
from core.policy.helo import is_fqdn

log = logging.getLogger(__name__)

RECENT_SECONDS = 60.0
RECENT_SIZE = 10000

_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                              thread_name_prefix="spf")


def _dns_lookup(name, qtype, strict=True, timeout=None):
    """pyspf's DNS hook: (name, type) -> [((name, type), value), ...]."""
    try:
        rdatas = portdns.lookup_rdata(name, qtype)
    except portdns.DNSTempError as exc:
        raise pyspf.TempError(f"DNS {exc}") from None
    out = []
    for rdata in rdatas:
        if qtype in ("A", "AAAA"):
            value = rdata.address
        elif qtype == "MX":
            value = (rdata.preference, rdata.exchange)
        elif qtype == "PTR":
            value = rdata.target.to_text(True)
        elif qtype in ("TXT", "SPF"):
            value = rdata.strings
        else:
            continue
        out.append(((name, qtype), value))
    return out


pyspf.DNSLookup = _dns_lookup


# Result names as Received-SPF writes them (RFC 7208 s9.1).
_TAGS = {"pass": "Pass", "fail": "Fail", "softfail": "SoftFail",
         "neutral": "Neutral", "none": "None", "temperror": "TempError",
         "permerror": "PermError"}


@dataclasses.dataclass
class SpfResult:
    result: str  # pass fail softfail neutral none permerror temperror
    identity: str  # mailfrom | helo
    domain: str
    explanation: str = ""
    received_spf: str = ""  # the Received-SPF header value


def _printable(text: str, limit: int = 200) -> str:
    # The explanation comes from the sender's DNS (RFC 7208 s6.2) and goes
    # into our reply line: keep it to printable ASCII and a sane length.
    text = "".join(ch if 32 <= ord(ch) < 127 else " " for ch in str(text))
    text = " ".join(text.split())
    return text[:limit]


def _evaluate(ip: str, sender: str, helo: str, receiver: str,
              timeout: float) -> SpfResult:
    try:
        query = pyspf.query(i=ip, s=sender, h=helo, receiver=receiver,
                            timeout=timeout, querytime=timeout)
    except pyspf.PermError as exc:  # e.g. a client address pyspf cannot parse
        domain = split_address(sender)[1] if sender else helo
        return SpfResult("permerror", "mailfrom" if sender else "helo", domain,
                         _printable(exc), f"PermError ({receiver}: {_printable(exc)})")
    try:
        result, _code, explanation = query.check()
    except (pyspf.TempError, portdns.DNSTempError) as exc:
        result, explanation = "temperror", str(exc)
    except RecursionError:
        result, explanation = "permerror", "recursion limit"
    domain = query.o or ""
    try:
        header = query.get_header(result, receiver=receiver)
    except Exception as exc:  # pyspf builds headers from odd inputs badly
        header = f"{_TAGS.get(result, 'None')} (header error: {type(exc).__name__})"
    return SpfResult(result, query.ident, domain, _printable(explanation),
                     _printable(header, 900))


def _client_ip(peer: str) -> str:
    """The client address as SPF evaluates it; "" when it is not one."""
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return ""
    if address.version == 6 and address.ipv4_mapped:
        # RFC 7208 s5: an IPv4-mapped client is an IPv4 client.
        address = address.ipv4_mapped
    return str(address)


def _helo_domain(helo: str) -> str:
    if not helo or helo.startswith("[") or not is_fqdn(helo):
        return ""
    return helo.rstrip(".").lower()


class SpfCheck(Check):
    """Checks the HELO and MAIL FROM identities against the sender's SPF."""

    name = "spf"

    def __init__(self, ctx):
        super().__init__(ctx)
        # (client, sender, helo) -> (expires, result): a mailing list sends
        # many transactions in a row with the same three.
        self.recent: dict[tuple[str, str, str], tuple[float, SpfResult]] = {}

    async def _run(self, session: SessionInfo, sender: str, helo: str) -> SpfResult:
        key = (session.peer_ip, sender.lower(), helo.lower())
        now = self.ctx.clock.now()
        hit = self.recent.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        result = await self._evaluate(session, sender, helo)
        if result.result != "temperror":
            if len(self.recent) >= RECENT_SIZE:
                self.recent.clear()
            self.recent[key] = (now + RECENT_SECONDS, result)
        return result

    async def _evaluate(self, session: SessionInfo, sender: str,
                        helo: str) -> SpfResult:
        timeout = float(self.cfg.values["spf.timeout"])
        receiver = str(self.ctx.settings.hostname)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_POOL, _evaluate, _client_ip(session.peer_ip),
                                      sender, helo, receiver, timeout)
        try:
            return await asyncio.wait_for(future, timeout + 2.0)
        except asyncio.TimeoutError:
            result = "temperror"
            explanation = f"no answer within {timeout:g} s"
        except Exception as exc:  # a crash in pyspf must not crash the session
            log.warning("%s event=spf result=temperror error=%s", tag(session),
                        show(repr(exc)))
            result, explanation = "temperror", type(exc).__name__
        identity = "mailfrom" if sender else "helo"
        domain = split_address(sender)[1] if sender else helo
        header = (f"{_TAGS[result]} ({receiver}: {explanation}) "
                  f"client-ip={session.peer_ip}; identity={identity}")
        return SpfResult(result, identity, domain, explanation, header)

    async def helo_result(self, session: SessionInfo) -> SpfResult | None:
        """The HELO identity's result, once per HELO name of the session."""
        helo = _helo_domain(session.helo)
        if not helo:
            return None
        cached = state(session).get("spf_helo")
        if cached and cached[0] == helo:
            return cached[1]
        result = await self._run(session, "", helo)
        state(session)["spf_helo"] = (helo, result)
        log.info("%s event=spf identity=helo domain=%s result=%s", tag(session),
                 show(helo), result.result)
        self.count(f"helo_{result.result}")
        return result

    async def mailfrom_result(self, session: SessionInfo) -> SpfResult | None:
        """The MAIL FROM result of this transaction (HELO's for <>)."""
        notes = tx(session)
        if "spf" in notes:
            return notes["spf"]
        sender = session.sender or ""
        if sender:
            result = await self._run(session, sender, session.helo or "unknown")
            detail = ""
            if result.result in ("fail", "permerror", "temperror"):
                text = show(result.explanation).replace('"', "'")
                detail = f' explanation="{text}"'
            log.info("%s event=spf identity=mailfrom domain=%s result=%s%s",
                     tag(session), show(result.domain), result.result, detail)
            self.count(result.result)
        else:
            result = await self.helo_result(session)
        notes["spf"] = result
        return result

    def _decide(self, result: SpfResult) -> str | None:
        values = self.cfg.values
        domain = show(result.domain)
        if result.result == "fail" and values["spf.reject_fail"]:
            explanation = result.explanation or "not authorized"
            return replies.SPF_FAIL.format(domain=domain, explanation=explanation)
        if result.result == "permerror" and values["spf.permerror"] == "reject":
            return replies.SPF_PERMERROR.format(domain=domain,
                                                problem=result.explanation)
        if result.result == "temperror" and values["spf.temperror"] == "defer":
            return replies.SPF_TEMPERROR.format(domain=domain)
        return None

    async def on_rcpt(self, session: SessionInfo, rcpt: str) -> HookResult | None:
        if exempt(session) or not _client_ip(session.peer_ip):
            return None
        values = self.cfg.values
        if values["spf.check_helo"]:
            helo = await self.helo_result(session)
            if helo and helo.result == "fail" and values["spf.reject_helo_fail"]:
                log.info("%s event=spf identity=helo result=fail action=reject",
                         tag(session))
                return HookResult(reply=self._decide(helo))
        result = await self.mailfrom_result(session)
        if result is None:
            return None
        reply = self._decide(result)
        if reply:
            log.info("%s event=spf identity=%s result=%s action=%s", tag(session),
                     result.identity, result.result,
                     "defer" if reply.startswith("4") else "reject")
            return HookResult(reply=reply)
        return None

    async def on_data(self, session: SessionInfo, data: bytes) -> HookResult | None:
        result = tx(session).get("spf")
        if result is None:
            return None
        values = self.cfg.values
        score = {"softfail": values["spf.softfail_score"],
                 "neutral": values["spf.neutral_score"]}.get(result.result, 0.0)
        authserv = str(self.ctx.settings.hostname)
        ptype = "smtp.mailfrom" if result.identity == "mailfrom" else "smtp.helo"
        value = pyspf.quote_value(show(result.domain)) if result.domain else "unknown"
        headers = [
            ("Received-SPF", result.received_spf),
            ("Authentication-Results",
             f"{authserv}; spf={result.result} {ptype}={value}"),
        ]
        return HookResult(headers=headers, score=float(score))
