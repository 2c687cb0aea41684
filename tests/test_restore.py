"""The last applied plan and its restore, without root: the persisted plan, the locks a restore
takes (and the one it must not wait for), the watcher's reading of `nft monitor`, and the exit
status of `rules show` / `status` when the rules are missing or drifted. A fake backend stands
in for netfilter; tests/test_reassert_netns.py does the same against the real one."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar, Optional

import pytest
from conftest import lock_held
from hypothesis import given, settings
from hypothesis import strategies as st

from ntpguard import applied, backends, enforce, watch
from ntpguard.backends import DRIFTED, IN_PLACE, MISSING, Check, Result
from ntpguard.backends.nft_verify import from_skeleton, priority_value
from ntpguard.canary import CanaryError
from ntpguard.cli import main
from ntpguard.config import parse
from ntpguard.errors import StateError
from ntpguard.plan import Canaries, Plan, PrefixSet
from ntpguard.prefixes import Networks

ROOT = Path(__file__).resolve().parent.parent


class FakeBackend:
    """A kernel of one plan; `drift` makes verify() see something else."""

    name = "fake"
    held: Optional[Plan] = None
    drift = False
    calls: ClassVar[list[tuple[str, bool]]] = []

    def __init__(self, cache_dir: Optional[str] = None) -> None:
        pass

    @classmethod
    def is_supported(cls) -> bool:
        return True

    @staticmethod
    def render(plan: Plan) -> str:
        return "fake\n"

    def apply(self, plan: Plan, replace: bool = False) -> Result:
        FakeBackend.calls.append(("apply", replace))
        if plan == FakeBackend.held and not replace:  # a cache that cannot see drift
            return Result(self.name, "unchanged")
        FakeBackend.held, FakeBackend.drift = plan, False
        return Result(self.name, "replaced", detail="fake rules")

    def verify(self, plan: Plan) -> Check:
        FakeBackend.calls.append(("verify", False))
        if FakeBackend.held is None:
            return Check(MISSING, "no fake rules")
        if FakeBackend.drift or FakeBackend.held != plan:
            return Check(DRIFTED, "fake drift")
        return Check(IN_PLACE)

    def show(self, full: bool = False) -> str:
        return "fake rules\n" if FakeBackend.held is not None else ""

    def remove(self) -> Result:
        FakeBackend.held = None
        return Result(self.name, "removed", detail="fake rules")


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(backends.REGISTRY, "fake", f"{__name__}:FakeBackend")
    monkeypatch.setattr(backends, "auto_name", lambda: "fake")
    FakeBackend.held, FakeBackend.drift, FakeBackend.calls = None, False, []
    return FakeBackend


CONFIG = parse("[lists]\nbuiltin = true\n", "test.toml")
PLAN = Plan(clean6=("2001:db8:100::1",), clean4=("198.51.100.1",),
            harvesters=(PrefixSet(6, 128, ("2001:db8:100::2",)),),
            scanners=(PrefixSet(6, 64, ("2001:db8:666::",)), PrefixSet(4, 24, ("203.0.113.0",))),
            notes=("a note",))


# -- the persisted plan ----------------------------------------------------------------------

addresses = st.ip_addresses(v=6).map(str)
prefix_sets = st.builds(lambda fam, length, nets: PrefixSet(fam, length, tuple(sorted(nets))),
                        st.just(6), st.integers(32, 128), st.lists(addresses, max_size=4))
plans = st.builds(
    Plan, mode=st.sampled_from(["host", "gateway"]), unknown=st.sampled_from(["block", "allow"]),
    log=st.booleans(), log_rate=st.integers(1, 1000), log_group=st.integers(0, 65535),
    clean4=st.lists(st.ip_addresses(v=4).map(str), max_size=3).map(tuple),
    clean6=st.lists(addresses, max_size=3).map(tuple),
    harvesters=st.lists(prefix_sets, max_size=3).map(tuple),
    scanners=st.lists(prefix_sets, max_size=3).map(tuple), forced=st.booleans(),
    notes=st.lists(st.text(max_size=20), max_size=2).map(tuple),
    canaries=st.none() | st.builds(
        Canaries, mapping=st.lists(st.tuples(addresses, addresses), max_size=3).map(tuple),
        spare=addresses, addresses=st.lists(addresses, max_size=3).map(tuple),
        exempt=st.lists(addresses.map(lambda a: a + "/128"), max_size=2).map(tuple)))


@settings(max_examples=60, deadline=None)
@given(plans)
def test_any_plan_comes_back_as_saved(tmp_path_factory, plan):
    d = str(tmp_path_factory.mktemp("state"))
    applied.save(d, "nft", plan, 1234.5)
    back = applied.load(d)
    assert back == applied.Applied("nft", 1234.5, plan) and back.plan.notes == plan.notes


def test_an_older_file_loads_with_defaults_and_a_newer_one_is_refused(state_dir):
    path = state_dir / applied.PLAN_NAME
    applied.save(str(state_dir), "nft", PLAN, 1.0)
    body = json.loads(path.read_text())
    del body["plan"]["log_burst"]  # written before the field existed
    path.write_text(json.dumps(body))
    assert applied.load(str(state_dir)).plan.log_burst == Plan().log_burst
    body["plan"]["canary_future"] = []
    path.write_text(json.dumps(body))
    with pytest.raises(StateError, match=r"unknown field.*canary_future"):
        applied.load(str(state_dir))


@pytest.mark.parametrize("text, problem", [
    ("{", "unreadable"),
    ('{"format": "other", "version": 1}', "not a version 1"),
    ('{"format": "ntpguard-applied-plan", "version": 1, "backend": "nft", "time": 1, '
     '"plan": {"log": 1}}', "1 is not a bool"),
    ('{"format": "ntpguard-applied-plan", "version": 1, "backend": "nft", "time": 1, '
     '"plan": {"clean6": "2001:db8::1"}}', "not a list"),
    ('{"format": "ntpguard-applied-plan", "version": 1, "backend": "nft", "time": 1, '
     '"plan": {"scanners": [{"family": 6, "length": "64", "networks": []}]}}',
     "not an integer"),
])
def test_a_damaged_file_is_one_clear_error(state_dir, text, problem):
    (state_dir / applied.PLAN_NAME).write_text(text)
    with pytest.raises(StateError, match=problem):
        applied.load(str(state_dir))


def test_an_unchanged_plan_is_not_rewritten(state_dir):
    applied.save(str(state_dir), "nft", PLAN, 1.0)
    before = os.stat(state_dir / applied.PLAN_NAME)
    applied.save(str(state_dir), "nft", PLAN, 2.0)
    after = os.stat(state_dir / applied.PLAN_NAME)
    assert before.st_ino == after.st_ino and applied.load(str(state_dir)).time == 1.0


def _big(first: int) -> Plan:
    """PLAN with a /128 scanner set too big to stay inline (setstore)."""
    nets = Networks.of(6, [(0x2400 << 112) + i for i in range(first, first + 600)])
    return dataclasses.replace(PLAN, scanners=(*PLAN.scanners, PrefixSet(6, 128, nets)))


def test_big_sets_are_files_of_their_own_written_once(state_dir):
    sets = state_dir / "applied-plan.sets"
    applied.save(str(state_dir), "nft", _big(0), 1.0)
    (blob,) = sets.iterdir()
    assert os.path.getsize(state_dir / applied.PLAN_NAME) < 3000
    # Another clean server: the plan file changes, the big set's file is not written again.
    other = dataclasses.replace(_big(0), clean6=("2001:db8:100::9",))
    applied.save(str(state_dir), "nft", other, 2.0)
    assert blob.stat().st_ino == next(sets.iterdir()).stat().st_ino
    assert applied.load(str(state_dir)).plan == other
    applied.save(str(state_dir), "nft", _big(1), 3.0)  # the old set's file is swept
    assert [p.name for p in sets.iterdir()] == [_big(1).scanners[-1].networks.digest()]
    applied.save(str(state_dir), "nft", None, 4.0)
    assert list(sets.iterdir()) == [] and applied.load(str(state_dir)).removed


def test_a_damaged_set_file_is_one_clear_error_and_the_next_save_repairs_it(fake, state_dir):
    applied.save(str(state_dir), "fake", _big(0), 1.0)
    (blob,) = (state_dir / "applied-plan.sets").iterdir()
    blob.write_bytes(blob.read_bytes()[:-16])
    with pytest.raises(StateError, match="damaged"):
        applied.load(str(state_dir))
    done = enforce.restore(CONFIG, str(state_dir))  # at boot: the state's plan instead
    assert done.source == "state" and fake.held is not None
    applied.save(str(state_dir), "fake", _big(0), 2.0)
    assert applied.load(str(state_dir)).plan == _big(0)
    blob.unlink()
    with pytest.raises(StateError, match="No such file"):
        applied.load(str(state_dir))


# -- restore ---------------------------------------------------------------------------------


def test_restore_without_any_plan_applies_the_shipped_lists_and_remembers(fake, state_dir):
    done = enforce.restore(CONFIG, str(state_dir))
    assert done.source == "state" and done.found.state == MISSING and done.changed
    plan = fake.held
    # A new host knows no server: NTP may reach unknown ones, the shipped 2016 lists hold.
    assert plan.unknown == "allow" and not plan.clean6
    assert "2604:a880:800:10::" in {n for s in plan.scanners for n in s.networks}
    assert "2604:a880:400:d0::9:b001" in {n for s in plan.harvesters for n in s.networks}
    assert applied.load(str(state_dir)).plan == plan


def test_restore_puts_back_exactly_the_last_applied_plan(fake, state_dir):
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held, fake.calls = None, []  # an nftables restart: the table is gone
    done = enforce.restore(CONFIG, str(state_dir))
    assert fake.held == PLAN and fake.calls == [("verify", False), ("apply", False)]
    assert done.source == "applied" and "restored" in done.describe()
    fake.drift, fake.calls = True, []  # something changed the rules: rewrite them whole
    enforce.restore(CONFIG, str(state_dir))
    assert fake.calls == [("verify", False), ("apply", True)] and not fake.drift
    fake.calls = []
    done = enforce.restore(CONFIG, str(state_dir))
    assert fake.calls == [("verify", False)] and not done.changed


def test_after_remove_nothing_is_restored_until_the_next_apply(fake, state_dir):
    enforce.apply(str(state_dir), "fake", PLAN)
    enforce.remove(str(state_dir), ["fake"])
    assert fake.held is None
    for from_state in (True, False):
        done = enforce.restore(CONFIG, str(state_dir), from_state=from_state)
        assert fake.held is None and done.source == enforce.REMOVED
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held = None
    enforce.restore(CONFIG, str(state_dir), from_state=False)
    assert fake.held == PLAN


def test_the_watcher_restores_nothing_before_a_first_apply(fake, state_dir):
    done = enforce.restore(CONFIG, str(state_dir), from_state=False)
    assert fake.held is None and fake.calls == [] and "nothing to restore" in done.describe()
    off = parse("[sync]\napply_rules = false\n", "t.toml")
    enforce.restore(off, str(state_dir))
    assert fake.held is None


def test_a_damaged_plan_file_falls_back_to_the_state_at_boot(fake, state_dir, caplog):
    (state_dir / applied.PLAN_NAME).write_text("{")
    done = enforce.restore(CONFIG, str(state_dir))
    assert done.source == "state" and fake.held is not None
    assert "restoring a plan from the state instead" in caplog.text
    assert applied.load(str(state_dir)).plan == fake.held  # and the file is good again


def test_prepare_hooks_run_on_the_plan_before_it_is_applied(fake, state_dir, monkeypatch):
    seen = []

    def hook(config, state_dir_, plan):
        seen.append((fake.held, plan, state_dir_))
        return Plan(clean6=("2001:db8:100::9",))

    monkeypatch.setattr(sys.modules[__name__], "HOOK", hook, raising=False)
    monkeypatch.setattr(enforce, "PREPARE", (f"{__name__}:HOOK",))
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held = None
    enforce.restore(CONFIG, str(state_dir))
    assert seen == [(None, PLAN, str(state_dir))]
    assert fake.held == Plan(clean6=("2001:db8:100::9",))


def test_a_failing_hook_does_not_keep_the_rules_out(fake, state_dir, monkeypatch, caplog):
    def hook(config, state_dir_, plan):
        raise CanaryError("cannot add canary 2001:db8::c to eth0: no such device")

    monkeypatch.setattr(sys.modules[__name__], "BROKEN", hook, raising=False)
    monkeypatch.setattr(enforce, "PREPARE", (f"{__name__}:BROKEN",))
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held = None
    enforce.restore(CONFIG, str(state_dir))
    assert fake.held == PLAN and "no such device" in caplog.text


def test_apply_replaces_rules_that_drifted_under_an_unchanged_plan(fake, state_dir):
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.drift, fake.calls = True, []
    result = enforce.apply(str(state_dir), "fake", PLAN)
    assert fake.calls == [("apply", False), ("verify", False), ("apply", True)]
    assert result.action == "replaced" and "drifted rules (fake drift)" in result.describe()


@contextlib.contextmanager
def rules_lock_held(state_dir, seconds: float):
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from ntpguard import applied\n"
         f"with applied.rules_lock({str(state_dir)!r}, 'holder'):\n"
         f"    print('held', flush=True); time.sleep({seconds})"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.wait()


def test_restore_never_waits_for_a_sync_holding_the_state_lock(fake, state_dir):
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held = None
    with lock_held(state_dir, 3, "ntpguard sync"):
        started = time.monotonic()
        enforce.restore(CONFIG, str(state_dir), from_state=False)
        took = time.monotonic() - started
    assert fake.held == PLAN and took < 1.5, took


def test_restore_waits_for_an_apply_in_progress(fake, state_dir):
    enforce.apply(str(state_dir), "fake", PLAN)
    fake.held = None
    with rules_lock_held(state_dir, 1.5):
        started = time.monotonic()
        enforce.restore(CONFIG, str(state_dir), from_state=False)
        took = time.monotonic() - started
    assert fake.held == PLAN and took > 1.0, took


# -- rules show and status: exit 5 ------------------------------------------------------------


def cli(capsys, state_dir, *args) -> tuple[int, str, str]:
    code = main([*args, "--state-dir", str(state_dir), "--config", os.devnull])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_and_status_exit_5_when_rules_are_missing_or_drifted(fake, state_dir, capsys):
    assert cli(capsys, state_dir, "rules", "show")[0] == 0  # nothing applied: nothing missing
    enforce.apply(str(state_dir), "fake", PLAN)
    code, out, _ = cli(capsys, state_dir, "rules", "show")
    assert code == 0 and out == "fake rules\n"
    code, out, _ = cli(capsys, state_dir, "status")
    assert code == 0 and "rules:   in place (fake, applied " in out
    fake.held = None
    code, out, err = cli(capsys, state_dir, "rules", "show")
    assert code == 5 and "no ntpguard rules in place" in out
    assert err.startswith("ntpguard: the rules applied ") and "are missing: no fake rules" in err
    code, out, _ = cli(capsys, state_dir, "status", "--json")
    rules = json.loads(out)["rules"]
    assert code == 5 and rules["state"] == "missing" and rules["backend"] == "fake"
    enforce.restore(CONFIG, str(state_dir))
    fake.drift = True
    code, out, _ = cli(capsys, state_dir, "status")
    assert code == 5 and "rules:   drifted (fake, applied " in out and "fake drift" in out
    code, out, _ = cli(capsys, state_dir, "rules", "show", "--json")
    assert code == 5 and json.loads(out)["state"] == "drifted"
    enforce.remove(str(state_dir), ["fake"])
    code, out, _ = cli(capsys, state_dir, "status")
    assert code == 0 and "rules:   removed" in out
    assert cli(capsys, state_dir, "rules", "show")[0] == 0


def test_rules_restore_command(fake, state_dir, capsys):
    code, out, _ = cli(capsys, state_dir, "rules", "restore", "--json")
    data = json.loads(out)
    assert code == 0 and data["source"] == "state" and data["found"] == "missing"
    assert data["action"] == "replaced" and fake.held is not None
    code, out, _ = cli(capsys, state_dir, "rules", "restore")
    assert code == 0 and out == "fake: the last applied rules are in place; nothing to restore\n"


# -- the watcher's reading of nft monitor -----------------------------------------------------

# Printed by nft 1.0.6's `nft monitor` for a full apply by ntpguard, `nft flush ruleset`, and
# an unrelated table.
OUR_APPLY = """\
delete table inet ntpguard
add table inet ntpguard
add chain inet ntpguard input { type filter hook input priority filter - 10; policy accept; }
add set inet ntpguard generation { type mark; }
add rule inet ntpguard input ip6 saddr @s drop
add element inet ntpguard s { 2001:db8::1 }
add element inet ntpguard generation { 0x00001234 }"""
FLUSH = """\
delete rule inet ntpguard input handle 4
delete set inet ntpguard generation
delete chain inet ntpguard input
delete table inet ntpguard
delete table ip filter"""
OTHER = """\
add table inet admin
add element inet admin generation { 0x00000001 }"""


@pytest.mark.parametrize("text, foreign", [
    (OUR_APPLY, False),
    (FLUSH, True),
    (OTHER, False),
    ("delete element inet ntpguard scan6_64 { 2604:a880:800:10:: }", True),
    # an update by ntpguard: elements and the token swapped in one transaction
    ("delete element inet ntpguard clean6 { 2001:db8::1 }\n"
     "delete element inet ntpguard generation { 0x00001234 }\n"
     "add element inet ntpguard generation { 0x00005678 }", False),
    ("add rule inet ntpguard output drop", True),
    ("", False),
])
def test_transactions_are_ours_foreign_or_unrelated(text, foreign):
    t = watch.Transaction()
    for line in text.splitlines():
        t.feed(line)
    assert t.foreign is foreign


def test_limiter_allows_a_burst_then_one_a_second():
    lim = watch.Limiter(3, 1.0)
    for now in (100.0, 100.1, 100.2):
        assert lim.wait(now) == 0.0
        lim.note(now)
    assert lim.wait(100.3) == pytest.approx(0.7)  # 0.3 s refilled: 0.7 s to a whole one
    lim.note(101.0)
    assert lim.wait(101.0) == pytest.approx(1.0)  # a fight: one restore a second
    assert lim.wait(110.0) == 0.0 and lim.tokens == 3  # quiet again: a whole burst


def test_watch_stands_down_under_the_iptables_backend(state_dir, monkeypatch):
    said = []
    config = parse('[rules]\nbackend = "iptables"\n', "t.toml")
    assert watch.run(config, str(state_dir), said.append, ready=lambda: None) == 0
    assert "nothing to watch" in said[0]


# -- the nft table's shape --------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("filter - 10", -10), ("filter", 0), ("srcnat", 100), ("mangle + 5", -145), ("-10", -10),
    ("7", 7), ("nonsense", None), ("filter * 2", None)])
def test_priority_value(text, value):
    assert priority_value(text) == value


def test_skeleton_shape_counts_rules_per_chain():
    from ntpguard.backends.nft import rules_for

    shape = from_skeleton(rules_for(Plan(mode="gateway", unknown="allow",
                                         harvesters=PLAN.harvesters)).skeleton)
    chains = {n: (c.hook, c.priority, c.policy, c.rules) for n, c in shape.chains.items()}
    # ntp: clean4, clean6, one harvester set; output: lo, log, probe mark, jump;
    # input: lo, log, established, jump; forward: two logs, jump, established, jump.
    assert chains == {"ntp": (None, None, None, 3), "scanners": (None, None, None, 0),
                      "output": ("output", -10, "accept", 4),
                      "input": ("input", -10, "accept", 4),
                      "forward": ("forward", -10, "accept", 5)}
    assert set(shape.sets) == {"generation", "clean4", "clean6", "harv6_128"}


# What nft 1.0.6 lists (`nft -j list table inet ntpguard`) after applying VERIFY_PLAN.
VERIFY_PLAN = Plan(unknown="allow", log=False, clean6=("2001:db8:100::1",),
                   harvesters=(PrefixSet(6, 48, ("2001:db8:1::",)),),
                   scanners=(PrefixSet(6, 64, ("2001:db8:666::",)),))
LISTED = (
    "{\"nftables\": [{\"metainfo\": {\"version\": \"1.0.6\", \"release_name\": \"Lester Gooch #5"
    "\", \"json_schema_version\": 1}}, {\"table\": {\"family\": \"inet\", \"name\": \"ntpguard\","
    " \"handle\": 2}}, {\"set\": {\"family\": \"inet\", \"name\": \"generation\", \"table\": \"nt"
    "pguard\", \"type\": \"mark\", \"handle\": 5, \"elem\": [4660]}}, {\"set\": {\"family\": \"in"
    "et\", \"name\": \"clean4\", \"table\": \"ntpguard\", \"type\": \"ipv4_addr\", \"handle\": 6}"
    "}, {\"set\": {\"family\": \"inet\", \"name\": \"clean6\", \"table\": \"ntpguard\", \"type\":"
    " \"ipv6_addr\", \"handle\": 7, \"elem\": [\"2001:db8:100::1\"]}}, {\"set\": {\"family\": \"i"
    "net\", \"name\": \"harv6_48\", \"table\": \"ntpguard\", \"type\": \"ipv6_addr\", \"handle\":"
    " 8, \"elem\": [\"2001:db8:1::\"]}}, {\"set\": {\"family\": \"inet\", \"name\": \"scan6_64\","
    " \"table\": \"ntpguard\", \"type\": \"ipv6_addr\", \"handle\": 9, \"elem\": [\"2001:db8:666:"
    ":\"]}}, {\"chain\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"name\": \"ntp\", \"han"
    "dle\": 1}}, {\"chain\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"name\": \"scanners"
    "\", \"handle\": 2}}, {\"chain\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"name\": "
    "\"output\", \"handle\": 3, \"type\": \"filter\", \"hook\": \"output\", \"prio\": -10, \"poli"
    "cy\": \"accept\"}}, {\"chain\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"name\": \""
    "input\", \"handle\": 4, \"type\": \"filter\", \"hook\": \"input\", \"prio\": -10, \"policy\""
    ": \"accept\"}}, {\"rule\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \"ntp"
    "\", \"handle\": 10, \"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"payload\": {\"proto"
    "col\": \"ip\", \"field\": \"daddr\"}}, \"right\": \"@clean4\"}}, {\"return\": null}]}}, {\"r"
    "ule\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \"ntp\", \"handle\": 11, "
    "\"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"payload\": {\"protocol\": \"ip6\", \"fi"
    "eld\": \"daddr\"}}, \"right\": \"@clean6\"}}, {\"return\": null}]}}, {\"rule\": {\"family\":"
    " \"inet\", \"table\": \"ntpguard\", \"chain\": \"ntp\", \"handle\": 12, \"expr\": [{\"match"
    "\": {\"op\": \"==\", \"left\": {\"&\": [{\"payload\": {\"protocol\": \"ip6\", \"field\": \"d"
    "addr\"}}, \"ffff:ffff:ffff::\"]}, \"right\": \"@harv6_48\"}}, {\"counter\": {\"packets\": 0,"
    " \"bytes\": 0}}, {\"reject\": {\"type\": \"icmpx\", \"expr\": \"admin-prohibited\"}}]}}, {\""
    "rule\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \"scanners\", \"handle\":"
    " 13, \"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"&\": [{\"payload\": {\"protocol\":"
    " \"ip6\", \"field\": \"saddr\"}}, \"ffff:ffff:ffff:ffff::\"]}, \"right\": \"@scan6_64\"}}, {"
    "\"counter\": {\"packets\": 0, \"bytes\": 0}}, {\"drop\": null}]}}, {\"rule\": {\"family\": "
    "\"inet\", \"table\": \"ntpguard\", \"chain\": \"output\", \"handle\": 14, \"expr\": [{\"matc"
    "h\": {\"op\": \"==\", \"left\": {\"meta\": {\"key\": \"oifname\"}}, \"right\": \"lo\"}}, {\""
    "return\": null}]}}, {\"rule\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \""
    "output\", \"handle\": 15, \"expr\": [{\"match\": {\"op\": \"==\", \"left\": {\"meta\": {\"ke"
    "y\": \"mark\"}}, \"right\": 1853124711}}, {\"return\": null}]}}, {\"rule\": {\"family\": \"i"
    "net\", \"table\": \"ntpguard\", \"chain\": \"output\", \"handle\": 16, \"expr\": [{\"match\""
    ": {\"op\": \"==\", \"left\": {\"payload\": {\"protocol\": \"udp\", \"field\": \"dport\"}}, "
    "\"right\": 123}}, {\"match\": {\"op\": \"==\", \"left\": {\"ct\": {\"key\": \"direction\"}},"
    " \"right\": \"original\"}}, {\"jump\": {\"target\": \"ntp\"}}]}}, {\"rule\": {\"family\": \""
    "inet\", \"table\": \"ntpguard\", \"chain\": \"input\", \"handle\": 17, \"expr\": [{\"match\""
    ": {\"op\": \"==\", \"left\": {\"meta\": {\"key\": \"iifname\"}}, \"right\": \"lo\"}}, {\"ret"
    "urn\": null}]}}, {\"rule\": {\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \"inp"
    "ut\", \"handle\": 18, \"expr\": [{\"match\": {\"op\": \"in\", \"left\": {\"ct\": {\"key\": "
    "\"state\"}}, \"right\": [\"established\", \"related\"]}}, {\"return\": null}]}}, {\"rule\": "
    "{\"family\": \"inet\", \"table\": \"ntpguard\", \"chain\": \"input\", \"handle\": 19, \"expr"
    "\": [{\"jump\": {\"target\": \"scanners\"}}]}}]}"
)


def _listed(change=None) -> str:
    data = json.loads(LISTED)
    if change:
        change(data["nftables"])
    return json.dumps(data)


def _drop_rule(items, chain):
    items.remove(next(i for i in items if i.get("rule", {}).get("chain") == chain))


def _item(items, kind, name):
    return next(i for i in items if i.get(kind, {}).get("name") == name)


@pytest.mark.parametrize("change, problem", [
    (None, ""),
    (lambda items: _drop_rule(items, "input"), "chain input: 2 rules, not 3"),
    (lambda items: items.append({"rule": {"chain": "output", "expr": []}}),
     "chain output: 4 rules, not 3"),
    (lambda items: _item(items, "chain", "input")["chain"].update(prio=0),
     "chain input: priority 0, not -10"),
    (lambda items: items.append({"chain": {"name": "extra"}}), "chain extra is not ntpguard's"),
    (lambda items: _item(items, "set", "scan6_64")["set"].pop("elem"),
     "set scan6_64: 0 elements, not 1"),
    (lambda items: _item(items, "set", "clean6")["set"].update(elem=["2001:db8:100::2"]),
     "set clean6: other elements than ntpguard's"),
    (lambda items: items.remove(_item(items, "set", "harv6_48")), "set harv6_48 is missing"),
    (lambda items: [items.remove(i) for i in list(items) if i.get("chain", {}).get("name")
                    == "output" or i.get("rule", {}).get("chain") == "output"],
     "chain output is missing"),
])
def test_verify_names_the_first_difference_from_the_plan(change, problem):
    from ntpguard.backends.nft import rules_for
    from ntpguard.backends.nft_verify import compare

    rendered = rules_for(VERIFY_PLAN)
    assert compare(rendered.skeleton, rendered.sets, _listed(change)) == problem
