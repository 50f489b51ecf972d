"""Staging: several hosts (network namespaces on one machine, or real hosts) from one inventory."""
