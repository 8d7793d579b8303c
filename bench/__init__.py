"""Benchmarks for xidwatch; each prints its figure beside the peer it is compared with.

``python -m bench`` runs every benchmark module here in turn (each has a ``main()``);
``python -m bench.parse_rate`` or ``python -m bench.xid_latency`` runs one. Timings are
printed, never asserted: the figures are medians over repeated runs with their min and max,
because a small shared machine is noisy. Nothing here writes outside a temporary directory.

- :mod:`bench.parse_rate`: kmsg records/s through the reader and XID parser, beside a
  naive regex-on-every-record parser and ``grep -c Xid``.
- :mod:`bench.xid_latency`: kmsg write -> SQLite commit latency of the real daemon at a
  steady rate (beside a naive commit-per-event writer), and 50,000-event storms.
- :mod:`bench.ingest`, :mod:`bench.query`, :mod:`bench.overhead`, :mod:`bench.mcp_latency`:
  the store, the daemon's cost and MCP over HTTP (see docs/performance.md).
- :mod:`bench.gateway_fanout`: a fleet XID summary through ``xidwatch gateway`` over 200
  lightweight node endpoints (:mod:`bench._fake_nodes`), 10 % of them silent.
"""
