"""Where lists are read and stored, through the real CLI: planted links, FIFOs, /dev/zero,
a lists directory of another user; and a refused list's every problem in --json."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import no_hang

from ntpguard import config, fetch, lists

GOOD = b"2604:a880:1:20::a7:f001 harvester\n"
OTHER_UID = 54321


def one_line_error(out: subprocess.CompletedProcess, code: int = 2) -> str:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert out.stderr.startswith("ntpguard: ") and out.stderr.count("\n") == 1, out.stderr
    assert "Traceback" not in out.stderr
    return out.stderr


def test_planted_lists_link_gets_nothing_written(run_cli, state_dir, tmp_path):
    """Another user's `lists -> /their/dir` must not make root write (or read) there."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (state_dir / "lists").symlink_to(theirs)
    mine = tmp_path / "mine.txt"
    mine.write_bytes(GOOD)
    err = one_line_error(run_cli("list", "import", mine))
    assert f"{state_dir}/lists: is a symbolic link" in err
    assert list(theirs.iterdir()) == []
    err = one_line_error(run_cli("list", "show"))
    assert f"{state_dir}/lists: is a symbolic link" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_lists_dir_of_another_user_is_refused(run_cli, state_dir, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_bytes(GOOD)
    assert run_cli("list", "import", mine).returncode == 0
    os.chown(state_dir / "lists", OTHER_UID, -1)
    err = one_line_error(run_cli("list", "show"))
    assert f"lists: is owned by uid {OTHER_UID}" in err
    one_line_error(run_cli("rules", "apply", "--dry-run"))


def test_stored_copy_replaced_by_a_link_is_refused(run_cli, state_dir, tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_bytes(GOOD)
    assert run_cli("list", "import", mine).returncode == 0
    stored = state_dir / "lists" / "mine.txt"
    stored.unlink()
    stored.symlink_to(mine)
    err = one_line_error(run_cli("list", "show", "mine"))
    assert f"{stored}: is a symbolic link" in err


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link", "directory"])
def test_odd_import_files_are_refused_at_once(run_cli, state_dir, tmp_path, kind):
    source = {"fifo": tmp_path / "l.txt", "dev-zero": "/dev/zero", "link": tmp_path / "link.txt",
              "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(source)  # never written: reading it would block for ever
    elif kind == "link":
        (tmp_path / "real.txt").write_bytes(GOOD)
        source.symlink_to(tmp_path / "real.txt")
    out = run_cli("list", "import", source, "--name", "x", timeout=10)
    err = one_line_error(out)
    assert {"fifo": "is a FIFO, not a regular file", "dev-zero": "is a character device",
            "link": "is a symbolic link", "directory": "is a directory"}[kind] in err
    assert not (state_dir / "lists" / "x.txt").exists()


def test_file_url_subscription_to_a_fifo_fails_without_hanging(state_dir, tmp_path):
    fifo = tmp_path / "list.fifo"
    os.mkfifo(fifo)
    conf = config.parse(f'[[lists.subscriptions]]\nname = "f"\nurl = "file://{fifo}"\n', "c")
    with no_hang():
        report = fetch.refresh_subscriptions(conf, str(state_dir))
    assert [r.status for r in report.results] == ["failed"]
    assert "is a FIFO, not a regular file" in report.results[0].message


def test_export_to_a_link_is_refused(run_cli, tmp_path):
    target = tmp_path / "authorized_keys"
    target.write_text("ssh-ed25519 AAAA admin\n")
    link = tmp_path / "export.txt"
    link.symlink_to(target)
    err = one_line_error(run_cli("list", "export", "-o", link))
    assert f"{link}: cannot write: is a symbolic link" in err
    assert target.read_text() == "ssh-ed25519 AAAA admin\n"


def maltrail_like(count: int) -> bytes:
    """Like maltrail's mass_scanner.txt: `ADDRESS # comment`, no kind column."""
    return "".join(f"2604:a880:{i:x}::1 # binaryedge.io\n" for i in range(1, count + 1)).encode()


def test_refused_list_shows_20_problems_and_json_gives_all(run_cli, tmp_path, state_dir):
    f = tmp_path / "mass_scanner.txt"
    f.write_bytes(maltrail_like(385))
    out = run_cli("list", "import", f)
    err = one_line_error(out)
    assert "list refused (385 problems): line 1: no kind" in err
    assert "line 20: no kind" in err and "line 21:" not in err
    assert err.endswith("; and 365 more\n")
    out = run_cli("list", "import", f, "--json")
    one_line_error(out)
    doc = json.loads(out.stdout)
    assert doc["ok"] is False and len(doc["problems"]) == 385
    assert doc["problems"][384] == "line 385: no kind (harvester or scanner) after " \
                                   "'2604:a880:181::1'"
    out = run_cli("list", "import", f, "--kind", "scanner", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ok": True, "name": "mass_scanner", "entries": 385,
                                      "harvesters": 0, "scanners": 385, "trust": "enforce"}


def test_list_fetch_json_gives_every_problem(run_cli, tmp_path):
    f = tmp_path / "mass.txt"
    f.write_bytes(maltrail_like(30))
    conf = tmp_path / "c.toml"
    conf.write_text(f'[[lists.subscriptions]]\nname = "mass"\nurl = "file://{f}"\n')
    out = run_cli("list", "fetch", "--json", config=conf)
    assert out.returncode == 1
    result = json.loads(out.stdout)["lists"][0]
    assert result["status"] == "failed" and len(result["problems"]) == 30
    assert result["message"].endswith("; and 10 more")
    assert lists.stored_names(str(tmp_path / "state")) == []
