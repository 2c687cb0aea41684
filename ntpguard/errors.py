"""One exception family, so the CLI can turn every expected failure into one line."""

from __future__ import annotations


class NtpguardError(Exception):
    """An expected failure with a message a sysadmin can act on.

    `exit_code` is what the CLI exits with (see README, "Exit codes").
    """

    exit_code = 1


class UsageError(NtpguardError):
    """Bad input from the user: arguments, config, addresses, lists, logs."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file that cannot be used; names the file and the key."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = path, key, problem


class LockBusy(NtpguardError):
    """Another ntpguard run holds the state lock."""

    exit_code = 3


class StateError(NtpguardError):
    """The state database cannot be opened, migrated or written."""


class FirewallError(NtpguardError):
    """The firewall could not be changed; the previous ruleset is still in place."""


class UnsafePathError(UsageError):
    """A file or directory ntpguard will not use: a symbolic link, not a regular file, too
    big, or changeable by a user other than root or the one running ntpguard. The message
    names the path and what is wrong; the admin fixes it, so it is bad input (exit 2)."""
