"""The alert rules in a real Prometheus, scraping the real daemon: an XID in the kernel log pages.

A Prometheus server (Debian's ``prometheus``) on a loopback port loads alerts/xidwatch.rules.yml
unchanged and scrapes ``xidwatch run`` on simulated GPUs every second. The test writes XID
lines into the kernel log file the daemon tails and waits for the alerts that have ``for: 0m``
to fire: XidwatchGpuFellOffBus for an XID 79, XidwatchFatalXid for an XID 95 (RESET_GPU).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.daemons import DaemonProcess
from tests.prometheus_server import api, query, requires_prometheus, start_prometheus, wait_for

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "alerts" / "xidwatch.rules.yml"

# GPU 0 and 1 of `--simulate 2` sit on PCI buses 0x18 and 0x3b (watcher/sim/fleet.py).
XID_79 = (
    "Nov 25 10:00:00 node kernel: NVRM: Xid (PCI:0000:18:00): 79, pid=1234, name=python3, "
    "GPU has fallen off the bus.\n"
)
XID_95 = (
    "Nov 25 10:00:01 node kernel: NVRM: Xid (PCI:0000:3b:00): 95, pid=1235, name=python3, "
    "Uncontained: FBHUB. RST: Yes, D-RST: No\n"
)

pytestmark = [pytest.mark.slow, requires_prometheus]


def test_an_xid_in_the_kernel_log_fires_the_alerts_in_a_real_prometheus(tmp_path: Path) -> None:
    kern_log = tmp_path / "kern.log"
    kern_log.touch()
    with ExitStack() as stack:
        server = start_prometheus(stack, tmp_path, rule_files=[RULES])
        prometheus = server.url
        args = ["--simulate", "2", "--sample-interval", "1", "--no-kmsg"]
        args += ["--log-file", str(kern_log), "--log-file-from-start"]
        daemon = DaemonProcess(tmp_path, args)
        stack.callback(daemon.stop)
        server.scrape(f"{daemon.host}:{daemon.port}")

        wait_for(
            lambda: query(prometheus, 'xidwatch_start_time_seconds{job="xidwatch"}'),
            "Prometheus scraping the daemon",
            prometheus,
        )
        with kern_log.open("a") as f:
            f.write(XID_79 + XID_95)

        def firing() -> dict[str, dict[str, str]] | None:
            alerts = {
                a["labels"]["alertname"]: a["labels"]
                for a in api(prometheus, "/api/v1/alerts")["alerts"]
                if a["state"] == "firing"
            }
            wanted = {"XidwatchGpuFellOffBus", "XidwatchFatalXid"}
            return alerts if wanted <= alerts.keys() else None

        alerts = wait_for(firing, "XidwatchGpuFellOffBus and XidwatchFatalXid", prometheus)

    off_bus = alerts["XidwatchGpuFellOffBus"]
    assert (off_bus["pci_bus_id"], off_bus["severity"]) == ("00000000:18:00.0", "critical")
    fatal = alerts["XidwatchFatalXid"]
    assert (fatal["xid"], fatal["action"], fatal["pci_bus_id"]) == (
        "95",
        "RESET_GPU",
        "00000000:3B:00.0",
    )
