"""Subscription fetch against a real HTTPS server on loopback (self-signed CA from `openssl req`),
minisign signatures made by the real `minisign` tool. No root, nothing leaves the host."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ntpguard import config, fetch, lists, minisign
from ntpguard.errors import UsageError
from ntpguard.status import Verdict

GOOD = b"2604:a880:1:20::a7:f001 harvester # test\n2604:a880:800:10::/64 scanner\n"
GOOD2 = b"2604:a880:1:20::a7:f002 harvester\n"
BAD = b"2604:a880:1:20::a7:f001 harvester\n2600::/8 scanner\n"


class Site:
    """path → (status, body, headers); counts requests and records conditional headers."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        # path → "headers" or "body": that part is sent one byte every 0.5 s (for 10 s, then
        # the rest at once), each byte well within any per-read socket timeout.
        self.trickle: dict[str, str] = {}

    def put(self, path: str, body: bytes, etag: str = "", status: int = 200, **headers) -> None:
        h = dict(headers)
        if etag:
            h["ETag"] = etag
        self.files[path] = (status, body, h)


def _handler(site: Site):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            site.requests.append((self.path, dict(self.headers)))
            status, body, headers = site.files.get(self.path, (404, b"no\n", {}))
            if self.path in site.trickle:
                self.trickle(site.trickle[self.path], body)
                return
            if status == 200 and headers.get("ETag") and \
                    self.headers.get("If-None-Match") == headers["ETag"]:
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client stopped reading (past its caps)
                self.wfile.write(body)

        def trickle(self, phase: str, body: bytes) -> None:
            head = (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                    f"X-Slow: {'.' * 20}\r\n\r\n").encode()
            slow = head if phase == "headers" else body
            fast = b"" if phase == "headers" else head
            self.wfile.write(fast)
            try:
                for i in range(20):
                    self.wfile.write(slow[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.5)
                self.wfile.write(slow[20:] + (body if phase == "headers" else b""))
            except OSError:
                pass  # the client gave up

        def log_message(self, *a):
            pass

    return H


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    return d


@pytest.fixture
def server(tls):
    site = Site()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls / "cert.pem", tls / "key.pem")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    site.base = f"https://127.0.0.1:{httpd.server_address[1]}"
    site.ca = str(tls / "cert.pem")
    yield site
    httpd.shutdown()
    httpd.server_close()


def cfg(site, tmp_path, extra: str = "", name: str = "peers", path: str = "/h.txt",
        timeout: float = 5):
    text = (f'[[lists.subscriptions]]\nname = "{name}"\nurl = "{site.base}{path}"\n'
            f'ca_file = "{site.ca}"\ntimeout = {timeout}\n{extra}')
    (tmp_path / "c.toml").write_text(text)
    return config.parse(text, "c.toml")


def test_fetch_etag_then_304_then_update(server, tmp_path, state_dir):
    server.put("/h.txt", GOOD, etag='"v1"')
    c = cfg(server, tmp_path)
    r = fetch.refresh_subscriptions(c, str(state_dir), now=1000.0)
    assert r.ok and [(x.name, x.status, x.entries) for x in r.results] == [("peers", "updated", 2)]
    assert (state_dir / "lists" / "peers.txt").read_bytes() == GOOD
    meta = lists.read_meta(str(state_dir), "peers")
    assert meta["etag"] == '"v1"' and meta["sha256"] == hashlib.sha256(GOOD).hexdigest()
    r = fetch.refresh_subscriptions(c, str(state_dir), now=2000.0)
    assert [x.status for x in r.results] == ["unchanged"]
    assert server.requests[-1][1].get("If-None-Match") == '"v1"'
    assert lists.read_meta(str(state_dir), "peers")["checked"] == 2000.0
    server.put("/h.txt", GOOD2, etag='"v2"')
    r = fetch.refresh_subscriptions(c, str(state_dir), now=3000.0)
    assert [(x.status, x.entries) for x in r.results] == [("updated", 1)]
    loaded = next(x for x in lists.load_all(c, str(state_dir)) if x.name == "peers")
    assert [e.address for e in loaded.entries] == ["2604:a880:1:20::a7:f002"]


def test_bad_list_never_replaces_last_good_copy(server, tmp_path, state_dir):
    server.put("/h.txt", GOOD, etag='"v1"')
    c = cfg(server, tmp_path)
    assert fetch.refresh_subscriptions(c, str(state_dir)).ok
    before = sorted(os.listdir(state_dir / "lists"))
    for body, status, word in [(BAD, 200, "broader than the limit"),
                               (b"\xff\xfe\x00junk", 200, "UTF-8"),
                               (b"gone", 500, "HTTP 500"),
                               (b"", 404, "HTTP 404")]:
        server.put("/h.txt", body, etag='"bad"', status=status)
        r = fetch.refresh_subscriptions(c, str(state_dir))
        assert not r.ok, word
        assert word in r.results[0].message and "last good copy kept" in r.results[0].message
        assert (state_dir / "lists" / "peers.txt").read_bytes() == GOOD
        assert sorted(os.listdir(state_dir / "lists")) == before
        assert lists.read_meta(str(state_dir), "peers")["etag"] == '"v1"'


def test_size_cap_pin_and_tls(server, tmp_path, state_dir):
    server.put("/h.txt", GOOD)
    r = fetch.refresh_subscriptions(cfg(server, tmp_path, "max_bytes = 20\n"), str(state_dir))
    assert "more than max_bytes 20" in r.results[0].message
    # Without Content-Length the cap still holds (chunked-like body read to the limit).
    server.put("/h.txt", GOOD, **{"Content-Length": str(len(GOOD))})
    pin = hashlib.sha256(GOOD).hexdigest()
    wrong = "0" * 64
    r = fetch.refresh_subscriptions(cfg(server, tmp_path, f'sha256 = "{wrong}"\n'),
                                    str(state_dir))
    assert "does not match the pinned" in r.results[0].message
    assert not (state_dir / "lists" / "peers.txt").exists()
    assert fetch.refresh_subscriptions(cfg(server, tmp_path, f'sha256 = "{pin}"\n'),
                                       str(state_dir)).ok
    # The system CAs do not trust our self-signed certificate: refused, not fetched.
    c = config.parse(f'[[lists.subscriptions]]\nname = "x"\nurl = "{server.base}/h.txt"\n',
                     "c.toml")
    r = fetch.refresh_subscriptions(c, str(state_dir))
    assert "certificate" in r.results[0].message


def test_redirect_to_http_refused(server):
    server.put("/r.txt", b"", status=302, Location="http://127.0.0.1:9/h.txt")
    with pytest.raises(fetch.FetchError, match="refused redirect to non-HTTPS"):
        fetch.fetch_url(server.base + "/r.txt", ca_file=server.ca, timeout=5)
    server.put("/h.txt", GOOD)
    server.put("/r2.txt", b"", status=301, Location=server.base + "/h.txt")
    assert fetch.fetch_url(server.base + "/r2.txt", ca_file=server.ca, timeout=5).body == GOOD


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_timeout(server, tmp_path, state_dir, phase):
    """One byte every 0.5 s never trips a per-read timeout; the fetch's deadline does."""
    server.put("/h.txt", GOOD)
    assert fetch.refresh_subscriptions(cfg(server, tmp_path), str(state_dir)).ok
    server.put("/slow.txt", GOOD2)
    server.trickle["/slow.txt"] = phase
    start = time.monotonic()
    r = fetch.refresh_subscriptions(cfg(server, tmp_path, path="/slow.txt", timeout=2),
                                    str(state_dir))
    took = time.monotonic() - start
    assert [x.status for x in r.results] == ["failed"]
    assert "no complete answer within 2 s" in r.results[0].message
    assert "last good copy kept" in r.results[0].message
    assert 1.9 < took < 5
    assert (state_dir / "lists" / "peers.txt").read_bytes() == GOOD


def test_list_import_url_has_a_deadline(server, tmp_path, state_dir, monkeypatch):
    """`list import URL` has no subscription: 30 s in all (2 s here, to keep the test short)."""
    monkeypatch.setattr(fetch, "IMPORT_TIMEOUT", 2.0, raising=False)
    server.put("/slow.txt", GOOD2)
    server.trickle["/slow.txt"] = "body"
    start = time.monotonic()
    with pytest.raises(fetch.FetchError, match="no complete answer within 2 s"):
        fetch.import_source(config.parse("", "c"), str(state_dir), server.base + "/slow.txt",
                            ca_file=server.ca)
    assert time.monotonic() - start < 5
    assert not (state_dir / "lists").exists()


# Runs a command and prints its exit status and the peak resident memory of it and its
# children (ru_maxrss of RUSAGE_CHILDREN: this wrapper has no other child).
PEAK = ("import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps([p.returncode, p.stderr,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))")


def peak(run_cli_env: dict, *args: str) -> tuple[int, str, float]:
    """(exit status, stderr, peak MiB) of `python -m ntpguard ARGS` run as a child."""
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "ntpguard", *args],
                         capture_output=True, text=True, env=run_cli_env, timeout=120)
    rc, stderr, mib = json.loads(out.stdout)
    return rc, stderr, mib


def big_text(megabytes: int) -> bytes:
    """Distinct valid scanner lines (/48s), ~30 bytes each: every line a kept entry."""
    count = megabytes * 10**6 // 30
    return "".join(f"2a00:{i >> 16:x}:{i & 0xFFFF:x}::/48 scanner # m\n"
                   for i in range(count)).encode()


@pytest.fixture
def cli_env(tmp_path, state_dir):
    def make(config_text: str) -> dict:
        (tmp_path / "mem.toml").write_text(config_text)
        return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent),
                    NTPGUARD_STATE_DIR=str(state_dir), NTPGUARD_CONFIG=str(tmp_path / "mem.toml"))
    return make


def test_a_50_mb_import_stops_at_max_entries_in_bounded_memory(server, cli_env, state_dir):
    """`list import URL` of 50 MB (1.7M entries) under its 64 MiB cap: it used to read and
    parse all of it (1.8 GB) before counting; now it stops after max_entries (20,000 here)."""
    server.put("/big.txt", big_text(50))
    start = time.monotonic()
    rc, stderr, mib = peak(cli_env("[lists]\nmax_entries = 20000\n"), "list", "import",
                           server.base + "/big.txt", "--ca-file", server.ca)
    print(f"import: peak {mib:.0f} MiB in {time.monotonic() - start:.1f} s")
    assert mib < 100, f"peak {mib:.0f} MiB"
    assert time.monotonic() - start < 10
    assert rc == 2, stderr
    assert stderr == (f"ntpguard: {server.base}/big.txt: list refused (1 problem): line 20001: "
                      "more than max_entries 20000 entries (the rest was not read)\n")
    assert not (state_dir / "lists").exists()


@pytest.mark.parametrize("kind", ["text", "json", "one line"])
def test_an_8_mib_subscription_is_refused_in_bounded_memory(server, cli_env, tmp_path, kind):
    """8 MiB is the default max_bytes; what it holds is not bounded by that: 280k text
    entries, 125k JSON ones, or one 8 MiB line. All stop early (max_entries 20,000; the
    64 KiB line cap)."""
    body = big_text(8)
    if kind == "json":
        lines = body.decode().splitlines()
        body = json.dumps({"format": "ntpguard-list", "version": 1, "entries": [
            {"address": ln.split()[0], "kind": "scanner"} for ln in lines[:125_000]]}).encode()
    elif kind == "one line":
        body = body.replace(b"\n", b" ")
    assert len(body) < 8 << 20
    server.put("/big", body)
    conf = (f'[[lists.subscriptions]]\nname = "big"\nurl = "{server.base}/big"\n'
            f'ca_file = "{server.ca}"\nmax_entries = 20000\n')
    rc, stderr, mib = peak(cli_env(conf), "list", "fetch", "--json")
    assert rc == 1, stderr
    assert mib < 100, f"peak {mib:.0f} MiB"
    print(f"{kind}: peak {mib:.0f} MiB")


def test_malformed_url_is_a_one_line_error():
    with pytest.raises(UsageError, match=r"^https://\[bad/x: not a usable URL: Invalid IPv6"):
        fetch.fetch_url("https://[bad/x", timeout=2)


def test_unreachable_is_reported_not_raised(tmp_path, state_dir):
    text = ('[[lists.subscriptions]]\nname = "dead"\nurl = "https://127.0.0.1:9/x"\ntimeout = 2\n'
            '[[lists.subscriptions]]\nname = "local"\nurl = "file://' + str(tmp_path / "l.txt")
            + '"\n')
    (tmp_path / "l.txt").write_bytes(GOOD)
    r = fetch.refresh_subscriptions(config.parse(text, "c"), str(state_dir))
    assert [x.status for x in r.results] == ["failed", "updated"]
    assert "refused" in r.results[0].message.lower()
    assert r.summary() == "lists: 1 updated, 0 unchanged, 1 failed"


# -- minisign -------------------------------------------------------------------------------------

try:
    import cryptography  # noqa: F401 - only to know whether signatures can be checked
    HAVE_CRYPTO = True
except ImportError:
    HAVE_CRYPTO = False
needs_minisign = pytest.mark.skipif(
    shutil.which("minisign") is None or not HAVE_CRYPTO,
    reason="minisign or python3-cryptography not installed (make deps installs both)")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    if shutil.which("minisign") is None:
        pytest.skip("minisign not installed")
    d = tmp_path_factory.mktemp("keys")
    for n in ("a", "b"):
        subprocess.run(["minisign", "-G", "-W", "-p", str(d / f"{n}.pub"), "-s",
                        str(d / f"{n}.key")], check=True, capture_output=True)
    return d


def sign(keys: Path, key: str, path: Path, legacy: bool = False, trusted: str = "t") -> bytes:
    subprocess.run(["minisign", "-S", "-s", str(keys / f"{key}.key"), "-m", str(path),
                    "-t", trusted, *(["-l"] if legacy else [])], check=True, capture_output=True)
    return Path(str(path) + ".minisig").read_bytes()


def pub(keys: Path, key: str) -> str:
    return (keys / f"{key}.pub").read_text().splitlines()[1]


@needs_minisign
@pytest.mark.parametrize("legacy", [False, True], ids=["prehashed-ED", "legacy-Ed"])
def test_minisign_real_signatures(keys, tmp_path, legacy):
    f = tmp_path / "l.txt"
    f.write_bytes(GOOD)
    sig = sign(keys, "a", f, legacy, trusted="ntpguard list 1")
    # Both algorithms are really exercised: "ED" (prehashed, minisign's default), legacy "Ed".
    assert base64.b64decode(sig.splitlines()[1])[:2] == (b"Ed" if legacy else b"ED")
    assert minisign.verify(GOOD, sig, pub(keys, "a")) == "ntpguard list 1"
    # The whole .pub file works too.
    assert minisign.verify(GOOD, sig, (keys / "a.pub").read_text())
    with pytest.raises(minisign.SignatureError, match="does not match the list"):
        minisign.verify(GOOD + b"2604:a880:1:20::1 harvester\n", sig, pub(keys, "a"))
    with pytest.raises(minisign.SignatureError, match="signed with key"):
        minisign.verify(GOOD, sig, pub(keys, "b"))
    lines = sig.decode().splitlines()
    lines[2] = "trusted comment: altered"
    with pytest.raises(minisign.SignatureError, match="trusted comment was altered"):
        minisign.verify(GOOD, "\n".join(lines).encode(), pub(keys, "a"))
    with pytest.raises(minisign.SignatureError, match="not in minisign format"):
        minisign.verify(GOOD, b"garbage", pub(keys, "a"))
    with pytest.raises(minisign.SignatureError, match="public key"):
        minisign.verify(GOOD, sig, "RWQnotakey")


@needs_minisign
def test_signed_subscription(server, keys, tmp_path, state_dir):
    f = tmp_path / "h.txt"
    f.write_bytes(GOOD)
    server.put("/h.txt", GOOD, etag='"s1"')
    server.put("/h.txt.minisig", sign(keys, "a", f))
    c = cfg(server, tmp_path, f'pubkey = "{pub(keys, "a")}"\n')
    r = fetch.refresh_subscriptions(c, str(state_dir))
    assert r.ok, r.results
    assert lists.read_meta(str(state_dir), "peers")["signed"] is True
    # A new body with the old signature: refused, old copy stays.
    server.put("/h.txt", GOOD2, etag='"s2"')
    r = fetch.refresh_subscriptions(c, str(state_dir))
    assert "signature does not match" in r.results[0].message
    assert (state_dir / "lists" / "peers.txt").read_bytes() == GOOD
    # Missing signature file.
    del server.files["/h.txt.minisig"]
    r = fetch.refresh_subscriptions(c, str(state_dir))
    assert "h.txt.minisig: HTTP 404" in r.results[0].message


def test_a_malformed_key_is_reported_before_the_signature_is_fetched(server, tmp_path,
                                                                   state_dir):
    """A subscription's key that cannot be a key: that is the error, and URL.minisig is not
    asked for (before, a missing signature was reported, HTTP 404, the key never looked at).
    A configuration file with such a key is refused when it loads (test_config_limits); this
    is the fetch's own check, for settings made otherwise."""
    server.put("/h.txt", GOOD)
    c = cfg(server, tmp_path)
    bad = dataclasses.replace(c.lists.subscriptions[0], pubkey="RWQnotakey")
    c = dataclasses.replace(c, lists=dataclasses.replace(c.lists, subscriptions=(bad,)))
    r = fetch.refresh_subscriptions(c, str(state_dir))
    assert r.results[0].message == f"{server.base}/h.txt: public key is not base64"
    assert [path for path, _ in server.requests] == ["/h.txt"]


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_import_show_fetch(server, tmp_path, run_cli, state_dir):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(BAD)
    p = run_cli("list", "import", bad)
    assert p.returncode == 2 and p.stderr.startswith("ntpguard: ") and "line 2" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1
    good = tmp_path / "mylist.txt"
    good.write_bytes(b"2602:80d:1000:b0cc:e::/80 # censys\n")
    p = run_cli("list", "import", good, "--kind", "scanner", "--trust", "report")
    assert p.returncode == 0, p.stderr
    assert "list mylist: 1 entries (0 harvesters, 1 scanners), report" in p.stdout
    p = run_cli("list", "import", tmp_path / "missing.txt")
    assert p.returncode == 2 and "cannot read" in p.stderr
    server.put("/h.txt", GOOD, etag='"v1"')
    conf = tmp_path / "c.toml"
    conf.write_text(f'[[lists.subscriptions]]\nname = "peers"\nurl = "{server.base}/h.txt"\n'
                    f'ca_file = "{server.ca}"\n[[lists.subscriptions]]\nname = "dead"\n'
                    'url = "https://127.0.0.1:9/x"\ntimeout = 2\n')
    p = run_cli("list", "fetch", "--json", config=conf)
    assert p.returncode == 4, p.stderr  # partly done
    doc = json.loads(p.stdout)
    assert [x["status"] for x in doc["lists"]] == ["updated", "failed"]
    p = run_cli("list", "fetch", "peers", config=conf)
    assert p.returncode == 0 and "peers: unchanged, 2 entries" in p.stdout
    p = run_cli("list", "show", "--json", config=conf)
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert set(rows) == {"builtin-harvesters", "builtin-scanners", "mylist", "peers", "dead"}
    assert rows["dead"]["summary"] == "never fetched" and rows["mylist"]["trust"] == "report"
    p = run_cli("list", "show", "peers", config=conf)
    assert p.stdout.splitlines()[1:] == ["2604:a880:1:20::a7:f001 harvester # test",
                                         "2604:a880:800:10::/64 scanner"]
    p = run_cli("list", "import", good, "--name", "peers", config=conf)
    assert p.returncode == 2 and "is a subscription" in p.stderr
    p = run_cli("list", "remove", "mylist")
    assert p.returncode == 0 and not (state_dir / "lists" / "mylist.txt").exists()


@pytest.mark.parametrize("option,value,error", [
    ("--pubkey", "RWQnotakey", "public key is not base64"),
    ("--pubkey", "RWQ" + "A" * 49, "public key has 39 bytes, expected 42"),
    ("--pubkey", "AAAA" * 14, "public key: not an Ed25519 minisign key"),
    ("--pubkey", "", "empty; give the public key's base64 line (RW...)"),
    ("--pubkey", " ", "empty; give the public key's base64 line (RW...)"),
    ("--sha256", "abc", "must be empty or 64 hex digits (a SHA-256)"),
    ("--sha256", "g" * 64, "must be empty or 64 hex digits (a SHA-256)"),
    ("--sha256", "", "empty; give the list's SHA-256 (64 hex digits)"),
    ("--sha256", " ", "empty; give the list's SHA-256 (64 hex digits)"),
])
def test_cli_import_checks_the_typed_key_and_pin_first(run_cli, tmp_path, state_dir, option,
                                                       value, error):
    """`list import FILE --pubkey KEY` with no FILE.minisig, or `--sha256 PIN`: a key or pin
    that cannot be one is the error, before the file is read (not the missing signature, a
    "does not match", or a missing FILE); an empty one (`--pubkey "$KEY"`, KEY unset)
    imported the list unsigned or unchecked."""
    good = tmp_path / "l.txt"
    good.write_bytes(GOOD)
    for source in (good, tmp_path / "missing.txt"):
        p = run_cli("list", "import", source, option, value)
        assert (p.returncode, p.stderr) == (2, f"ntpguard: {option}: {error}\n")
    assert not (state_dir / "lists" / "l.txt").exists()


def test_cli_import_takes_a_pin_in_capitals_with_spaces(run_cli, tmp_path):
    good = tmp_path / "l.txt"
    good.write_bytes(GOOD)
    right = hashlib.sha256(GOOD).hexdigest().upper()
    p = run_cli("list", "import", good, "--sha256", f" {right} ")
    assert p.returncode == 0, p.stderr


def test_cli_export_roundtrip(run_cli, state_dir, tmp_path):
    from ntpguard.state import State

    with State.open(str(state_dir)) as st:
        st.add_verdict(Verdict.of("2604:a880:1:20::a7:f007", "harvester", "detect",
                                  {"scans": 2}, 1e9))
        st.add_verdict(Verdict.of("2604:a880:1:20::a7:f008", "harvester", "list:peers", {},
                                  1e9))
    for fmt in ("text", "json"):
        out = tmp_path / f"export.{fmt}"
        p = run_cli("list", "export", "--format", fmt, "-o", out)
        assert p.returncode == 0, p.stderr
        parsed = lists.parse(out.read_bytes(), str(out), lists.Limits())
        assert [(e.address, e.kind) for e in parsed.entries] == [
            ("2604:a880:1:20::a7:f007", "harvester")]
        p = run_cli("list", "import", out, "--name", f"back-{fmt}")
        assert p.returncode == 0, p.stderr


def test_a_list_from_a_file_loads_no_http_or_tls(tmp_path):
    """A list read from a file (`list import FILE`, a file:/// URL) imports neither urllib,
    http.client nor ssl: ~25 ms of every such import (ntpguard.https holds them)."""
    path = tmp_path / "l.txt"
    path.write_text("2604:a880:800:10::/64 scanner\n")
    code = (f"import sys; from ntpguard import fetch, lists\n"
            f"r = lists.Reader('l', lists.Limits())\n"
            f"fetch.fetch_url('file://{path}', sink=r.feed); r.end()\n"
            f"assert r.result().count == 1\n"
            f"print(sorted(m for m in ('http.client', 'ssl', 'urllib.request', 'ntpguard.https')"
            f" if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ,
                                          "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.stdout.strip() == "[]"
