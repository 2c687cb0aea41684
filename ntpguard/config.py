"""TOML configuration → frozen, validated settings.

Every key has a default here; packaging/ntpguard.toml documents each one and is the README's
reference. A section is a frozen dataclass; its field types and `check` metadata are the schema,
so adding a key is adding a field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import sys
import typing
from dataclasses import field
from typing import Any, Callable, Optional, TypeVar

from ntpguard import configfile
from ntpguard.addr import canonical
from ntpguard.errors import ConfigError, UsageError
from ntpguard.records import record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Debian 11 / Python 3.9 only
    import tomli as tomllib

# A host name as a collector takes it from a log's path (rsyslog's %HOSTNAME%): no path
# separators or glob characters, nothing a shell or a metrics label would trip over.
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
S = TypeVar("S")  # a section


def _check(fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {"check": fn}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def _range(low: float, high: float, above: bool = False) -> Callable[[Any], Any]:
    """A check: a number from low (excluded with above=True) to high, and finite.

    Every number has an upper bound: values that passed a "greater than 0" check crashed or
    hung later (1e308 s overflows time.sleep, nan and inf never end a wait, 10**23 bytes
    overflow a read). Each range is documented beside its key in packaging/ntpguard.toml.
    """
    def check(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number ({value} is not)")
        if (value <= low if above else value < low) or value > high:
            lower = f"greater than {_num(low)}" if above else f"at least {_num(low)}"
            raise ValueError(f"must be {lower} and at most {_num(high)}")
        return value
    return check


def _absolute_path(empty_ok: bool) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not (value or empty_ok) or (value and not value.startswith("/")):
            raise ValueError("must be an absolute path" + (" (or empty)" if empty_ok else ""))
        return value
    return check


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number 1-65535")
    return value


def _addresses(values: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(canonical(v) for v in values)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _dns_names(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for v in values:
        name = v.strip().rstrip(".").lower()
        labels = name.split(".")
        if not name or len(name) > 253 or any(
            not lab or len(lab) > 63 or not all(c.isalnum() or c in "-_" for c in lab)
            for lab in labels
        ):
            raise ValueError(f"not a DNS name: {v!r}")
        out.append(name)
    if not out:
        raise ValueError("must name at least one pool name")
    return tuple(out)


def _record_types(values: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(v.upper() for v in values)
    bad = [v for v in out if v not in ("A", "AAAA")]
    if bad or not out:
        raise ValueError('must be a non-empty list of "A" and/or "AAAA"')
    return out


@record
class General:
    """[general]: where the state lives and how long an external command may take."""

    state_dir: str = field(default=configfile.DEFAULT_STATE_DIR,
                           metadata=_check(_absolute_path(False)))
    # Seconds any external command (nft, ipset, iptables-save/restore, ip, chronyc, systemctl)
    # may take before it is given up as hung; it runs under the state lock. A 100k-prefix nft
    # transaction takes ~0.3 s on 2 cores, a Raspberry Pi 5-10x that.
    command_timeout: float = field(default=60.0, metadata=_check(_range(0, 3600, above=True)))


def _trusted(values: tuple[str, ...]) -> tuple[str, ...]:
    out = _addresses(values)
    if len(set(out)) != len(out):
        raise ValueError("lists an address twice")
    return out


@record
class Servers:
    """[servers]: time servers the admin vouches for, in or outside the pool."""

    # Known and clean whatever the pool's DNS says: the admin's own time servers, an NTS
    # server. Only a manual mark outranks this (README, "Precedence").
    trusted: tuple[str, ...] = field(default=(), metadata=_check(_trusted))


@record
class Pool:
    """[pool]: the pool names to resolve and how (the known-server set comes from them)."""

    # Debian's default sources (/etc/ntpsec/ntp.conf, timesyncd FallbackNTP).
    names: tuple[str, ...] = field(
        default=(
            "0.debian.pool.ntp.org",
            "1.debian.pool.ntp.org",
            "2.debian.pool.ntp.org",
            "3.debian.pool.ntp.org",
        ),
        metadata=_check(_dns_names),
    )
    # Only 2.* carries AAAA today, but the pool may add it elsewhere: ask every name for both.
    record_types: tuple[str, ...] = field(default=("AAAA", "A"), metadata=_check(_record_types))
    # One answer holds at most 4 records and lives 150 s (TTL) in every cache on the way. A round
    # sooner than the TTL only reads the same cached answer back through the system resolver and
    # asks the pool's authoritative servers more often than they publish changes. 3 rounds of
    # 8 queries (4 names x A/AAAA) at 150 s apart is 24 queries per run: less than a browser
    # makes loading one page, and it still adds up to full zones over a day of hourly runs.
    rounds: int = field(default=3, metadata=_check(_range(0, 100, above=True)))
    interval: float = field(default=150.0, metadata=_check(_range(0, 3600)))
    # Empty: the system resolver (/etc/resolv.conf), which is what the time daemon sees; the
    # pool's GeoDNS answers depend on the resolver's location.
    nameservers: tuple[str, ...] = field(default=(), metadata=_check(_addresses))
    port: int = field(default=53, metadata=_check(_port))
    timeout: float = field(default=5.0, metadata=_check(_range(0, 60, above=True)))
    # Test labs serve documentation or ULA addresses; real pool servers never are.
    allow_nonglobal: bool = False


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value
    return check


def _prefix_limit(bits: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not 1 <= value <= bits:
            raise ValueError(f"must be a prefix length 1-{bits}")
        return value
    return check


def _log_group(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be 0 (kernel log) or an NFLOG group 1-65535")
    return value


@record
class Rules:
    """[rules]: what the firewall does: host or gateway, unknown servers, logging, backend."""

    # host: this machine's own NTP and inbound traffic (OUTPUT/INPUT); gateway: also FORWARD,
    # protecting a LAN routed through this box.
    mode: str = field(default="host", metadata=_check(_one_of("host", "gateway")))
    # NTP to an address that is not a known usable server: "block" is what "NTP reaches usable
    # servers only" means; "allow" only rejects harvesters and suspects; "auto" allows where
    # NTP canaries work (meeting an unknown server then costs a throwaway address, never a
    # real one, and tests that server) and blocks where they do not.
    unknown: str = field(default="auto", metadata=_check(_one_of("auto", "block", "allow")))
    # auto: nft wherever it works; iptables only where the host's iptables is legacy.
    backend: str = field(default="auto", metadata=_check(_one_of("auto", "nft", "iptables")))
    # Rate-limited log lines ("ntpguard-ntp-out: ", "ntpguard-in: ", ...) are the evidence the
    # detector reads on hosts whose firewall logs nothing. A 100-port scan within 1 s still
    # leaves burst + rate lines, well above a 15-distinct-port scan threshold.
    log: bool = True
    log_rate: int = field(default=20, metadata=_check(_range(0, 10_000, above=True)))
    log_burst: int = field(default=100, metadata=_check(_range(0, 10_000, above=True)))
    # 0: kernel log (LOG); N: NFLOG group N for ulogd2 (nft backend only).
    log_group: int = field(default=0, metadata=_check(_log_group))
    # A blocklist entry broader than this could cut the host off the internet: refused.
    max_prefix_v6: int = field(default=32, metadata=_check(_prefix_limit(128)))
    max_prefix_v4: int = field(default=16, metadata=_check(_prefix_limit(32)))


def _list_name(value: str) -> str:
    if not value or len(value) > 63 or not value[0].isalnum() or not all(
        c.islower() or c.isdigit() or c in "_.-" for c in value
    ):
        raise ValueError("must be lower-case letters, digits, '.', '_', '-' (up to 63)")
    return value


def _list_url(value: str) -> str:
    # Plain http would let anyone on the path rewrite a blocklist; file:// is for local mirrors.
    if not (value.startswith("https://") or value.startswith("file:///")):
        raise ValueError("must be an https:// (or file:///) URL")
    return value


def sha256_hex(value: str) -> str:
    """A SHA-256 pin as 64 lowercase hex digits, or empty; ValueError otherwise."""
    v = value.strip().lower()
    if v and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v)):
        raise ValueError("must be empty or 64 hex digits (a SHA-256)")
    return v


def _pubkey(value: str) -> str:
    """Empty, or a minisign public key: a malformed one is the configuration's error, found
    when it is loaded, not by the first fetch (in a timer's log, hours later)."""
    if value:
        from ntpguard import minisign  # only a configuration that names a key pays for it

        try:
            minisign.parse_pubkey(value)
        except minisign.SignatureError as exc:
            raise ValueError(str(exc)) from None
    return value


@record
class Subscription:
    """One shared list fetched by `list fetch` and `sync` ([[lists.subscriptions]])."""

    name: str = field(metadata=_check(_list_name))
    url: str = field(metadata=_check(_list_url))
    trust: str = field(default="enforce", metadata=_check(_one_of("enforce", "report")))
    sha256: str = field(default="", metadata=_check(sha256_hex))
    # A minisign public key (the base64 line of a .pub file, "RW..."): the list must come with
    # a valid signature at URL.minisig.
    pubkey: str = field(default="", metadata=_check(_pubkey))
    # A list is read only up to these (the transfer stops there), so they bound its memory:
    # ~1 KiB per entry while validating, plus the bytes. 64 MiB is `list import`'s own cap.
    max_entries: int = field(default=100_000, metadata=_check(_range(0, 1_000_000, above=True)))
    max_bytes: int = field(default=8 << 20, metadata=_check(_range(0, 64 << 20, above=True)))
    # Seconds for the whole fetch of the list and its signature: connect, headers and body.
    timeout: float = field(default=30.0, metadata=_check(_range(0, 600, above=True)))
    ca_file: str = ""
    kind: str = field(default="", metadata=_check(_one_of("", "harvester", "scanner")))


def _unique_subscriptions(values: tuple[Subscription, ...]) -> tuple[Subscription, ...]:
    seen = set()
    for sub in values:
        if sub.name in seen:
            raise ValueError(f"two subscriptions are named {sub.name!r}")
        if sub.name.startswith("builtin"):
            raise ValueError(f"{sub.name!r}: names starting with 'builtin' are for shipped lists")
        seen.add(sub.name)
    return values


@record
class Lists:
    """[lists]: the shipped lists, the limits of imported ones, the subscriptions to fetch."""

    # The 2016 harvesters and scanner prefix shipped in rules/ (harvesters.txt, scanners.txt).
    builtin: bool = True
    builtin_trust: str = field(default="enforce", metadata=_check(_one_of("enforce", "report")))
    # Empty: rules/ beside the package (source tree), else /usr/share/ntpguard/rules.
    builtin_dir: str = field(default="", metadata=_check(_absolute_path(True)))
    # Limit for imported lists (subscriptions have their own max_entries). Prefix limits are
    # [rules] max_prefix_v6/v4.
    max_entries: int = field(default=100_000, metadata=_check(_range(0, 1_000_000, above=True)))
    allow_nonglobal: bool = False
    subscriptions: tuple[Subscription, ...] = field(
        default=(), metadata=_check(_unique_subscriptions)
    )


@record
class Timeconf:
    """[timeconf]: the time daemon's drop-in that names the usable servers."""

    # auto: detect the daemon in use; none: never write.
    daemon: str = field(default="auto", metadata=_check(
        _one_of("auto", "chrony", "timesyncd", "ntpsec", "ntp", "openntpd", "none")))
    count: int = field(default=4, metadata=_check(_range(0, 64, above=True)))
    # Only servers seen in a DNS answer this recently (seconds): the pool drops dead servers.
    max_age: float = field(default=7 * 86400.0, metadata=_check(_range(0, 365 * 86400, above=True)))
    # One operator often holds many addresses: at most one server per /48 (IPv4: /24).
    spread_v6: int = field(default=48, metadata=_check(_prefix_limit(128)))
    spread_v4: int = field(default=24, metadata=_check(_prefix_limit(32)))
    # Send one SNTP query to each candidate and prefer those that answer sanely and fast.
    check: bool = False
    check_timeout: float = field(default=1.0, metadata=_check(_range(0, 60, above=True)))
    max_delay: float = field(default=0.5, metadata=_check(_range(0, 60, above=True)))
    options: str = "iburst"
    chrony_sources: str = "/etc/chrony/sources.d/ntpguard.sources"
    timesyncd_dropin: str = "/etc/systemd/timesyncd.conf.d/ntpguard.conf"
    # timesyncd FallbackNTP=; empty: leave Debian's default pool names as the fallback.
    fallback: tuple[str, ...] = ()
    # After a changed file: `chronyc reload sources` / restart systemd-timesyncd.
    reload: bool = True


def _probability(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1 (exclusive)")
    return value


def _ifnames(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        if not v or len(v) > 15 or any(c.isspace() or c in "/:" for c in v):
            raise ValueError(f"not an interface name (up to 15 characters): {v!r}")
    return values


def _networks(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_network(v.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"not an address prefix: {v!r}") from None
    return tuple(out)


@record
class Detect:
    """[detect]: scan detection, trigger attribution and harvester verdicts (ntpguard detect)."""

    # A scan: >= min_ports distinct (protocol, port) probes of one address within `window` s.
    # The 2016 harvester scans hit 100-120 ports in ~1 s; CrowdSec calls 15 ports a scan, and a
    # host's normal inbound (replies are not logged, services are few) never shows 15 ports from
    # one peer. 15 in 120 s catches the 2016 scans with 85 ports to spare and nmap's default
    # timing; a slow scan needs a larger window (memory grows with it, correctness does not).
    min_ports: int = field(default=15, metadata=_check(_range(0, 65535, above=True)))
    window: float = field(default=120.0, metadata=_check(_range(0, 86400, above=True)))
    # Count IPv6 scanner sources per /64: 2016's scan6.shodan.io hosts shared one /64.
    aggregate_sources: bool = True
    # Outbound packets this long before a scan's start are its possible triggers. 2016 lags
    # were 6-47 s; a harvester queueing its work can take minutes. Longer adds innocent
    # candidate contacts to each scan; the fitted lag distribution gives them little weight.
    lookback: float = field(default=600.0, metadata=_check(_range(0, 86400, above=True)))
    trigger_port: int = field(default=123, metadata=_check(_port))
    # Which way a packet went: IN= empty is sent by the host, OUT= empty received by it; a
    # forwarded packet names both, and the LAN side is one of these interfaces (a gateway's
    # LAN bridge, e.g. "br-lan"). Empty: learned from the log (see detect.Sides).
    lan_interfaces: tuple[str, ...] = field(default=(), metadata=_check(_ifnames))
    # The host's and LAN's prefixes: decide forwarded packets when lan_interfaces is empty,
    # and lines whose interfaces a shipper dropped. Empty: learned from the sources of the
    # packets the host sent.
    local_prefixes: tuple[str, ...] = field(default=(), metadata=_check(_networks))
    # Any outbound packet can trigger (2016: even an empty UDP packet to port 321 did).
    trigger_any_port: bool = False
    # Verdicts (the attribution model, see verdict.py): a prior share of harvesters...
    prior: float = field(default=0.05, metadata=_check(_probability))
    # ...and the posterior probability / evidence counts each status needs.
    harvester_probability: float = field(default=0.95, metadata=_check(_probability))
    harvester_min_positive: int = field(default=2, metadata=_check(_range(0, 10_000, above=True)))
    # A harvester's fitted harvest rate (the share of the addresses it sees that it reports)
    # at least this; one that fits only a lower rate is at most a suspect (see verdict.py).
    harvester_min_rate: float = field(default=0.2, metadata=_check(_range(0, 1)))
    suspect_probability: float = field(default=0.5, metadata=_check(_probability))
    clean_probability: float = field(default=0.05, metadata=_check(_probability))
    clean_min_negative: int = field(default=2, metadata=_check(_range(0, 10_000, above=True)))
    # Days of contacts and scans kept, counted back from the newest line the logs covered
    # (`sync` ages out older ones): a 50-host gateway records ~300 contacts a day, ~110k rows
    # and ~17 MB a year. Verdicts are kept forever, and so is every contact with and every
    # scan triggered by a server judged harvester or suspect: blocked, it gets no new
    # evidence. Run records and canaries expired this long ago (and named by no evidence)
    # age out too: ~35k runs and ~94k canaries a year otherwise. 0: keep everything.
    retention_days: float = field(default=90.0, metadata=_check(_range(0, 36500)))


def _log_sources(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        if v != "journal" and not v.startswith("/"):
            raise ValueError(f'{v!r}: each source is "journal" or an absolute file path')
    return values


@record
class Sync:
    """[sync]: what the cron job / timer (`ntpguard sync`) does on each run."""

    # Rounds of pool queries per sync. Run every 15 minutes (the timer's default), one round of
    # 8 queries is ~770 queries a day: full zones within days, negligible load on the pool.
    resolve_rounds: int = field(default=1, metadata=_check(_range(0, 100, above=True)))
    # Firewall logs to read: "journal" (the kernel messages in journald, with a cursor) and/or
    # file paths. Empty: journald where it runs, else /var/log/kern.log, else ulogd2's
    # /var/log/ulog/syslogemu.log.
    log_sources: tuple[str, ...] = field(default=(), metadata=_check(_log_sources))
    # Steps that touch the system; switch off to use ntpguard for detection only.
    apply_rules: bool = True
    configure_time_daemon: bool = True
    # Apply even when no clean server is known yet with rules.unknown = "block"; that stops
    # all time sync, so it is off: until detection has cleared servers, rules stay as they were.
    force_rules: bool = False


def _ifname(value: str) -> str:
    if value and (len(value) > 15 or any(c.isspace() or c in "/:" for c in value)):
        raise ValueError("must be empty or an interface name (up to 15 characters)")
    return value


def _probe_prefix(value: str) -> str:
    if not value:
        return value
    try:
        net = ipaddress.IPv6Network(value, strict=True)
    except ValueError:
        raise ValueError("must be empty or an IPv6 prefix such as 2001:db8:1:2::/64") from None
    if not 32 <= net.prefixlen <= 120:
        raise ValueError("must be a prefix /32-/120 routed to this host (usually its /64)")
    return str(net)


@record
class Probe:
    """[probe]: active confirmation from fresh source addresses (ntpguard probe)."""

    # Where probe addresses are added. Empty: the IPv6 default route's interface, and the /64
    # of a stable global address on it.
    interface: str = field(default="", metadata=_check(_ifname))
    prefix: str = field(default="", metadata=_check(_probe_prefix))
    # Servers probed per run (--suspects): each probe is a packet a harvester sees and an
    # address the host keeps for the lifetime.
    max_per_run: int = field(default=8, metadata=_check(_range(0, 256, above=True)))
    # Seconds a probe address lives (the kernel removes it). 0: detect.lookback + window.
    # Never shorter than detect.lookback: a late scan would find no address.
    lifetime: float = field(default=0.0, metadata=_check(_range(0, 7 * 86400)))
    # Seconds to wait for the server's answer (only reported; the probe counts either way).
    timeout: float = field(default=1.0, metadata=_check(_range(0, 60, above=True)))
    # `sync` probes the suspects after its verdicts (a step of its own). Off: every probe is
    # a packet to a likely harvester, which an admin may prefer to send by hand.
    in_sync: bool = False


@record
class Canary:
    """[canary]: every NTP packet leaves from a throwaway address its server alone sees."""

    # auto: wherever it can work (the nft backend, a global IPv6 /64, nat in the kernel's
    # inet family); off: NTP leaves from the host's own addresses, as without ntpguard.
    mode: str = field(default="auto", metadata=_check(_one_of("auto", "off")))
    # Where canaries are added. Empty: the IPv6 default route's interface, and the /64 of a
    # stable global address on it (as [probe]).
    interface: str = field(default="", metadata=_check(_ifname))
    prefix: str = field(default="", metadata=_check(_probe_prefix))
    # Seconds a server keeps its canary. A harvester that harvests only some of its clients
    # (they sample) meets a new "client" each rotation: a day gives a server 365 chances a
    # year at 1 address per server in use (plus those retiring).
    rotate: float = field(default=86400.0, metadata=_check(_range(60, 31_536_000)))
    # The spare canary is shared by servers that have none yet (answers the pool gave the
    # time daemon before ntpguard heard of them); it is replaced this often, so a harvest of
    # it implicates few servers.
    spare_rotate: float = field(default=3600.0, metadata=_check(_range(60, 86400)))
    # Servers given a canary of their own, most used first; the rest share the spare.
    max: int = field(default=256, metadata=_check(_range(1, 4096)))
    # The admin's trusted servers ([servers] trusted) see the host's real address; false: they
    # get canaries like pool servers.
    exempt_trusted: bool = True


def _host_name(value: str) -> str:
    if not HOST_NAME.match(value):
        raise ValueError("must be a host name: letters, digits, '.', '_', '-' (up to 253)")
    return value


def _host_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    for v in values:
        path = v[len("journal:"):] if v.startswith("journal:") else v
        if not path.startswith("/") or path.count("*") != 1 or any(c in path for c in "?["):
            raise ValueError(f"{v!r}: an absolute path with one '*' for the host's name "
                             "(optionally after journal:), no other wildcards")
    return values


@record
class CollectorHost:
    """[[collector.hosts]]: what a collector knows of one host's network (direction)."""

    name: str = field(metadata=_check(_host_name))
    # As [detect] lan_interfaces and local_prefixes, for this host's log only (a gateway's
    # LAN bridge, its site's prefixes). Empty: [detect]'s, else learned from its log.
    lan_interfaces: tuple[str, ...] = field(default=(), metadata=_check(_ifnames))
    local_prefixes: tuple[str, ...] = field(default=(), metadata=_check(_networks))


def _unique_hosts(values: tuple[CollectorHost, ...]) -> tuple[CollectorHost, ...]:
    names = [h.name for h in values]
    if len(set(names)) != len(names):
        raise ValueError("names a host twice")
    return values


@record
class Collector:
    """[collector]: judge on the pooled firewall logs other hosts forward here."""

    # One pattern per way logs arrive; its one "*" stands for the host's name: rsyslog files
    # per host (a dynaFile template with %HOSTNAME%), e.g. "/var/log/ntpguard/*/kern.log",
    # or "journal:" and systemd-journal-remote's per-host files (--split-mode=host), e.g.
    # "journal:/var/log/journal/remote/remote-*.journal". Empty: not a collector.
    hosts_from: tuple[str, ...] = field(default=(), metadata=_check(_host_patterns))
    hosts: tuple[CollectorHost, ...] = field(default=(), metadata=_check(_unique_hosts))


def _publish_statuses(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values or any(v not in ("harvester", "suspect") for v in values) \
            or len(set(values)) != len(values):
        raise ValueError('must be ["harvester"] or ["harvester", "suspect"]')
    return values


@record
class Publish:
    """[publish]: `sync` writes this host's own findings as a signed list for others."""

    # Where the list goes: a file a web server serves (PATH.minisig beside it). Empty: off.
    path: str = field(default="", metadata=_check(_absolute_path(True)))
    # The minisign secret key, unencrypted (`ntpguard list keygen`, `minisign -G -W`).
    key: str = field(default="", metadata=_check(_absolute_path(True)))
    # json carries each entry's evidence and first/last seen; text is one line per entry.
    format: str = field(default="json", metadata=_check(_one_of("json", "text")))
    # Which effective statuses (from local evidence only) are published, as kind harvester.
    statuses: tuple[str, ...] = field(default=("harvester",),
                                      metadata=_check(_publish_statuses))
    # Also the scanner prefixes seen scanning after a harvester.
    scanners: bool = True


def _textfile(value: str) -> str:
    if value and (not value.startswith("/") or not value.endswith(".prom")):
        raise ValueError("must be empty or an absolute path ending in .prom (node-exporter's "
                         "textfile collector reads only those)")
    return value


@record
class Metrics:
    """[metrics]: Prometheus metrics from every `sync`."""

    # A node-exporter textfile, replaced at the end of each sync. Empty: none written.
    textfile: str = field(default="", metadata=_check(_textfile))


@record
class Config:
    """The whole configuration: one section each, and the file it was read from."""

    path: Optional[str] = None
    general: General = field(default_factory=General)
    servers: Servers = field(default_factory=Servers)
    pool: Pool = field(default_factory=Pool)
    lists: Lists = field(default_factory=Lists)
    timeconf: Timeconf = field(default_factory=Timeconf)
    rules: Rules = field(default_factory=Rules)
    detect: Detect = field(default_factory=Detect)
    sync: Sync = field(default_factory=Sync)
    probe: Probe = field(default_factory=Probe)
    canary: Canary = field(default_factory=Canary)
    collector: Collector = field(default_factory=Collector)
    publish: Publish = field(default_factory=Publish)
    metrics: Metrics = field(default_factory=Metrics)
    # The file these settings were loaded from, set by load() only: dataclasses.replace()
    # leaves it None, so settings changed after loading (command-line options) are never
    # taken for the file's.
    source: Optional[configfile.Source] = field(default=None, init=False, repr=False,
                                                compare=False)


SECTIONS: dict[str, type] = {
    "general": General, "servers": Servers, "pool": Pool, "rules": Rules, "lists": Lists,
    "timeconf": Timeconf, "detect": Detect, "sync": Sync, "probe": Probe, "canary": Canary,
    "collector": Collector, "publish": Publish, "metrics": Metrics,
}


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a list of strings"


def _coerce(tp: Any, value: Any) -> Any:
    """Check a TOML value against a field type; raise ValueError on mismatch."""
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                value = float(value)
            except OverflowError:  # an integer of 309 digits or more
                raise ValueError("must be a number of a sensible size") from None
    elif tp is str:
        ok = isinstance(value, str)
        if ok:
            _no_nul(value)
    elif typing.get_origin(tp) is tuple:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if ok:
            value = tuple(_no_nul(v) for v in value)
    else:  # pragma: no cover - a schema bug, not user input
        raise TypeError(f"unsupported config type {tp!r}")
    if not ok:
        raise ValueError(f"must be {_type_name(tp)}")
    return value


def _no_nul(value: str) -> str:
    """No path, name or URL holds a NUL, and the OS calls it reaches raise ValueError on one."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL byte")
    return value


def _key(name: str) -> str:
    """A key as the error line shows it: TOML quoted keys may hold newlines or NULs."""
    return name if name.isprintable() else repr(name)


def _table_list_type(tp: Any) -> Optional[type]:
    """The dataclass X of a `tuple[X, ...]` field (a TOML array of tables), else None."""
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if args and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def _load_tables(cls: type, value: Any, path: str, key: str) -> tuple[Any, ...]:
    """[[key]] tables → a tuple of cls; a field without a default is a required key."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(path, key, f"must be an array of tables ([[{key}]])")
    out = []
    for index, table in enumerate(value):
        where = f"{key}[{index}]"
        for f in dataclasses.fields(cls):
            if (f.name not in table and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                raise ConfigError(path, f"{where}.{f.name}", "missing (required)")
        out.append(_load_section(cls, table, path, where))
    return tuple(out)


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """value through its key's `check` (the key's rule, in the file and on the command line);
    ValueError says why not."""
    check = f.metadata.get("check")
    return check(value) if check else value


def _load_section(cls: type, table: Any, path: str, section: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(path, section, "must be a table ([section])")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(path, f"{section}.{_key(key)}", "unknown key")
        try:
            table_type = _table_list_type(hints[key])
            if table_type is not None:
                value = _load_tables(table_type, value, path, f"{section}.{key}")
            else:
                value = _coerce(hints[key], value)
            values[key] = _checked(fields[key], value)
        except ValueError as exc:
            raise ConfigError(path, f"{section}.{key}", str(exc)) from None
    return cls(**values)


def with_options(section: S, **options: Any) -> S:
    """section with the values given on the command line for some of its keys (None: not
    given), each checked by the rule the key has in the file: `--interval nan` hung a resolve
    and `--interval 1e400` crashed it, where `interval = nan` is refused. A value the rule
    refuses is a UsageError naming the option (`--window` for [detect] window)."""
    fields = {f.name: f for f in dataclasses.fields(section)}  # type: ignore[arg-type]
    changes = {}
    for key, value in options.items():
        if value is None:
            continue
        try:
            changes[key] = _checked(fields[key], value)
        except ValueError as exc:
            raise UsageError(f"--{key.replace('_', '-')} {exc}") from None
    return dataclasses.replace(section, **changes) if changes else section  # type: ignore[type-var]


def parse(text: str, path: str) -> Config:
    """Parse configuration text; every problem is a ConfigError naming file and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "syntax", str(exc)) from None
    except RecursionError:  # the parser recurses once per level of nested arrays or tables
        raise ConfigError(path, "syntax", "arrays or inline tables nested too deeply") from None
    sections = {}
    for name, table in data.items():
        if name not in SECTIONS:
            raise ConfigError(path, _key(name), "unknown section")
        sections[name] = _load_section(SECTIONS[name], table, path, name)
    return Config(path=path, **sections)


def load(path: Optional[str] = None) -> Config:
    """Load the configuration: --config, else $NTPGUARD_CONFIG, else the default path.

    A missing default file means all defaults; a missing file that was asked for is an error.
    """
    source = configfile.read(path)
    if source.raw is None:
        loaded = parse("", source.path) if source.path == os.devnull else Config()
    else:
        try:
            text = source.raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(source.path, "syntax", "not valid UTF-8") from None
        loaded = parse(text, source.path)
    object.__setattr__(loaded, "source", source)  # frozen: set once, here
    return loaded
