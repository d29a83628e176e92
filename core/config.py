"""Settings: one schema that gives every key its type, default and meaning.

Values come, in rising order of precedence, from the schema defaults, the
config file (TOML: ``/etc/portcullis/portcullis.conf`` on the appliance,
``./portcullis.conf`` in a checkout, or the file named by
``PORTCULLIS_CONFIG``) and environment variables ``PORTCULLIS_<KEY>``.
The result is parsed once into a frozen :class:`Settings`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

APPLIANCE_CONFIG = Path("/etc/portcullis/portcullis.conf")
CHECKOUT_CONFIG = Path("portcullis.conf")


class ConfigError(Exception):
    """A setting has a value that is not allowed; the text says which and why."""


# region parsers: each takes the raw value (str from env, any from TOML) and
# returns the typed value or raises ValueError with what is allowed.


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a whole number")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("a whole number") from None


def _nonneg_int(value: Any) -> int:
    number = _int(value)
    if number < 0:
        raise ValueError("a whole number, 0 or more")
    return number


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number") from None
    # nan compares false with everything: a nan level quarantined all mail.
    if not math.isfinite(number):
        raise ValueError("a number (not nan or inf)")
    return number


def _nonneg_float(value: Any) -> float:
    number = _float(value)
    if number < 0:
        raise ValueError("a number, 0 or more")
    return number


def _pos_float(value: Any) -> float:
    number = _float(value)
    if number <= 0:
        raise ValueError("a number above 0")
    return number


def _pos_int(value: Any) -> int:
    number = _int(value)
    if number < 1:
        raise ValueError("a whole number, 1 or more")
    return number


def _probability(value: Any) -> float:
    number = _float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("a probability from 0 to 1")
    return number


def _clamd_address(value: Any) -> str:
    text = _str(value).strip()
    if text.startswith("unix:") and len(text) > 5 or text.startswith("/"):
        return text
    try:
        host, _ = _hostport(text)
    except ValueError:
        raise ValueError("unix:/path/to/socket or host:port") from None
    if "/" in host:  # "tcp://127.0.0.1:3310" split at its last colon
        raise ValueError("unix:/path/to/socket or host:port (no scheme)")
    if not text:
        raise ValueError("unix:/path/to/socket or host:port")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false (also yes/no, on/off, 1/0)")


def _list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)):
        items = [_str(item).strip() for item in value]
    else:
        raise ValueError("a list of strings, or one string separated by commas")
    return tuple(item for item in items if item)


def _zones(value: Any) -> tuple[str, ...]:
    # Checked here so that a bad entry stops start-up, not every message.
    from core.spam.uribl import ZoneError, parse_zone

    # An empty entry ("", or ",," in a string) is a slip, not "no zone".
    if isinstance(value, (list, tuple)):
        entries = [_str(item) for item in value]
    else:
        entries = str(value).split(",") if str(value).strip() else []
    for entry in entries:
        if not entry.strip():
            raise ValueError(f"uribl_zones has an empty entry in {value!r}; give "
                             "zone names such as multi.surbl.org, or none at all")
    zones = _list(value)
    for zone in zones:
        try:
            parse_zone(zone)
        except ZoneError as exc:
            raise ValueError(str(exc)) from None
    return zones


def _dns_servers(value: Any) -> tuple[str, ...]:
    from core.dns import parse_server

    servers = _list(value)
    for server in servers:
        try:
            # dnspython asks servers by address: a name would fail at the
            # first lookup instead of here.
            ipaddress.ip_address(parse_server(server)[0])
        except ValueError:
            raise ValueError(f"DNS server addresses as 192.0.2.53, 192.0.2.53:5353 "
                             f"or [2001:db8::53]:53; "
                             f"{server!r} is not one") from None
    return servers


# A host or domain name (RFC 1123 labels), a relay domain also as
# "*.example.com"; anything else ('"example.com"', 'example.com;', a JSON
# list pasted into a variable) was taken as a domain no mail ever has.
_NAME_RE = re.compile(r"(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                      r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _domains(value: Any) -> tuple[str, ...]:
    domains = []
    for item in _list(value):
        domain = item.lower().rstrip(".")
        if len(domain) > 253 or not _NAME_RE.fullmatch(domain):
            raise ValueError(f"domain names; {item!r} is not one")
        domains.append(domain)
    return tuple(domains)


def _hostname(value: Any) -> str:
    # It goes into the banner and Received lines: a CR or LF in it would
    # end a protocol line early.
    name = _str(value).strip().rstrip(".")
    if name and (len(name) > 253 or name.startswith("*")
                 or not _NAME_RE.fullmatch(name.lower())):
        raise ValueError("a host name such as mx.example.com, or empty")
    return name


def _networks(value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for item in _list(value):
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"IP networks such as 192.0.2.0/24 or 2001:db8::/32; "
                f"{item!r} is not one"
            ) from None
    return tuple(nets)


def _hostport(value: Any) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; an empty string means 'off'."""
    text = _str(value).strip()
    if not text:
        return ("", 0)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, _, port_text = text.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ValueError("host:port, such as 127.0.0.1:2525 or [::1]:2525")
    return (host, port)


def _transports(value: Any) -> dict[str, tuple[str, int]]:
    """Per-domain next hops: ``example.com=10.0.0.5:25`` entries."""
    result: dict[str, tuple[str, int]] = {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in _list(value):
            domain, sep, hop = item.partition("=")
            if not sep:
                raise ValueError(f"domain=host:port entries; {item!r} has no '='")
            pairs.append((domain, hop))
    for domain, hop in pairs:
        result[domain.strip().lower().rstrip(".")] = _hostport(hop)
    return result


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _str(value).strip().lower()
        if text not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return text

    return parse


# endregion


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str


SCHEMA: tuple[Key, ...] = (
    # Where things live.
    Key("data_dir", _str, "./var",
        "Directory for the queue, quarantine, database and generated keys; a "
        "relative path is taken from the folder the command runs in."),
    Key("database_url", _str, "",
        "peewee database URL; empty means sqlite:///<data_dir>/portcullis.db."),
    Key("hostname", _hostname, "",
        "Name in the SMTP banner and in Received headers; empty: the host name."),
    Key("log_level", _choice("debug", "info", "warning", "error"), "info",
        "Lowest level written to the log."),
    Key("log_file", _str, "",
        "Log file; empty logs to standard error."),
    # SMTP listeners and who may relay.
    Key("smtp_listen_in", _hostport, "127.0.0.1:2525",
        "External listener for incoming mail (25 on the appliance)."),
    Key("smtp_listen_out", _hostport, "127.0.0.1:2526",
        "Internal listener for outgoing mail from the mail server (26 on the "
        "appliance); empty turns it off."),
    Key("relay_domains", _domains, ("example.com",),
        "Domains we accept mail for from anyone."),
    Key("trusted_networks", _networks, ("127.0.0.0/8", "::1/128"),
        "Clients that may relay to any domain."),
    Key("xclient_networks", _networks, (),
        "Front hosts allowed to send XCLIENT to pass the real client address."),
    Key("proxy_protocol_networks", _networks, (),
        "Front hosts (load balancers) that speak the PROXY protocol; a "
        "listener with any entry here expects a PROXY header from them."),
    Key("max_message_size", _nonneg_int, 10 * 1024 * 1024,
        "Largest message accepted, in bytes (advertised with SIZE)."),
    Key("max_recipients", _nonneg_int, 1000,
        "Recipients per message; more get 452 4.5.3."),
    Key("bare_lf", _choice("normalise", "reject"), "normalise",
        "Bare LF or CR in DATA: normalise (to CRLF) or reject (550 5.5.2)."),
    # Accept by default: 15 of the 4538 messages of the ham/spam corpus have
    # such lines, real mail that a refusal would lose.
    Key("long_lines", _choice("reject", "accept"), "accept",
        "Message lines over 1000 octets (RFC 5321 4.5.3.1.6): accept (them "
        "unchanged) or reject (500 5.5.2 after the final dot)."),
    Key("greet_pause", _nonneg_float, 1.0,
        "Seconds to wait before the 220 banner; a client that talks first gets "
        "554 5.5.1 and is disconnected (trusted networks skip it); 0 is off."),
    Key("smtp_timeout", _pos_float, 300.0,
        "Seconds a client may stay silent before the connection is closed."),
    Key("tls_cert", _str, "",
        "PEM certificate for STARTTLS; empty: one generated in data_dir."),
    Key("tls_key", _str, "",
        "PEM key for tls_cert; empty: generated alongside it."),
    # Delivery.
    Key("downstream", _hostport, "127.0.0.1:2500",
        "Default next hop for mail to relay domains (the internal mail server)."),
    Key("transports", _transports, {},
        "Per-domain next hops, domain=host:port; they win over downstream."),
    Key("smarthost", _hostport, "",
        "Next hop for outgoing mail; empty: deliver by MX lookup."),
    Key("delivery_concurrency", _nonneg_int, 20,
        "Simultaneous outbound SMTP transactions."),
    Key("retry_initial", _pos_float, 300.0,
        "Seconds before the first retry after a 4xx."),
    Key("retry_max", _pos_float, 3600.0,
        "Longest pause between retries (the backoff doubles up to this)."),
    Key("queue_lifetime", _nonneg_float, 5 * 86400.0,
        "Seconds a deferred message is retried before it bounces."),
    # Filtering.
    Key("workers", _nonneg_int, 0,
        "Filter worker processes; 0 means one per CPU core."),
    Key("clamd", _clamd_address, "unix:/var/run/clamav/clamd.ctl",
        "clamd address: unix:/path/to/socket or host:port."),
    Key("clamd_timeout", _pos_float, 30.0,
        "Seconds to wait for a clamd answer."),
    Key("clamd_stream_max", _nonneg_int, 25 * 1024 * 1024,
        "clamd's StreamMaxLength in bytes (its default, 25M); a stream longer "
        "than this is not sent but reported unscanned."),
    Key("virus_fail_open", _bool, False,
        "Deliver unscanned mail when clamd is unreachable (default: keep it "
        "queued)."),
    Key("filter_retry", _pos_float, 60.0,
        "Seconds before a message whose scan failed for a temporary reason "
        "(clamd unreachable) is filtered again."),
    Key("virus_scan", _bool, True,
        "Scan every message with clamd."),
    Key("spam_tag_level", _float, 3.0,
        "Score from which X-Spam-Flag: YES is added."),
    Key("spam_quarantine_level", _float, 6.0,
        "Score from which a message goes to the spam quarantine."),
    Key("bayes_enabled", _bool, True,
        "Score messages with the Bayesian filter."),
    Key("bayes_bigrams", _nonneg_int, 3,
        "Bayes OSB window: each word is paired with the window-1 words before "
        "it (1 or 0: single words only; at most 8)."),
    Key("bayes_max_tokens", _nonneg_int, 40000,
        "Most tokens (pairs included) taken from one message, 1000 to "
        "10,000,000; each text part gets a fair share of them and a long text "
        "is read at its start and its last 16,000 characters."),
    Key("bayes_method", _choice("split", "chi", "logistic", "both", "mix", "ngram"),
        "mix",
        "How Bayes combines token evidence: mix (split, ngram and the "
        "header fields the sender writes together once 150 ham and 150 spam "
        "are learned, split before; the header of mailing-list mail counts a "
        "tenth beside its body), "
        "split (chi-square over counts of header and body apart, log-odds "
        "averaged), chi (one chi-square over all, as SpamBayes), logistic "
        "(regression weights), both (mean of chi and logistic) or ngram "
        "(regression over character 4-grams)."),
    Key("bayes_unsure_low", _probability, 0.2,
        "Bayes probability up to which a message is ham; above it is unsure."),
    Key("bayes_unsure_high", _probability, 0.9,
        "Bayes probability from which a message is spam."),
    Key("bayes_min_learned", _nonneg_int, 50,
        "Ham and spam messages each that must be learned before Bayes scores."),
    # Off by default: learning inside check() and the other workers' reload
    # of the token table after it halved the delivered rate (bench/replay.py).
    Key("bayes_autolearn", _bool, False,
        "Learn messages the filter is very sure about (see the two levels)."),
    Key("bayes_autolearn_spam", _probability, 0.9999,
        "Bayes probability from which a message is learned as spam."),
    Key("bayes_autolearn_ham", _probability, 0.0001,
        "Bayes probability up to which a message is learned as ham."),
    Key("bayes_expire_days", _nonneg_int, 180,
        "Tokens unseen for this many days and learned at most twice expire "
        "(checked once a day by the gateway); 0 turns expiry off."),
    Key("bayes_reload_seconds", _nonneg_float, 60.0,
        "How often a worker checks whether the token store changed."),
    Key("uribl_zones", _zones, (),
        "URI blocklist zones, each zone[/bitmask][:score] or "
        "zone=127.0.0.2|127.0.0.3[:score], e.g. multi.surbl.org/0x7e:3.5; empty "
        "turns URI lookups off. Bitmask 1 to 32 bits, values in 127/8, score "
        "finite within +-100."),
    Key("uribl_max_lookups", _nonneg_int, 20,
        "Most registrable domains of one message looked up in the zones."),
    # DNS and SMTP-time policy (the policy knobs themselves live in the
    # database tables policy_setting and policy_list_entry).
    Key("dns_servers", _dns_servers, (),
        "DNS servers (address, address:port or [v6]:port); empty: the system "
        "resolver."),
    Key("dns_timeout", _pos_float, 5.0,
        "Seconds one DNS lookup may take before it counts as a temporary error."),
    Key("policy_refresh", _float, 30.0,
        "Seconds between re-reading the policy settings and lists from the "
        "database."),
    # Web admin.
    Key("web_listen", _hostport, "127.0.0.1:8025",
        "Address of the web admin."),
    Key("web_workers", _pos_int, 2,
        "gunicorn worker processes for the web admin."),
    Key("secret_key", _str, "",
        "Signing key for sessions and quarantine links; empty: a key "
        "generated at init and kept in data_dir."),
)

SCHEMA_BY_NAME = {key.name: key for key in SCHEMA}


class Settings:
    """Typed, read-only settings. Attribute names are the schema keys."""

    def __init__(self, values: dict[str, Any], source: str):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "source", source)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only; use replace()")

    def replace(self, **changes: Any) -> "Settings":
        """Copy with some keys changed, parsed like file values."""
        values = dict(self._values)
        for name, raw in changes.items():
            values[name] = _parse_one(name, raw, "replace()")
        return Settings(_derive(values), self.source)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


def _parse_one(name: str, raw: Any, where: str) -> Any:
    key = SCHEMA_BY_NAME.get(name)
    if key is None:
        raise ConfigError(f"unknown setting {name!r} in {where}; see README for keys")
    try:
        return key.parse(raw)
    except ValueError as exc:
        raise ConfigError(
            f"setting {name!r} in {where} is {raw!r}; allowed: {exc}"
        ) from None


# The longest expiry age: a century of days (a day number stays small).
MAX_EXPIRE_DAYS = 36500
# bayes_max_tokens: fewer leaves no room for the body beside the header
# (0 left the filter with its 4-gram voice alone); more only costs memory.
MIN_TOKENS = 1000
MAX_TOKENS = 10_000_000


def _check_together(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Checks that span keys; each message names the keys, where they were
    set (``sources``) and the rule."""
    def pair(a: str, b: str) -> str:
        places = sorted({sources[a], sources[b]})
        return (f"settings '{a}' ({values[a]}) and '{b}' ({values[b]}) in "
                f"{' and '.join(places)}")

    def one(name: str) -> str:
        return f"setting '{name}' in {sources[name]} is {values[name]}"

    if values["bayes_unsure_low"] >= values["bayes_unsure_high"]:
        raise ConfigError(f"{pair('bayes_unsure_low', 'bayes_unsure_high')}: "
                          "the low one must be below the high one")
    if values["bayes_autolearn_ham"] > values["bayes_unsure_low"]:
        raise ConfigError(f"{pair('bayes_autolearn_ham', 'bayes_unsure_low')}: "
                          "ham is learned only from messages called ham, so the "
                          "autolearn level must not be above the unsure band")
    if values["bayes_autolearn_spam"] < values["bayes_unsure_high"]:
        raise ConfigError(f"{pair('bayes_autolearn_spam', 'bayes_unsure_high')}: "
                          "spam is learned only from messages called spam, so the "
                          "autolearn level must not be below the unsure band")
    if values["spam_tag_level"] > values["spam_quarantine_level"]:
        raise ConfigError(f"{pair('spam_tag_level', 'spam_quarantine_level')}: "
                          "a message is tagged before it is quarantined, so the "
                          "tag level must not be above the quarantine level")
    if not MIN_TOKENS <= values["bayes_max_tokens"] <= MAX_TOKENS:
        raise ConfigError(f"{one('bayes_max_tokens')}; allowed: {MIN_TOKENS} to "
                          f"{MAX_TOKENS} (the header alone takes a few hundred)")
    if values["bayes_bigrams"] > 8:
        raise ConfigError(f"{one('bayes_bigrams')}; allowed: a whole number "
                          "from 0 to 8")
    if values["bayes_expire_days"] > MAX_EXPIRE_DAYS:
        raise ConfigError(f"{one('bayes_expire_days')}; allowed: 0 (never) to "
                          f"{MAX_EXPIRE_DAYS} days")
    if values["retry_initial"] > values["retry_max"]:
        raise ConfigError(f"{pair('retry_initial', 'retry_max')}: the first "
                          "retry pause must not be longer than the longest one")


def _derive(values: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(values["data_dir"]).expanduser()
    values["data_dir"] = str(data_dir)
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{data_dir / 'portcullis.db'}"
    if not values["hostname"]:
        import socket

        values["hostname"] = socket.gethostname() or "localhost"
    if values["workers"] == 0:
        values["workers"] = os.cpu_count() or 1
    return values


def find_config_file(environ: dict[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    named = environ.get("PORTCULLIS_CONFIG")
    if named:
        return Path(named)
    for candidate in (CHECKOUT_CONFIG, APPLIANCE_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load(
    path: Path | str | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Read defaults, then the config file, then PORTCULLIS_* variables.

    Raises ConfigError naming the key, the file and what is allowed.
    """
    environ = os.environ if environ is None else environ
    path = Path(path) if path else find_config_file(environ)
    values = {key.name: key.parse(key.default) for key in SCHEMA}
    sources = {key.name: "the defaults" for key in SCHEMA}

    if path is not None:
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        # A [portcullis] table or top-level keys both work.
        document = document.get("portcullis", document)
        for name, raw in document.items():
            values[name] = _parse_one(name, raw, str(path))
            sources[name] = str(path)

    for env_name, raw in environ.items():
        if not env_name.startswith("PORTCULLIS_") or env_name == "PORTCULLIS_CONFIG":
            continue
        name = env_name[len("PORTCULLIS_"):].lower()
        values[name] = _parse_one(name, raw, f"environment variable {env_name}")
        sources[name] = f"environment variable {env_name}"

    for name, raw in (overrides or {}).items():
        values[name] = _parse_one(name, raw, "overrides")
        sources[name] = "overrides"

    _check_together(values, sources)
    return Settings(_derive(values), str(path) if path else "defaults")


def describe() -> str:
    """The keys as a Markdown table, for the README and `portcullis config`."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key in SCHEMA:
        default = key.default
        if isinstance(default, tuple):
            default = ", ".join(default)
        # A "|" in a cell would end it: Markdown tables take it escaped.
        meaning = key.help.replace("|", "\\|")
        lines.append(f"| `{key.name}` | `{default}` | {meaning} |")
    return "\n".join(lines)
