"""`ntpguard rules` from the command line, without root: --dry-run and refusals change nothing."""

from __future__ import annotations

import time

from ntpguard.state import State
from ntpguard.status import Verdict


def seed(state_dir, clean=True):
    now = time.time()
    with State.open(str(state_dir)) as st:
        st.record_answer("2.debian.pool.ntp.org", "AAAA",
                         [("2001:db8:100::1", 6)] if clean else [], now)
        st.record_answer("2.debian.pool.ntp.org", "A", [("198.51.100.2", 4)], now)
        st.add_verdict(Verdict.of("198.51.100.2", "harvester", "manual", {}, now))


def config(tmp_path, text=""):
    path = tmp_path / "c.toml"
    path.write_text("[lists]\nbuiltin = true\nallow_nonglobal = true\n" + text)
    return path


def test_dry_run_prints_plan_and_exact_nft_ruleset(run_cli, state_dir, tmp_path):
    seed(state_dir)
    out = run_cli("rules", "apply", "--dry-run", "--backend", "nft", config=config(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "# usable servers: 1 IPv6, 0 IPv4" in out.stdout
    assert "table inet ntpguard {" in out.stdout
    assert "add element inet ntpguard clean6 { 2001:db8:100::1 }" in out.stdout
    # The shipped scanner list (Shodan's scan6 /64) is in force by default.
    assert "add element inet ntpguard scan6_64 { 2604:a880:800:10:: }" in out.stdout


def test_dry_run_iptables_needs_no_python_iptables(run_cli, state_dir, tmp_path):
    seed(state_dir)
    out = run_cli("rules", "apply", "--dry-run", "--backend", "iptables",
                  config=config(tmp_path, '[rules]\nmode = "gateway"\n'))
    assert out.returncode == 0, out.stderr
    assert "-A NTPGUARD-FWD -p udp -m udp --dport 123 -j REJECT" in out.stdout
    assert "add ntpguard-clean6 2001:db8:100::1" in out.stdout


def test_no_clean_server_refused_exit_1(run_cli, state_dir, tmp_path):
    seed(state_dir, clean=False)
    out = run_cli("rules", "apply", "--dry-run", "--backend", "nft", config=config(tmp_path))
    assert out.returncode == 1
    assert out.stderr.startswith("ntpguard: no usable NTP server is known")
    assert out.stderr.count("\n") == 1
    forced = run_cli("rules", "apply", "--dry-run", "--force", "--backend", "nft",
                     config=config(tmp_path))
    assert forced.returncode == 0 and "# note: forced" in forced.stdout


def test_bad_rules_config_is_usage_error(run_cli, state_dir, tmp_path):
    out = run_cli("rules", "apply", "--dry-run", config=config(tmp_path, "[rules]\nlog_rate = 0\n"))
    assert out.returncode == 2
    assert "rules.log_rate: must be greater than 0" in out.stderr
