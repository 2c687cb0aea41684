"""Fast tests of the pure core: addresses, config, the completeness estimate."""

from __future__ import annotations

import random

import pytest

from ntpguard import addr, config, configfile
from ntpguard.errors import ConfigError, UsageError
from ntpguard.estimate import chao2


@pytest.mark.parametrize("text,want", [
    ("2604:a880:0800:0010:0000:0000:0970:a001", "2604:a880:800:10::970:a001"),
    ("2001:0DB8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"),
    ("2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"),
    (" 192.0.2.1 ", "192.0.2.1"),
])
def test_canonical_is_rfc5952(text, want):
    assert addr.canonical(text) == want


@pytest.mark.parametrize("text", ["", "2001:db8::g", "1.2.3", "2001:db8::/64", "fe80::1%eth0x y"])
def test_bad_addresses_are_usage_errors(text):
    with pytest.raises(UsageError):
        addr.canonical(text)


@pytest.mark.parametrize("text,why", [
    ("::1", "loopback"), ("fe80::1", "link-local"), ("ff02::1", "multicast"),
    ("::", "unspecified"), ("fd00::1", "unique local (ULA)"), ("2001:db8::1", "documentation"),
    ("10.1.2.3", "private"), ("127.0.0.1", "loopback"),
])
def test_nonglobal_reasons(text, why):
    assert addr.nonglobal_reason(addr.parse_address(text)) == why


@pytest.mark.parametrize("text", ["2604:a880:400:d0::9:b001", "8.8.8.8", "2a03:b0c0:3:d0::18:b001"])
def test_global_addresses_pass(text):
    assert addr.nonglobal_reason(addr.parse_address(text)) is None


def test_prefix_limits():
    assert str(addr.parse_prefix("2604:a880:800:10::/64")) == "2604:a880:800:10::/64"
    with pytest.raises(UsageError, match="broader than the limit /32"):
        addr.parse_prefix("2604::/16")
    with pytest.raises(UsageError, match="broader than the limit /16"):
        addr.parse_prefix("10.0.0.0/8")
    with pytest.raises(UsageError, match="host bits"):
        addr.parse_prefix("2604:a880:800:10::1/64")


def test_config_defaults_without_file(tmp_path, monkeypatch):
    monkeypatch.delenv("NTPGUARD_CONFIG", raising=False)
    monkeypatch.setattr(configfile, "DEFAULT_PATH", str(tmp_path / "absent.toml"))
    cfg = config.load()
    assert cfg.pool.names[2] == "2.debian.pool.ntp.org"
    assert cfg.pool.record_types == ("AAAA", "A")
    assert cfg.general.state_dir == "/var/lib/ntpguard"


def test_config_values_are_typed_and_normalised(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[pool]\nnames = ["2.DE.pool.ntp.org."]\nnameservers = ["2001:0db8::0035"]\n'
                 'interval = 3\nrecord_types = ["aaaa"]\n')
    cfg = config.load(str(f))
    assert cfg.pool.names == ("2.de.pool.ntp.org",)
    assert cfg.pool.nameservers == ("2001:db8::35",)
    assert cfg.pool.interval == 3.0 and isinstance(cfg.pool.interval, float)
    assert cfg.pool.record_types == ("AAAA",)


@pytest.mark.parametrize("text,key,problem", [
    ("[pool]\nrounds = 'x'\n", "pool.rounds", "must be an integer"),
    ("[pool]\nrounds = true\n", "pool.rounds", "must be an integer"),
    ("[pool]\ncolour = 1\n", "pool.colour", "unknown key"),
    ("[nope]\n", "nope", "unknown section"),
    ("[pool\n", "syntax", ""),
    ("pool = 3\n", "pool", "must be a table"),
    ("[pool]\nnameservers = ['ns.example']\n", "pool.nameservers", "not an IP address"),
    ("[pool]\nport = 70000\n", "pool.port", "port number"),
    ("[pool]\nnames = []\n", "pool.names", "at least one"),
    ("[pool]\nnames = ['bad name']\n", "pool.names", "not a DNS name"),
    ("[pool]\nrecord_types = ['MX']\n", "pool.record_types", "A"),
    ("[pool]\nallow_nonglobal = 'yes'\n", "pool.allow_nonglobal", "true or false"),
])
def test_bad_config_names_file_and_key(tmp_path, text, key, problem):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        config.load(str(f))
    assert info.value.key == key
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{f}: {key}: ")


def test_config_not_utf8(tmp_path):
    f = tmp_path / "latin1.toml"
    f.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        config.load(str(f))


def test_chao2_without_unseen_evidence_is_observed():
    assert chao2(10, [3, 3, 4, 5]).estimated == 4
    assert chao2(1, [1, 1, 1, 1]).estimated == 4
    assert chao2(0, []).observed == 0


def test_chao2_beats_the_raw_count_on_simulated_pools():
    """Sampling 4 of N per answer: while much is unseen, the estimate is closer to N than the
    raw count; once everything was seen many times, it stays within a server of N."""
    rng = random.Random(7)
    for size in (30, 80, 200):
        for answers in (10, 20, 50):
            err_seen = err_est = 0.0
            for _ in range(100):
                seen: dict[int, int] = {}
                for _ in range(answers):
                    for s in rng.sample(range(size), 4):
                        seen[s] = seen.get(s, 0) + 1
                est = chao2(answers, seen.values())
                assert est.observed <= est.estimated
                err_seen += abs(est.observed - size) / 100
                err_est += abs(est.estimated - size) / 100
            if err_seen > 0.1 * size:
                assert err_est < err_seen, (size, answers, err_est, err_seen)
            else:
                assert err_est < max(1.0, err_seen * 2), (size, answers, err_est, err_seen)


def _program(path, text: str) -> None:
    path.write_text(f"#!/bin/sh\necho '{text}'\n")
    path.chmod(0o755)


def test_which_finds_programs_as_shutil_does(tmp_path, monkeypatch):
    import shutil

    from ntpguard import commands

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _program(tmp_path / "b" / "tool", "b")
    (tmp_path / "a" / "tool").write_text("not executable")
    (tmp_path / "a" / "dir").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    for name in ("tool", "dir", "missing"):
        assert commands.which(name) == shutil.which(name)
    assert commands.which("tool") == str(tmp_path / "b" / "tool")


@pytest.mark.parametrize("target,says,legacy", [
    # Debian's alternatives link decides, without running anything: these print the opposite.
    ("xtables-legacy-multi", "iptables v1.8.9 (nf_tables)", True),
    ("xtables-nft-multi", "iptables v1.8.9 (legacy)", False),
    # Elsewhere the program is asked.
    ("iptables-wrapper", "iptables v1.8.9 (legacy)", True),
    ("iptables-wrapper", "iptables v1.8.9 (nf_tables)", False),
])
def test_iptables_variant(tmp_path, monkeypatch, target, says, legacy):
    from ntpguard import backends

    _program(tmp_path / target, says)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "iptables").symlink_to(tmp_path / target)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert backends.iptables_is_legacy() is legacy
    assert backends.auto_name() == ("iptables" if legacy else "nft")


def test_iptables_variant_switched_in_a_running_process(tmp_path, monkeypatch):
    """The watcher runs for weeks: `update-alternatives --set iptables ...` meanwhile is seen
    at its next question, and a program asked once is not asked again."""
    from ntpguard import backends

    for target in ("xtables-legacy-multi", "xtables-nft-multi"):
        _program(tmp_path / target, "iptables v1.8.9 (legacy)")
    calls = tmp_path / "calls"
    (tmp_path / "wrapper").write_text(f"#!/bin/sh\necho x >> {calls}\n"
                                      "echo 'iptables v1.8.9 (legacy)'\n")
    (tmp_path / "wrapper").chmod(0o755)
    (tmp_path / "bin").mkdir()
    link = tmp_path / "bin" / "iptables"
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    answers = []
    for target in ("xtables-nft-multi", "xtables-legacy-multi", "wrapper", "wrapper",
                   "xtables-nft-multi"):
        if link.is_symlink():
            link.unlink()
        link.symlink_to(tmp_path / target)
        answers.append(backends.iptables_is_legacy())
    assert answers == [False, True, True, True, False]
    assert calls.read_text() == "x\n"
