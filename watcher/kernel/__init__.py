"""The kernel side: /dev/kmsg, kernel log files, captures and replay, the XID parser, the catalog.

Imports neither NVML nor Kubernetes (an import-linter contract).
"""
