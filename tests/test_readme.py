"""The README as a new user runs it: every command of its ```sh blocks, in order, on a fresh home with
`juki run` serving, the way it is written (from the home, `.venv/bin/juki` being this venv's `juki`).

No command may print a traceback; each exits 0 but the few listed in REFUSED (with the status they must
give); the files they write land under var/ (nothing else appears in the home but certs/). Lines that would
run for minutes are listed in SKIPPED, with the test that covers them.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.disclosure_report import pdf_unavailable
from tests.conftest import free_port

README = Path(__file__).parents[1] / "README.md"
JUKI = Path(sys.executable).parent / "juki"
# What `make run` seeds is 100k residents; the README's sample codes are among the first 8000 (tested in
# test_cli / test_trust_between_servers against the 100k), so 8000 are enough here.
COUNT = 8000
# make run / make test / make bench: this test is part of make test, and juki run is started below
SKIPPED = {
    "juki bench": "benchmarks start their own servers for minutes (tests/test_bench_smoke.py)",
    "-m bench.": "benchmark scripts start their own servers for minutes (bench/)",
    "--home /tmp/juki-2m": "a 2-million-resident seed (tests/test_seed_load.py)",
}


def skipped(command: str) -> bool:
    words = command.split("  #")[0]  # the command, without its comment
    return words.startswith("make ") or any(marker in words for marker in SKIPPED)


REFUSED = {"pki revoke 3f2a…": 2}  # a placeholder serial: one error line, exit 2


def commands(text: str) -> list[str]:
    """The command lines of every ```sh block, in order (continuation lines joined, comments dropped)."""
    found: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        pending = ""
        for raw in block.splitlines():
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1]
                continue
            pending = ""
            if line and not line.startswith("#"):
                found.append(line)
    return found


def test_the_readme_has_its_command_blocks() -> None:
    lines = commands(README.read_text(encoding="utf-8"))
    assert len(lines) > 30 and any("cs export" in line for line in lines)
    assert "../shared" not in README.read_text(encoding="utf-8")  # a clone has no such path


@pytest.fixture()
def ports(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    chosen = {}
    for name, default in (
        ("PREFECTURE_PORT", 50051),
        ("FUHYO_PORT", 50052),
        ("NATIONAL_PORT", 50053),
        ("PREFECTURE_METRICS_PORT", 50061),
        ("FUHYO_METRICS_PORT", 50062),
        ("NATIONAL_METRICS_PORT", 50063),
    ):
        port = free_port()
        monkeypatch.setenv(f"JUKI_{name}", str(port))
        chosen[str(default)] = port
    monkeypatch.setenv("JUKI_NATIONAL_SEED_COUNT", "2000")
    return chosen


def test_every_readme_command_runs_on_a_fresh_home(tmp_path: Path, ports: dict[str, int]) -> None:
    home = tmp_path / "clone"
    home.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [str(JUKI), "run", "--count", str(COUNT)],
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    ran: list[str] = []
    try:
        assert server.stdout is not None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line or line.strip() == "ready":
                break
        assert line.strip() == "ready", "juki run did not get ready"
        for command in commands(README.read_text(encoding="utf-8")):
            if skipped(command):
                continue
            shell = command.replace(".venv/bin/juki", str(JUKI))
            for default, port in ports.items():
                shell = shell.replace(f":{default}/", f":{port}/")
            done = subprocess.run(
                ["bash", "-c", shell], cwd=home, capture_output=True, text=True, env=env, timeout=120
            )
            output = done.stdout + done.stderr
            assert "Traceback" not in output, f"{command}\n{output}"
            expected = next((code for key, code in REFUSED.items() if key in command), 0)
            assert done.returncode == expected, f"{command}\nexit {done.returncode}\n{output[-2000:]}"
            ran.append(command)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    assert len(ran) > 25
    # what the commands wrote is under var/ (and the PKI under certs/): nothing else in the clone's root
    assert {p.name for p in home.iterdir()} <= {"var", "certs"}
    pdf = ("disclosure.pdf",) if pdf_unavailable() is None else ()  # else the HTML only, saying so
    for written in ("notices.jsonl", "disclosure.html", *pdf, "prefecture.jkb", "tsu.jsonl"):
        assert (home / "var" / written).is_file(), written
    for private in ("disclosure.html", *pdf, "tsu.jsonl"):  # they hold My Numbers
        assert oct((home / "var" / private).stat().st_mode & 0o777) == "0o600", private
