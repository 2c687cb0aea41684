"""Manual marks outrank other sources; `unknown` withdraws them; explain shows the history."""

from __future__ import annotations

import json
import time

from ntpguard.state import State
from ntpguard.status import Verdict

H = "2a01:4f8:200::123"


def status_of(run_cli, address):
    out = run_cli("explain", address, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_mark_outranks_detection_and_unknown_withdraws(run_cli, state_dir):
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [(H, 6)], time.time())
        st.add_verdict(Verdict.of(H, "harvester", "detect", {"positive": 3, "negative": 0},
                                  time.time()))
    assert status_of(run_cli, H)["status"] == "harvester"
    # Kernel-style expanded input is accepted and stored canonically.
    out = run_cli("mark", "2a01:04f8:0200:0000:0000:0000:0000:0123", "clean", "--note", "mine")
    assert out.returncode == 0, out.stderr
    info = status_of(run_cli, H)
    assert (info["status"], info["decided_by"]) == ("clean", "manual")
    assert info["known"] and info["zones"] == ["2.debian.pool.ntp.org"]
    assert run_cli("mark", H, "unknown").returncode == 0
    info = status_of(run_cli, H)
    assert (info["status"], info["decided_by"]) == ("harvester", "detect")
    assert [h["status"] for h in info["history"]] == ["harvester", "clean", "unknown"]
    assert info["history"][1]["evidence"] == {"note": "mine"}
    servers = json.loads(run_cli("servers", "--json").stdout)
    assert servers[0]["status"] == "harvester" and servers[0]["source"] == "detect"


def test_mark_rejects_bad_input(run_cli):
    for args in (["not-an-ip", "clean"], ["fe80::1", "clean"], [H, "evil"]):
        out = run_cli("mark", *args)
        assert out.returncode == 2, args
        assert "Traceback" not in out.stderr


def test_a_listed_server_shows_its_list_and_a_mark_overrides_it(run_cli, state_dir):
    listed = "2604:a880:1:20::a7:f001"  # in the shipped rules/harvesters.txt
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA", [(listed, 6), ("2a01:4f8:1::1", 6)],
                         time.time())
    rows = {r["address"]: r for r in json.loads(run_cli("servers", "--json").stdout)}
    assert (rows[listed]["status"], rows[listed]["source"]) == ("harvester",
                                                                 "list:builtin-harvesters")
    assert rows["2a01:4f8:1::1"]["status"] == "unknown"
    info = status_of(run_cli, listed)
    assert info["decided_by"] == "list:builtin-harvesters"
    assert info["history"][-1]["evidence"]["entry"] == listed
    assert run_cli("mark", listed, "clean").returncode == 0
    assert status_of(run_cli, listed)["status"] == "clean"
    status = json.loads(run_cli("status", "--json").stdout)
    assert status["by_status"] == {"clean": 1, "unknown": 1}
