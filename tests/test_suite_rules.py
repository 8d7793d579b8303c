"""Rules the suite keeps about itself: tests wait on events, never on the clock."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).parent
POLLING_HELPERS = {TESTS / "waiting.py"}  # the one place that may sleep between checks
MARKER = "# sleep-under-test:"  # then why: the sleep itself is what the test is about
CLOCKS = {"time", "asyncio", "anyio", "trio"}


def _sleeps(tree: ast.Module) -> Iterator[ast.Call]:
    """Every call of a clock's ``sleep``: ``time.sleep(...)``, or ``sleep(...)`` imported."""
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in CLOCKS
        for alias in node.names
        if alias.name == "sleep"
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "sleep"
            and isinstance(f.value, ast.Name)
            and f.value.id in CLOCKS
        ) or (isinstance(f, ast.Name) and f.id in imported):
            yield node


def _yields_only(call: ast.Call) -> bool:
    """``sleep(0)``: hands the event loop to other tasks; it waits for no time at all."""
    return [ast.dump(a) for a in call.args] == [ast.dump(ast.Constant(0))] and not call.keywords


def _marked(line: str) -> bool:
    _, found, why = line.partition(MARKER)
    return bool(found and why.strip())


def clock_waits(path: Path, root: Path = TESTS.parent) -> list[str]:
    """``path:line`` of each sleep in ``path`` that waits for something instead of an event."""
    source = path.read_text()
    lines = source.splitlines()
    return [
        f"{path.relative_to(root)}:{call.lineno}: {lines[call.lineno - 1].strip()}"
        for call in sorted(_sleeps(ast.parse(source)), key=lambda c: c.lineno)
        if not _yields_only(call) and not _marked(lines[call.lineno - 1])
    ]


def test_no_test_sleeps_to_wait_for_something_to_happen() -> None:
    found = [
        where
        for path in sorted(TESTS.rglob("*.py"))
        if path not in POLLING_HELPERS
        for where in clock_waits(path)
    ]
    assert found == [], (
        "wait on an event, a store count or a log record (tests/waiting.py: wait_until, "
        f"wait_until_async), or mark a sleep that is itself under test with '{MARKER} why':\n"
        + "\n".join(found)
    )


def test_the_rule_finds_every_spelling_of_a_sleep_and_spares_yields_and_marked_ones(
    tmp_path: Path,
) -> None:
    module = tmp_path / "test_example.py"
    module.write_text(
        "import asyncio, time\n"
        "from time import sleep as nap\n"
        "async def test() -> None:\n"
        "    time.sleep(0.5)\n"
        "    await asyncio.sleep(0.05)\n"
        "    nap(1)\n"
        "    await asyncio.sleep(0)\n"
        "    time.sleep(2)  # sleep-under-test: the timeout is what is tested\n"
        "    time.sleep(2)  # sleep-under-test:\n"
        "    clock.sleep(3)\n"
    )
    lines = [where.split(":")[1] for where in clock_waits(module, tmp_path)]
    assert lines == ["4", "5", "6", "9"]
