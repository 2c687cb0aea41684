"""Firewall backends: nftables (default) and legacy ip6tables via python-iptables."""
