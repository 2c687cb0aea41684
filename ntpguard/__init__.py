"""ntpguard: keep NTP pool harvesters from leaking privacy addresses to scanners."""

__version__ = "0.1.0"
