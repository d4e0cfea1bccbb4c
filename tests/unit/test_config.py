"""chatgate.config: the shipped tap-config.ini and the one-line errors."""

from __future__ import annotations

import configparser
import dataclasses
import os

import pytest

from chatgate.config import ConfigError, Settings, load, parse

SHIPPED = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tap-config.ini")


def test_shipped_file_holds_the_defaults():
    settings = load(SHIPPED)
    assert settings.base_dir == os.path.dirname(os.path.abspath(SHIPPED))
    assert dataclasses.replace(settings, base_dir=".") == Settings()


def test_shipped_file_lists_every_key():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(SHIPPED, encoding="utf-8")
    listed = {section: set(parser[section]) for section in parser.sections()}
    defaults = Settings()
    expected = {
        f.name: {k.name for k in dataclasses.fields(getattr(defaults, f.name))}
        for f in dataclasses.fields(Settings)
        if f.name != "base_dir"
    }
    assert listed == expected


def test_empty_file_is_all_defaults():
    assert parse("") == Settings()


def test_relative_paths_resolve_against_the_file(tmp_path):
    (tmp_path / "c.ini").write_text("[tls]\ncertificate = certs/x.crt\n")
    settings = load(str(tmp_path / "c.ini"))
    assert settings.path(settings.tls.certificate) == str(tmp_path / "certs" / "x.crt")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[xmpp]\nport = abc\n", "[xmpp] port"),
        ("[xmpp]\nport = 70000\n", "[xmpp] port"),
        ("[xmpp]\nextra_ports = 5222, x\n", "[xmpp] extra_ports"),
        ("[xmpp]\nextra_ports = 5291\n", "[xmpp] extra_ports"),
        ("[xmpp]\nprot = 5222\n", "[xmpp] prot"),
        ("[xmmp]\nport = 5222\n", "[xmmp]"),
        ("[xmpp]\nrequire_encryption = maybe\n", "[xmpp] require_encryption"),
        ("[xmpp]\nping_interval = 60\nping_timeout = 60\n", "[xmpp] ping_timeout"),
        ("[xmpp]\nping_timeout = -1\n", "[xmpp] ping_timeout"),
        ("[xmpp]\ninterfaces = 0.0.0.0, 300.1.2.3\n", "[xmpp] interfaces"),
        ("[xmpp]\ninterfaces =\n", "[xmpp] interfaces"),
        ("[storage]\nbackend = mysql\n", "[storage] backend"),
        ("[storage]\npath =\n", "[storage] path"),
        ("[auth]\nscram_iterations = 0\n", "[auth] scram_iterations"),
        ("[limits]\nmax_stanza_size_preauth = 999999\n", "[limits] max_stanza_size_preauth"),
        ("[demo]\ncreate = yes please\n", "[demo] create"),
        ("[archive]\nbackend = mysql\n", "[archive] backend"),
        ("[archive]\noffline_backend = files\n", "[archive] offline_backend"),
        ("[archive]\ncommit_interval = -1\n", "[archive] commit_interval"),
        ("[archive]\ncommit_interval = 5\n", "[archive] commit_interval"),
        ("[archive]\nconversation_gap = soon\n", "[archive] conversation_gap"),
        ("[archive]\nretention_days = 0\n", "[archive] retention_days"),
        ("[archive]\nretention_days = forever\n", "[archive] retention_days"),
        ("[archive]\noffline_quota = -3\n", "[archive] offline_quota"),
        ("[storage]\nredis_port = 0\n", "[storage] redis_port"),
        ("[storage]\nredis_db = -1\n", "[storage] redis_db"),
        ("[storage]\nredis_tls = maybe\n", "[storage] redis_tls"),
        ("[storage]\nredis_prefix =\n", "[storage] redis_prefix"),
        ("[http]\nport = 0\n", "[http] port"),
        ("[http]\nport = 5291\n", "[http] port"),
        ("[http]\ninterfaces = localhost\n", "[http] interfaces"),
        ("[http]\ntls = sometimes\n", "[http] tls"),
        ("[http]\nbosh_path = http-bind\n", "[http] bosh_path"),
        ("[http]\nbosh_path = /http-bind/\n", "[http] bosh_path"),
        ("[http]\nbosh_path = /a/../b\n", "[http] bosh_path"),
        ("[http]\nbosh_path = /a b\n", "[http] bosh_path"),
        ("[http]\ncors_origins = https://mail.example.com/inbox\n", "[http] cors_origins"),
        ("[http]\ncors_origins = mail.example.com\n", "[http] cors_origins"),
        ("[http]\nbosh_hold = 0\n", "[http] bosh_hold"),
        ("[http]\nbosh_hold = 2\n", "[http] bosh_requests"),
        ("[http]\nbosh_requests = 1\n", "[http] bosh_requests"),
        ("[http]\nbosh_max_wait = -5\n", "[http] bosh_max_wait"),
        ("[http]\nbosh_inactivity = 1.5\n", "[http] bosh_inactivity"),
        ("[http]\nbosh_polling = -1\n", "[http] bosh_polling"),
        ("[http]\nbosh_polling = 60\n", "[http] bosh_polling"),
        ("[http]\nbosh_max_pause = soon\n", "[http] bosh_max_pause"),
        ("[http]\nbosh_max_body_size = 100\n", "[http] bosh_max_body_size"),
        ("[http]\ntrusted_proxies = proxy.example.net\n", "[http] trusted_proxies"),
        ("[http]\ntrusted_proxies = 127.0.0.1, 10.0.0.1/8\n", "[http] trusted_proxies"),
        ("[http]\ntrusted_proxies = 2001:db8::/129\n", "[http] trusted_proxies"),
        ("[webmail]\ntoken_max_age = 0\n", "[webmail] token_max_age"),
        ("[webmail]\ntoken_max_age = a day\n", "[webmail] token_max_age"),
        ("[webmail]\ntoken_max_age = 60\n", "[webmail] token_max_age"),
    ],
)
def test_bad_value_is_one_line_naming_section_and_key(text, names):
    with pytest.raises(ConfigError) as caught:
        parse(text)
    message = str(caught.value)
    assert message.startswith(names)
    assert "\n" not in message


def test_bad_address_is_named():
    with pytest.raises(ConfigError, match=r"300\.1\.2\.3"):
        parse("[xmpp]\ninterfaces = 300.1.2.3\n")


def test_not_ini_at_all():
    with pytest.raises(ConfigError) as caught:
        parse("port = 5291\n")
    assert "\n" not in str(caught.value)


def test_unreadable_file_names_it(tmp_path):
    missing = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigError, match=r"nope\.ini: cannot read"):
        load(missing)


def test_http_section():
    settings = parse(
        "[http]\ninterfaces = 127.0.0.1, ::1\nport = 8080\ntls = true\nbosh_path = /chat/http-bind\n"
        "cors_origins = https://Mail.example.com, http://127.0.0.1:8000, https://[::1]:8443\n"
        "bosh_hold = 2\nbosh_requests = 3\nbosh_max_wait = 30\nbosh_inactivity = 20\nbosh_polling = 0\n"
        "bosh_max_pause = 0\nbosh_max_body_size = 65536\n"
    )
    h = settings.http
    assert (h.interfaces, h.port, h.tls, h.bosh_path) == (("127.0.0.1", "::1"), 8080, True, "/chat/http-bind")
    assert h.cors_origins == ("https://mail.example.com", "http://127.0.0.1:8000", "https://[::1]:8443")
    assert (h.bosh_hold, h.bosh_requests, h.bosh_max_wait, h.bosh_inactivity) == (2, 3, 30, 20)
    assert (h.bosh_polling, h.bosh_max_pause, h.bosh_max_body_size) == (0, 0, 65536)
    assert parse("[http]\ncors_origins = *\n").http.cors_origins == ("*",)


def test_trusted_proxies_are_addresses_and_networks():
    assert Settings().http.trusted_proxies == ()
    proxies = parse("[http]\ntrusted_proxies = 127.0.0.1, ::1, 10.0.0.0/8, 2001:db8::/32\n").http.trusted_proxies
    assert [str(p) for p in proxies] == ["127.0.0.1/32", "::1/128", "10.0.0.0/8", "2001:db8::/32"]
    with pytest.raises(ConfigError, match=r"^\[http\] trusted_proxies = .*10\.0\.0\.1/8 has host bits set$"):
        parse("[http]\ntrusted_proxies = 127.0.0.1, 10.0.0.1/8\n")


def test_archive_section_and_redis_keys():
    settings = parse(
        "[archive]\nbackend = redis\noffline_backend = memory\ncommit_interval = 0.05\n"
        "conversation_gap = 600\nretention_days = 365\noffline_quota = 50\n"
        "[storage]\nredis_host = cache.internal\nredis_port = 6380\nredis_db = 2\nredis_password = s3cret\n"
        "redis_tls = true\nredis_tls_ca = ca.pem\nredis_prefix = chat\n"
    )
    a, s = settings.archive, settings.storage
    assert (a.backend, a.offline_backend, a.commit_interval) == ("redis", "memory", 0.05)
    assert (a.conversation_gap, a.retention_days, a.offline_quota) == (600.0, 365, 50)
    assert (s.redis_host, s.redis_port, s.redis_db, s.redis_password) == ("cache.internal", 6380, 2, "s3cret")
    assert (s.redis_tls, s.redis_tls_ca, s.redis_prefix) == (True, "ca.pem", "chat")
    defaults = parse("").archive
    assert (defaults.backend, defaults.conversation_gap, defaults.retention_days) == ("sqlite", 1800.0, None)
    assert parse("[archive]\nretention_days =\n").archive.retention_days is None
