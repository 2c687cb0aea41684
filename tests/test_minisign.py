"""Signed export: keys and signatures checked against the real `minisign` tool both ways, the
evidence an export carries, and the list and its signature replaced together or not at all.
No root, nothing leaves the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ntpguard import lists, minisign, publish
from ntpguard.errors import UsageError
from ntpguard.facts import Scan, Trigger
from ntpguard.status import Verdict

pytest.importorskip("cryptography")
needs_tool = pytest.mark.skipif(shutil.which("minisign") is None,
                                reason="minisign not installed (make deps installs it)")

H1, H2, H3 = "2604:a880:1:20::a7:f001", "2604:a880:1:20::a7:f002", "2604:a880:1:20::a7:f003"


def tool_verify(pub: Path, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["minisign", "-V", "-p", str(pub), "-m", str(path)],
                          capture_output=True, text=True)


def entries() -> list[lists.Entry]:
    return [lists.Entry(lists.parse_prefix(H1, 0, 0), "harvester", "detect", 0,
                        (("positive", 3), ("sole", 1)), 100.0, 200.0)]


@needs_tool
def test_keygen_signs_what_minisign_verifies_and_minisign_keys_sign_for_us(tmp_path, run_cli):
    p = run_cli("list", "keygen", "-s", tmp_path / "k.key", "-p", tmp_path / "k.pub", "--json")
    assert p.returncode == 0, p.stderr
    made = json.loads(p.stdout)
    assert os.stat(tmp_path / "k.key").st_mode & 0o777 == 0o600
    assert made["pubkey"] == (tmp_path / "k.pub").read_text().splitlines()[1]
    # Our signature, minisign's check (it prints the trusted comment it verified).
    out = tmp_path / "l.json"
    key = publish.read_secret_key(str(tmp_path / "k.key"))
    publish.write(str(out), entries(), "json", 1_700_000_000.0, key)
    v = tool_verify(tmp_path / "k.pub", out)
    assert v.returncode == 0, v.stderr
    assert "timestamp:1700000000\tfile:l.json\tentries:1\thashed" in v.stdout
    # minisign signs with our secret key file, and we verify that.
    (tmp_path / "m.txt").write_bytes(b"hello\n")
    s = subprocess.run(["minisign", "-S", "-s", str(tmp_path / "k.key"), "-m",
                        str(tmp_path / "m.txt"), "-t", "theirs"], capture_output=True,
                       text=True, input="")
    assert s.returncode == 0, s.stderr
    sig = (tmp_path / "m.txt.minisig").read_bytes()
    assert minisign.verify(b"hello\n", sig, made["pubkey"]) == "theirs"
    # A key made by `minisign -G -W` signs our exports; minisign verifies them.
    subprocess.run(["minisign", "-G", "-W", "-p", str(tmp_path / "w.pub"), "-s",
                    str(tmp_path / "w.key")], check=True, capture_output=True)
    os.chmod(tmp_path / "w.key", 0o600)
    publish.write(str(out), entries(), "text", 1_700_000_001.0,
                  publish.read_secret_key(str(tmp_path / "w.key")))
    assert tool_verify(tmp_path / "w.pub", out).returncode == 0
    # Tampering: one byte of the list, or the trusted comment, and neither side accepts it.
    data = out.read_bytes()
    out.write_bytes(data.replace(b"harvester", b"harvestex", 1))
    assert tool_verify(tmp_path / "w.pub", out).returncode != 0
    pub_line = (tmp_path / "w.pub").read_text().splitlines()[1]
    with pytest.raises(minisign.SignatureError, match="does not match"):
        minisign.verify(out.read_bytes(), Path(f"{out}.minisig").read_bytes(), pub_line)
    out.write_bytes(data)
    sig_path = Path(f"{out}.minisig")
    lines = sig_path.read_text().splitlines()
    lines[2] = lines[2].replace("entries:1", "entries:9")
    sig_path.write_text("\n".join(lines) + "\n")
    assert tool_verify(tmp_path / "w.pub", out).returncode != 0
    with pytest.raises(minisign.SignatureError, match="trusted comment was altered"):
        minisign.verify(data, sig_path.read_bytes(), pub_line)


@needs_tool
def test_keys_that_cannot_be_used_are_one_line_errors(tmp_path, run_cli):
    # A password-protected minisign key (minisign reads the password from stdin).
    enc = subprocess.run(["minisign", "-G", "-p", str(tmp_path / "e.pub"), "-s",
                          str(tmp_path / "e.key")], input="pw\npw\n", capture_output=True,
                         text=True)
    assert enc.returncode == 0, enc.stderr
    os.chmod(tmp_path / "e.key", 0o600)
    p = run_cli("list", "export", "-o", tmp_path / "x.txt", "--sign", tmp_path / "e.key")
    assert p.returncode == 2 and "password-protected" in p.stderr and "-W" in p.stderr
    assert len(p.stderr.splitlines()) == 1 and not (tmp_path / "x.txt").exists()
    # Readable by others, like ssh's "UNPROTECTED PRIVATE KEY FILE".
    assert run_cli("list", "keygen", "-s", tmp_path / "k.key", "-p",
                   tmp_path / "k.pub").returncode == 0
    os.chmod(tmp_path / "k.key", 0o640)
    p = run_cli("list", "export", "-o", tmp_path / "x.txt", "--sign", tmp_path / "k.key")
    assert p.returncode == 2 and "chmod 600" in p.stderr
    os.chmod(tmp_path / "k.key", 0o600)
    # keygen never overwrites a key (subscribers trust the old one).
    before = (tmp_path / "k.key").read_bytes()
    p = run_cli("list", "keygen", "-s", tmp_path / "k.key", "-p", tmp_path / "other.pub")
    assert p.returncode == 2 and "exists" in p.stderr
    assert (tmp_path / "k.key").read_bytes() == before
    assert not (tmp_path / "other.pub").exists()
    # A damaged key, a missing key, --sign without -o.
    raw = (tmp_path / "k.key").read_text().splitlines()
    (tmp_path / "bad.key").write_text(raw[0] + "\n" + raw[1][:-8] + "AAAAAAA=\n")
    os.chmod(tmp_path / "bad.key", 0o600)
    for args, words in (
            (["--sign", tmp_path / "bad.key", "-o", tmp_path / "x"], "damaged"),
            (["--sign", tmp_path / "none.key", "-o", tmp_path / "x"], "not found"),
            (["--sign", tmp_path / "k.key"], "needs -o")):
        p = run_cli("list", "export", *args)
        assert p.returncode == 2 and words in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and len(p.stderr.splitlines()) == 1


def test_export_carries_the_evidence(tmp_path):
    history = [
        Verdict.of(H1, "harvester", "detect", {"positive": 4, "negative": 1, "sole": 2,
                                               "probability": 0.99}, 500.0),
        Verdict.of(H2, "harvester", "canary", {"canary": "2001:db8::c1", "ports": 120,
                                               "lag": 3.5}, 300.0),
        Verdict.of(H2, "harvester", "canary", {"canary": "2001:db8::c2", "ports": 90,
                                               "lag": 2.0}, 400.0),
        Verdict.of(H3, "suspect", "detect", {"positive": 1, "negative": 0, "sole": 0}, 450.0),
    ]
    scans = [Scan(start, start + 1, "2001:db8:5ca::1", "2001:db8::a", 100, 100, ("TCP",),
                  (Trigger(H1, "UDP", 123, 123, start - 5, 5.0),))
             for start in (120.0, 180.0, 240.0)]
    got = {e.address: e for e in lists.entries_from_verdicts(history,
                                                               seen=lists.scan_times(scans))}
    assert set(got) == {H1, H2}  # the suspect only when asked
    assert dict(got[H1].evidence) == {"positive": 4, "negative": 1, "sole": 2}
    assert (got[H1].first_seen, got[H1].last_seen) == (120.0, 240.0)  # its scans
    assert dict(got[H2].evidence)["canary"] == 2  # two canaries of it were scanned
    assert (got[H2].first_seen, got[H2].last_seen) == (300.0, 400.0)
    both = {e.address: e for e in lists.entries_from_verdicts(history, ("harvester", "suspect"))}
    assert both[H3].kind == "harvester" and both[H3].comment.startswith("suspect")
    # What a subscriber reads back: the same evidence, the same times.
    text = publish.render(list(got.values()), "json", 1000.0)
    back = {e.address: e for e in lists.parse(text, "x", lists.Limits()).entries}
    assert back[H1].evidence == got[H1].evidence and back[H1].last_seen == 240.0


def test_publish_rewrites_only_when_the_entries_change(tmp_path):
    key = minisign.generate()
    path = str(tmp_path / "fleet.json")
    first = publish.write(path, entries(), "json", 1000.0, key, only_if_changed=True)
    data, sig = Path(path).read_bytes(), Path(path + ".minisig").read_bytes()
    again = publish.write(path, entries(), "json", 2000.0, key, only_if_changed=True)
    assert (first.changed, again.changed, again.generated) == (True, False, 1000.0)
    assert Path(path).read_bytes() == data and Path(path + ".minisig").read_bytes() == sig
    # A signature that no longer verifies (another key) is made again, the list with it.
    other = minisign.generate()
    third = publish.write(path, entries(), "json", 3000.0, other, only_if_changed=True)
    assert third.changed
    minisign.verify(Path(path).read_bytes(), Path(path + ".minisig").read_bytes(),
                    other.public().line())
    more = [*entries(), lists.Entry(lists.parse_prefix(H2, 0, 0), "harvester")]
    fourth = publish.write(path, more, "text", 4000.0, other, only_if_changed=True)
    assert fourth.changed and fourth.entries == 2


def test_list_and_signature_are_replaced_together_or_not_at_all(tmp_path):
    key = minisign.generate()
    path = tmp_path / "fleet.json"
    publish.write(str(path), entries(), "json", 1000.0, key)
    before = path.read_bytes(), Path(f"{path}.minisig").read_bytes()
    # Something in the way of the signature: nothing is replaced, no temporary file is left.
    Path(f"{path}.minisig").unlink()
    Path(f"{path}.minisig").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        publish.write(str(path), [], "json", 2000.0, key)
    assert path.read_bytes() == before[0]
    Path(f"{path}.minisig").rmdir()
    # A link where the list goes is refused, not followed.
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(UsageError, match="symbolic link"):
        publish.write(str(path), entries(), "json", 3000.0, key)
    assert target.read_text() == "keep\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "fleet.json"]
