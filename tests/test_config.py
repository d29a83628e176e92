"""The settings schema: defaults, file, environment, and clear errors."""

import pytest

from core import config


def test_defaults_load_without_a_file():
    settings = config.load(path=None, environ={"PORTCULLIS_CONFIG": ""})
    assert settings.max_message_size == 10 * 1024 * 1024
    assert settings.smtp_listen_in == ("127.0.0.1", 2525)


def test_file_then_environment(tmp_path):
    conf = tmp_path / "portcullis.conf"
    conf.write_text('relay_domains = ["example.com", "example.org"]\nworkers = 3\n')
    settings = config.load(conf, environ={"PORTCULLIS_WORKERS": "5"})
    assert settings.relay_domains == ("example.com", "example.org")
    assert settings.workers == 5


def test_bad_value_names_key_file_and_allowed(tmp_path):
    conf = tmp_path / "portcullis.conf"
    conf.write_text('bare_lf = "sometimes"\n')
    with pytest.raises(config.ConfigError) as err:
        config.load(conf, environ={})
    text = str(err.value)
    assert "bare_lf" in text and str(conf) in text and "normalise" in text


def test_unknown_key_is_refused(tmp_path):
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.load(None, environ={"PORTCULLIS_NO_SUCH_KEY": "1"})


@pytest.mark.parametrize("text,key", [
    ("greet_pause = -1", "greet_pause"),
    ('clamd = "tcp:foo"', "clamd"),
    ("bayes_bigrams = 20", "bayes_bigrams"),
    ("bayes_unsure_low = 0.95", "bayes_unsure_low"),
    ("smtp_timeout = 0", "smtp_timeout"),
    ("web_workers = 0", "web_workers"),
])
def test_values_out_of_range_are_refused(tmp_path, text, key):
    conf = tmp_path / "portcullis.conf"
    conf.write_text(text + "\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(conf, environ={})
    assert key in str(err.value) and str(conf) in str(err.value)


@pytest.mark.parametrize("name,value", [
    # Numbers that compare false with everything or make no sense.
    ("spam_quarantine_level", "nan"),
    ("spam_tag_level", "inf"),
    ("dns_timeout", "nan"),
    ("bayes_reload_seconds", "-3"),
    ("bayes_autolearn_spam", "1.5"),
    # Names that are no names.
    ("hostname", "mx.example.com\r\nX-Injected: yes"),
    ("hostname", "mx example com"),
    ("relay_domains", '["example.com"]'),
    ("relay_domains", '"example.com"'),
    ("relay_domains", "example.com;"),
    ("clamd", "tcp://127.0.0.1:3310"),
])
def test_values_that_make_no_sense_are_refused_naming_the_variable(name, value):
    variable = f"PORTCULLIS_{name.upper()}"
    with pytest.raises(config.ConfigError) as err:
        config.load(None, environ={variable: value})
    assert name in str(err.value) and variable in str(err.value)


@pytest.mark.parametrize("environ,names", [
    ({"PORTCULLIS_BAYES_AUTOLEARN_SPAM": "0.1"},
     ("bayes_autolearn_spam", "bayes_unsure_high")),
    ({"PORTCULLIS_BAYES_AUTOLEARN_HAM": "0.9"},
     ("bayes_autolearn_ham", "bayes_unsure_low")),
    ({"PORTCULLIS_BAYES_EXPIRE_DAYS": "99999999"}, ("bayes_expire_days",)),
    ({"PORTCULLIS_BAYES_BIGRAMS": "9"}, ("bayes_bigrams",)),
    ({"PORTCULLIS_BAYES_MAX_TOKENS": "0"}, ("bayes_max_tokens",)),
    ({"PORTCULLIS_SPAM_TAG_LEVEL": "8"}, ("spam_tag_level",
                                          "spam_quarantine_level")),
])
def test_checks_across_keys_name_where_each_value_came_from(tmp_path, environ,
                                                            names):
    conf = tmp_path / "portcullis.conf"
    conf.write_text("bayes_unsure_high = 0.9\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(conf, environ=environ)
    text = str(err.value)
    assert all(name in text for name in names)
    # The value came from the environment: that is where to look.
    assert next(iter(environ)) in text
    if "bayes_unsure_high" in names:
        assert str(conf) in text
    else:
        assert str(conf) not in text


def test_ordinary_names_pass():
    settings = config.load(None, environ={
        "PORTCULLIS_HOSTNAME": "mx1.example.com",
        "PORTCULLIS_RELAY_DOMAINS": "*.example.com,example.org,xn--bcher-kva.de",
        "PORTCULLIS_CLAMD": "127.0.0.1:3310"})
    assert settings.hostname == "mx1.example.com"
    assert settings.relay_domains == ("*.example.com", "example.org",
                                      "xn--bcher-kva.de")
