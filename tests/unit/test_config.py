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
