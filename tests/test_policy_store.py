"""Policy settings from the database (defaults when no row), refresh, the
statistics counters, and the log lines every verdict writes."""

from __future__ import annotations

import json
import re
import time

import pytest

from core.models import PolicyCounter, PolicySetting
from core.policy import store
from core.policy.store import PolicyError
from tests.support.policyharness import gateway  # noqa: F401


def test_defaults_without_rows(gateway):
    config = store.load()
    assert config["spf.enabled"] is False
    assert config["greylist.delay"] == 180.0
    assert config["greylist.retry_window"] == 2 * 86400
    assert config["greylist.lifetime"] == 36 * 86400


def test_every_setting_is_described():
    assert set(store.HELP) == set(store.DEFAULTS)


def test_list_entries_are_edited(gateway):
    entry = store.add_list_entry("block", "sender", "x@example.org", "spam run")
    assert [e.pattern for e in store.list_entries("block")] == ["x@example.org"]
    assert store.remove_list_entry(entry.id) and not store.list_entries()


def test_settings_are_checked():
    assert store.coerce("spf.enabled", "on") is True
    assert store.coerce("greylist.delay", "300") == 300.0
    assert store.coerce("dnsbl.zones", "a.example, b.example*2") == [
        "a.example", "b.example*2"]
    for key, value in (("spf.enabled", "maybe"), ("greylist.delay", "soon"),
                       ("spf.permerror", "explode"), ("nosuch.key", 1),
                       ("greylist.delay", -5), ("callout.unknown_code", 554)):
        with pytest.raises(PolicyError):
            store.coerce(key, value)


def test_unusable_row_falls_back_to_default(gateway, caplog):
    PolicySetting.create(key="greylist.delay", value=json.dumps("soon"))
    PolicySetting.create(key="spf.enabled", value=json.dumps(True))
    config = store.load()
    assert config["greylist.delay"] == 180.0 and config["spf.enabled"] is True
    assert "greylist.delay" in caplog.text


def test_changes_apply_after_the_refresh_interval(tmp_path, dns_zone):
    from tests.support.policyharness import PolicyGateway

    gw = PolicyGateway(tmp_path, policy_refresh=0.2)
    try:
        assert _rcpt(gw) == 250
        store.set_setting("greylist.enabled", True)  # as the web admin would
        time.sleep(0.3)
        assert _rcpt(gw) == 450
    finally:
        gw.close()


def _rcpt(gw, peer="192.0.2.10"):
    client = gw.client(peer)
    try:
        client.cmd("EHLO mail.example.org")
        client.cmd("MAIL FROM:<a@example.org>")
        return client.cmd("RCPT TO:<user@example.com>")[0]
    finally:
        client.close()


def test_verdicts_are_counted_and_flushed(gateway):
    store.counters.flush()  # counts left from earlier tests go first
    PolicyCounter.delete().execute()
    gateway.set(greylist_enabled=True)
    gateway.add("block", "sender", "a@example.org")
    _rcpt(gateway)
    store.counters.flush()
    rows = {(r.check_name, r.result): r.count for r in PolicyCounter.select()}
    assert rows[("lists", "block")] == 1
    PolicyCounter.delete().execute()
    gateway.add("welcome", "sender", "a@example.org")
    _rcpt(gateway)
    _rcpt(gateway, peer="198.51.100.11")
    store.counters.flush()
    rows = {(r.check_name, r.result): r.count for r in PolicyCounter.select()}
    assert rows[("greylist", "new")] == 2 and rows[("lists", "welcome")] == 2
    # A second flush adds to the same day's row.
    _rcpt(gateway, peer="203.0.113.12")
    store.counters.flush()
    row = PolicyCounter.get(PolicyCounter.check_name == "greylist",
                            PolicyCounter.result == "new")
    assert row.count == 3


def test_log_lines_start_with_the_queue_id(gateway, caplog, dns_zone):
    dns_zone('spf-fail.logtest.example. TXT "v=spf1 -all"')
    caplog.set_level("INFO", logger="core.policy")
    gateway.set(spf_enabled=True, greylist_enabled=True)
    client = gateway.client("192.0.2.10")
    try:
        client.cmd("EHLO mail.example.org")
        client.cmd("MAIL FROM:<x@spf-fail.logtest.example>")
        assert client.cmd("RCPT TO:<user@example.com>")[0] == 550
    finally:
        client.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("core.policy")]
    spf = [line for line in lines
           if "event=spf" in line and "identity=mailfrom" in line]
    assert spf and all(re.match(r"^[0-9A-F]{12,32} event=spf ", line) for line in spf)
    assert any("result=fail" in line for line in spf)
