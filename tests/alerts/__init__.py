"""Tests of the Prometheus alert rules in alerts/ (promtool, and a real Prometheus)."""
