"""The portcullis command, run as a real subprocess against a tmp data dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from core import config, db, tracking, users
from core.models import AdminUser, QuarantineItem
from core.spool import Spool
from tests.test_web import seed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, conf=None, stdin="", env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    clean.update(env or {})
    command = [sys.executable, "-m", "core.cli"]
    if conf is not None:
        command += ["--config", str(conf)]
    return subprocess.run(command + list(args), cwd=REPO, env=clean, input=stdin,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "portcullis.conf"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


@pytest.fixture
def ready(conf, tmp_path):
    """An initialised data dir with the database bound in this process too."""
    password_file = tmp_path / "pw"
    password_file.write_text("first admin password\n")
    assert run("init", "--password-file", str(password_file), conf=conf).returncode == 0
    settings = config.load(conf, environ={})
    db.open_database(settings.database_url)
    yield settings
    tracking.flush()


def _open(conf):
    settings = config.load(conf, environ={})
    db.open_database(settings.database_url)
    return settings


def test_init_generates_a_password_shown_once(conf, tmp_path):
    first = run("init", conf=conf)
    assert first.returncode == 0, first.stderr
    found = re.findall(r"Password \(shown only now, write it down\): (\S+)",
                       first.stdout)
    assert len(found) == 1
    password = found[0]

    again = run("init", conf=conf)
    assert again.returncode == 0
    assert password not in again.stdout and "Password" not in again.stdout
    assert "Already set up" in again.stdout

    _open(conf)
    assert users.authenticate("admin", password) is not None
    for guess in ("admin", "password", "portcullis", ""):
        assert users.authenticate("admin", guess) is None
    raw = (tmp_path / "data" / "portcullis.db").read_bytes()
    assert password.encode() not in raw
    key = tmp_path / "data" / "secret_key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_init_takes_the_password_from_a_file(conf, tmp_path):
    password_file = tmp_path / "pw"
    password_file.write_text("correct horse battery staple\n")
    result = run("init", "--admin", "ops", "--password-file", str(password_file),
                 conf=conf)
    assert result.returncode == 0, result.stderr
    assert "correct horse" not in result.stdout
    _open(conf)
    assert users.authenticate("ops", "correct horse battery staple") is not None
    assert [u.username for u in AdminUser.select()] == ["ops"]


def test_init_if_needed_is_quiet_the_second_time(conf):
    assert run("init", "--if-needed", conf=conf).returncode == 0
    second = run("init", "--if-needed", conf=conf)
    assert second.returncode == 0 and second.stdout == ""


@pytest.mark.parametrize("content, words", [
    ("short\n", "at least 10 characters"),
    ("", "is empty"),
])
def test_init_refuses_a_bad_password_file(conf, tmp_path, content, words):
    password_file = tmp_path / "pw"
    password_file.write_text(content)
    result = run("init", "--password-file", str(password_file), conf=conf)
    assert result.returncode == 2
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text('web_workers = "many"\n')
    result = run("config", conf=bad)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "web_workers" in lines[0] and "a whole number" in lines[0]


def test_missing_config_file_says_so(tmp_path):
    result = run("track", conf=tmp_path / "absent.conf")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_bad_environment_value_is_a_config_error(conf):
    result = run("config", conf=conf, env={"PORTCULLIS_LOG_LEVEL": "loud"})
    assert result.returncode == 2
    assert "PORTCULLIS_LOG_LEVEL" in result.stderr


def test_config_prints_settings_and_the_schema(conf):
    result = run("config", conf=conf, env={"PORTCULLIS_SECRET_KEY": "s3cr3t-value"})
    assert result.returncode == 0
    assert 'web_listen = "127.0.0.1:8025"' in result.stdout
    assert "| `data_dir` |" in result.stdout
    assert "s3cr3t-value" not in result.stdout


def test_commands_before_init_say_to_run_init(conf):
    result = run("track", conf=conf)
    assert result.returncode == 2
    assert "run 'portcullis init'" in result.stderr


def test_unknown_subcommand_is_exit_2(conf):
    result = run("launch", conf=conf)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_track_finds_messages(conf, ready):
    spool = Spool(ready.data_dir)
    qid = seed(spool, sender="carol@example.net", subject="Budget 2026")
    seed(spool, sender="dave@example.net")

    result = run("track", "--sender", "carol", "--json", conf=conf)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total"] == 1
    assert data["messages"][0]["qid"] == qid
    assert data["messages"][0]["recipients"][0]["status"] == "delivered"

    table = run("track", "--qid", qid, conf=conf)
    assert qid in table.stdout and "Budget 2026" in table.stdout


def test_track_bad_date_is_exit_2(conf, ready):
    result = run("track", "--since", "yesterday-ish", conf=conf)
    assert result.returncode == 2
    assert "use 2026-01-31" in result.stderr


def test_quarantine_list_release_delete(conf, ready):
    spool = Spool(ready.data_dir)
    kept = seed(spool, verdict="spam", quarantine="spam", subject="maybe ham")
    dropped = seed(spool, verdict="virus", quarantine="virus", subject="eicar")
    ids = {i.message.qid: i.id for i in QuarantineItem.select()}

    listing = run("quarantine", "list", "--json", conf=conf)
    assert {i["qid"] for i in json.loads(listing.stdout)["items"]} == {kept, dropped}

    released = run("quarantine", "release", str(ids[kept]), conf=conf)
    assert released.returncode == 0, released.stderr
    assert spool.list("deliver") == [kept]

    deleted = run("quarantine", "delete", str(ids[dropped]), conf=conf)
    assert deleted.returncode == 0, deleted.stderr
    assert not (spool.quarantine_dir / dropped).exists()

    again = run("quarantine", "release", str(ids[kept]), "999", conf=conf)
    assert again.returncode == 2
    assert "already released by cli:" in again.stderr
    assert "no quarantine item 999" in again.stderr


def test_user_add_passwd_token(conf, ready, tmp_path):
    password_file = tmp_path / "pw2"
    password_file.write_text("second admin password\n")
    added = run("user", "add", "ops", "--password-file", str(password_file),
                conf=conf)
    assert added.returncode == 0, added.stderr
    duplicate = run("user", "add", "ops", "--password-file", str(password_file),
                    conf=conf)
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr

    changed = run("user", "passwd", "ops", conf=conf)  # no tty: generated
    assert changed.returncode == 0
    new = re.search(r"shown only now, write it down\): (\S+)", changed.stdout)[1]
    assert users.authenticate("ops", new) is not None
    assert users.authenticate("ops", "second admin password") is None

    made = run("user", "token", "ops", conf=conf)
    token = re.search(r"\(shown only now\): (\S+)", made.stdout)[1]
    assert users.token_user(token).username == "ops"

    nobody = run("user", "passwd", "ghost", conf=conf)
    assert nobody.returncode == 2 and "there is no user 'ghost'" in nobody.stderr


def test_bayes_train_wants_directories(conf, ready, tmp_path):
    result = run("bayes", "train", "--ham", str(tmp_path / "nope"), conf=conf)
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr

    neither = run("bayes", "train", conf=conf)
    assert neither.returncode == 2
    assert "--ham DIR" in neither.stderr


def _messages(folder, words, count):
    folder.mkdir()
    for number in range(count):
        (folder / f"{number}.eml").write_bytes(
            f"From: someone{number}@example.net\r\nSubject: {words} {number}\r\n"
            f"\r\n{words} {words} number {number}\r\n".encode())
    return folder


def test_bayes_train_stats_dump_restore(conf, ready, tmp_path):
    ham = _messages(tmp_path / "ham", "meeting agenda minutes project", 3)
    spam = _messages(tmp_path / "spam", "cheap pills casino winner", 2)

    trained = run("bayes", "train", "--ham", str(ham), "--spam", str(spam),
                  "--quiet", conf=conf)
    assert trained.returncode == 0, trained.stderr
    stats = json.loads(run("bayes", "stats", "--json", conf=conf).stdout)
    assert stats["ham_messages"] == 3 and stats["spam_messages"] == 2

    dump = tmp_path / "bayes.dump"
    assert run("bayes", "dump", str(dump), conf=conf).returncode == 0
    assert run("bayes", "train", "--spam", str(ham), "--quiet",
               conf=conf).returncode == 0
    restored = run("bayes", "restore", str(dump), conf=conf)
    assert restored.returncode == 0, restored.stderr
    stats = json.loads(run("bayes", "stats", "--json", conf=conf).stdout)
    assert stats["ham_messages"] == 3 and stats["spam_messages"] == 2

    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump")
    refused = run("bayes", "restore", str(junk), conf=conf)
    assert refused.returncode == 2
    assert "cannot restore" in refused.stderr


def test_unusable_data_dir_is_one_line_not_a_traceback(tmp_path):
    conf = tmp_path / "portcullis.conf"
    conf.write_text('data_dir = "/dev/null/data"\n')
    result = run("init", conf=conf)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "/dev/null/data" in result.stderr


def test_policy_checks_are_switched_on_and_listed_from_the_cli(ready, conf):
    """SPF, DNSBL and the lists live in the database; the CLI edits them."""
    from core.policy import store

    assert run("policy", "set", "spf.enabled", "true", conf=conf).returncode == 0
    added = run("policy", "add", "block", "sender", "*.spam.example", conf=conf)
    assert added.returncode == 0, added.stderr
    assert store.load()["spf.enabled"] is True
    empty = run("policy", "list", "welcome", conf=conf)
    assert empty.returncode == 0 and "no entries in welcome" in empty.stdout
    listed = run("policy", "list", conf=conf)
    assert "*.spam.example" in listed.stdout
    shown = run("policy", "show", conf=conf)
    assert "spf.enabled = true  (changed)" in shown.stdout


@pytest.mark.parametrize("args,words", [
    (("policy", "set", "spf.enabled", "maybe"), "not a bool"),
    (("policy", "set", "no.such.key", "1"), "policy show"),
    (("policy", "remove", "99"), "policy list"),
    (("policy", "add", "block", "sender", "/[unclosed/"), "regular expression"),
])
def test_policy_mistakes_say_what_to_do(ready, conf, args, words):
    done = run(*args, conf=conf)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
