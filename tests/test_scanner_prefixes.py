"""Scanners learned from detection: the sources of scans that a harvester explains."""

from __future__ import annotations

from loggen import SCANNER_NET, Scenario, Truth, generate

from ntpguard import config, evidence
from ntpguard.plan import HostFacts, scanner_prefixes
from ntpguard.state import State


def test_scanners_of_harvester_scans_are_learned(tmp_path, state_dir):
    truth = Truth()
    log = tmp_path / "kern.log"
    log.write_text("\n".join(generate(Scenario(hosts=2, servers=30, harvesters=3,
                                               unrelated_scans_per_day=3), 4, truth)) + "\n")
    with State.open(str(state_dir)) as st:
        evidence.ingest(st, [str(log)], config.Detect())
        scans = st.scans()
        learned = scanner_prefixes(scans, truth.harvesters, HostFacts())
        assert [str(e.prefix) for e in learned] == [f"{SCANNER_NET}/64"]
        assert "scan of" in learned[0].source
        # No harvester known: no scan is explained, nothing is learned.
        assert scanner_prefixes(scans, set(), HostFacts()) == []
        # Never a prefix that holds this host's own address.
        mine = HostFacts(addresses=(f"{SCANNER_NET}1",))
        assert scanner_prefixes(scans, truth.harvesters, mine) == []
