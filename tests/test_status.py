"""One status model: every command reads the same effective status of a server.

The property test builds random states (pool servers, verdicts of every source, trusted
servers, enforced and report-only lists with addresses and prefixes) in a real state directory
and checks that what `servers`, `explain`, the firewall plan, `timeconf` and `probe --suspects`
make of each server agree. The CLI tests replay the cases an admin ran into.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ntpguard import config, lists, probe, snapshot, timeconf
from ntpguard.cli.servers import server_rows
from ntpguard.plan import HostFacts, Plan
from ntpguard.state import State
from ntpguard.status import Status, Verdict, status_of
from ntpguard.status import effective as status_effective

NOW = time.time()
PREFIXES = ["2001:db8:a:1::", "2001:db8:a:2::", "2001:db8:b:1::"]
ADDRESSES = [f"{p}{i:x}" for p in PREFIXES for i in (1, 2, 3)] + ["198.51.100.1",
                                                                 "198.51.100.2"]
SOURCES = ["manual", "detect", "probe"]
STATUSES = [s.value for s in Status]

verdicts = st.lists(st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(STATUSES),
                              st.sampled_from(SOURCES), st.integers(0, 5)), max_size=12)
entries = st.lists(st.tuples(st.sampled_from(["2001:db8:a::/48", "2001:db8:a:1::/64",
                                              "2001:db8:b:1::/64", *ADDRESSES]),
                             st.sampled_from(["harvester", "scanner"])),
                   max_size=5, unique_by=lambda e: e[0])


def ntp_allowed(plan: Plan, address: str) -> bool:
    """Whether the plan's `ntp` chain lets NTP to address through (what both backends render:
    usable servers return first; block mode rejects the rest; allow mode rejects what a
    harvester set covers). The netns tests check the backends do exactly this with packets."""
    ip = ipaddress.ip_address(address)
    if address in (plan.clean6 if ip.version == 6 else plan.clean4):
        return True
    if plan.unknown == "block":
        return False
    for ps in plan.harvesters:
        if ps.family == ip.version and any(
                ip in ipaddress.ip_network(f"{n}/{ps.length}") for n in ps.networks):
            return False
    return True


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pool=st.sets(st.sampled_from(ADDRESSES), max_size=8), verdicts=verdicts,
       trusted=st.sets(st.sampled_from(ADDRESSES), max_size=2), enforced=entries,
       reported=entries, unknown=st.sampled_from(["block", "allow"]))
def test_every_command_agrees_on_every_server(pool, verdicts, trusted, enforced, reported,
                                               unknown):
    cfg = config.parse(
        "[pool]\nallow_nonglobal = true\n[lists]\nbuiltin = false\nallow_nonglobal = true\n"
        f"[servers]\ntrusted = {json.dumps(sorted(trusted))}\n"
        f'[rules]\nunknown = "{unknown}"\n', "t.toml")
    with tempfile.TemporaryDirectory() as tmp, State.open(tmp) as state:
        for address in pool:
            state.record_answer("2.p", "AAAA" if ":" in address else "A",
                                [(address, 6 if ":" in address else 4)], NOW)
        for address, status, source, age in verdicts:
            state.add_verdict(Verdict.of(address, status, source, {}, NOW - age))
        for name, trust, items in (("mine", "enforce", enforced), ("theirs", "report", reported)):
            if items:
                text = "".join(f"{a} {k}\n" for a, k in items).encode()
                parsed = lists.parse(text, name, lists.limits_for(cfg))
                lists.store(tmp, name, parsed, {"trust": trust})

        rows = {r["address"]: r for r in server_rows(state, cfg)}
        snap = snapshot.take(cfg, state)
        statuses = snapshot.statuses(cfg, state)
        try:
            plan = snapshot.firewall_plan(cfg, state, host=HostFacts(), force=True)
        except Exception as exc:  # pragma: no cover - a failure to report, not a verdict
            raise AssertionError(f"no plan: {exc}") from exc
        chosen, _ = timeconf.choose(cfg, state, NOW, count=len(ADDRESSES))
        suspects = probe.select_suspects(statuses, {}, set(), len(ADDRESSES))

    assert set(rows) == set(statuses)
    for address, row in rows.items():
        s = statuses[address]
        one = status_of(snap, address)  # what `explain` prints
        assert row["status"] == s.status.value == one.status.value, address
        assert row["source"] == (str(s.source) if s.source else None) == (
            str(one.source) if one.source else None)
        if s.usable:
            assert ntp_allowed(plan, address), (address, s)
        if s.status.blocked:
            assert not ntp_allowed(plan, address), (address, s)
        if ":" in address:
            assert (address in suspects) == (s.status == Status.SUSPECT), (address, s)
    assert set(chosen) == {a for a, s in statuses.items() if s.usable}
    # Precedence, stated once more from the inputs: a manual mark (not `unknown`) wins.
    for address in rows:
        marks = [(-age, i, status) for i, (a, status, source, age) in enumerate(verdicts)
                 if a == address and source == "manual"]
        if marks:
            newest = max(marks)[2]  # the latest; at equal times the one stored last
            if newest != "unknown":
                assert rows[address]["status"] == newest
        elif address in trusted:
            assert rows[address]["status"] == "clean"


# -- the remembered statuses ------------------------------------------------------------------

def _state_with(tmp: str, state: State, cfg, pool, verdicts, enforced) -> None:
    for address in pool:
        state.record_answer("2.p", "AAAA" if ":" in address else "A",
                            [(address, 6 if ":" in address else 4)], NOW)
    for address, status, source, age in verdicts:
        state.add_verdict(Verdict.of(address, status, source, {"n": age}, NOW - age))
    if enforced:
        text = "".join(f"{a} {k}\n" for a, k in enforced).encode()
        lists.store(tmp, "mine", lists.parse(text, "mine", lists.limits_for(cfg)),
                    {"trust": "enforce", "fetched": len(enforced)})


def _config(trusted) -> config.Config:
    return config.parse(
        "[pool]\nallow_nonglobal = true\n[lists]\nbuiltin = false\nallow_nonglobal = true\n"
        f"[servers]\ntrusted = {json.dumps(sorted(trusted))}\n", "t.toml")


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pool=st.sets(st.sampled_from(ADDRESSES), max_size=8), verdicts=verdicts,
       trusted=st.sets(st.sampled_from(ADDRESSES), max_size=2), enforced=entries,
       more_pool=st.sets(st.sampled_from(ADDRESSES), max_size=2), more=verdicts,
       trusted_after=st.none() | st.sets(st.sampled_from(ADDRESSES), max_size=2),
       enforced_after=st.none() | entries)
def test_remembered_statuses_are_always_what_deciding_afresh_gives(
        pool, verdicts, trusted, enforced, more_pool, more, trusted_after, enforced_after):
    """Statuses remembered by one run and brought up to date by the next (new verdicts,
    servers, trusted servers or lists in between) equal those decided from scratch."""
    cfg = _config(trusted)
    with tempfile.TemporaryDirectory() as tmp:
        with State.open(tmp) as state:
            _state_with(tmp, state, cfg, pool, verdicts, enforced)
            first = snapshot.statuses(cfg, state)
        snapshot._DECIDED.clear()  # each run below is a process of its own
        with State.open(tmp) as state:
            assert first == status_effective(snapshot.take(cfg, state))
        after = _config(trusted if trusted_after is None else trusted_after)
        with State.open(tmp) as state:
            _state_with(tmp, state, after, more_pool, more,
                        enforced if enforced_after is None else enforced_after)
            again = snapshot.statuses(after, state)
            fresh = status_effective(snapshot.take(after, state))
            assert again == fresh
            assert [s.reason for s in again.values()] == [s.reason for s in fresh.values()]
        snapshot._DECIDED.clear()
        with State.open(tmp, lock=False) as state:  # a reader: what the last run remembered
            assert snapshot.statuses(after, state) == fresh


def test_new_verdicts_decide_only_their_addresses_again(tmp_path, monkeypatch):
    cfg = _config(())
    with State.open(str(tmp_path)) as state:
        _state_with(str(tmp_path), state, cfg, ADDRESSES, [], [])
        before = snapshot.statuses(cfg, state)
        state.add_verdict(Verdict.of(ADDRESSES[0], "harvester", "manual", {}, NOW))
        snapshot._DECIDED.clear()
        asked = []
        real = snapshot.status_update
        monkeypatch.setattr(snapshot, "status_update",
                            lambda known, snap, changed: asked.append(set(changed)) or
                            real(known, snap, changed))
        monkeypatch.setattr(snapshot, "effective", lambda snap: pytest.fail("decided afresh"))
        after = snapshot.statuses(cfg, state)
    assert asked == [{ADDRESSES[0]}] and after[ADDRESSES[0]].status == Status.HARVESTER
    assert {a: s for a, s in after.items() if a != ADDRESSES[0]} == {
        a: s for a, s in before.items() if a != ADDRESSES[0]}


def test_damaged_remembered_statuses_are_decided_again(tmp_path, caplog):
    cfg = _config(())
    with State.open(str(tmp_path)) as state:
        _state_with(str(tmp_path), state, cfg, ADDRESSES, [(ADDRESSES[1], "clean", "detect", 1)],
                    [])
        good = snapshot.statuses(cfg, state)
        state.conn.execute("UPDATE status_memo SET verdict = '{not json' WHERE address = ?",
                           (ADDRESSES[1],))
        snapshot._DECIDED.clear()  # as the next run: what it reads is the state's
        assert snapshot.statuses(cfg, state) == good
        assert "remembered statuses are damaged" in caplog.text
        assert state.status_memo()[1] == good  # and remembered again, whole


# -- what an admin ran into ------------------------------------------------------------------


def test_manual_clean_beats_an_enforced_list_prefix_everywhere(run_cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[lists]\nbuiltin = false\n")
    listed = tmp_path / "theirs.txt"
    listed.write_text("2600:1:2::/48 harvester\n")
    assert run_cli("list", "import", str(listed), config=cfg).returncode == 0
    mark = run_cli("mark", "2600:1:2:3::1", "clean", "--json", config=cfg)
    assert json.loads(mark.stdout)["status"] == "clean", mark.stdout + mark.stderr
    rows = json.loads(run_cli("servers", "--json", config=cfg).stdout)
    assert [(r["address"], r["status"], r["source"]) for r in rows] == [
        ("2600:1:2:3::1", "clean", "manual")]
    plan = run_cli("rules", "apply", "--dry-run", "--json", "--backend", "nft", config=cfg)
    ruleset = json.loads(plan.stdout)["ruleset"]
    assert "add element inet ntpguard clean6 { 2600:1:2:3::1 }" in ruleset
    # Its neighbour in the listed /48, which nobody vouches for, is a harvester.
    other = json.loads(run_cli("explain", "2600:1:2:3::2", "--json", config=cfg).stdout)
    assert (other["status"], other["decided_by"]) == ("harvester", "list:theirs")


def test_a_server_the_admin_trusts_is_enough_on_a_fresh_state(run_cli, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[lists]\nbuiltin = false\n")
    out = run_cli("mark", "2a01:4f8:2:2::123", "clean", config=cfg)
    assert out.returncode == 0 and "now clean by manual" in out.stdout, out.stdout + out.stderr
    plan = run_cli("rules", "apply", "--dry-run", "--backend", "nft", config=cfg)
    assert plan.returncode == 0, plan.stderr
    assert "add element inet ntpguard clean6 { 2a01:4f8:2:2::123 }" in plan.stdout
    chrony = run_cli("timeconf", "--format", "chrony", config=cfg)
    assert chrony.returncode == 0, chrony.stderr
    assert "server 2a01:4f8:2:2::123 iburst" in chrony.stdout
    # The same from the configuration alone: [servers] trusted.
    cfg.write_text('[lists]\nbuiltin = false\n[servers]\ntrusted = ["2a01:4f8:9::7"]\n')
    assert run_cli("mark", "2a01:4f8:2:2::123", "unknown", config=cfg).returncode == 0
    chrony = run_cli("timeconf", "--format", "chrony", config=cfg)
    assert chrony.stdout.splitlines()[1:] == ["server 2a01:4f8:9::7 iburst"], chrony.stdout
    why = json.loads(run_cli("explain", "2a01:4f8:9::7", "--json", config=cfg).stdout)
    assert (why["status"], why["decided_by"], why["known"]) == ("clean", "trusted", True)
