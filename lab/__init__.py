"""The ntpguard lab: a pool, harvesters, a scanner and protected hosts in network namespaces.

Used by `make demo` and by the root/lab tests. Nothing here is installed with ntpguard.
"""
