"""The `juki` command as a person runs it: `juki run` (what `make run` calls), PKI, a municipal CS, bench."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.export_cmd import CSV_COLUMNS
from server.seed.elsewhere import generate_elsewhere
from server.seed.population import generate
from tests.conftest import free_port

JUKI = [sys.executable, "-m", "clients"]


def juki(
    home: Path, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*JUKI, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUKI_PREFECTURE_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_NATIONAL_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_FUHYO_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_PREFECTURE_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_NATIONAL_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_FUHYO_METRICS_PORT", str(free_port()))
    monkeypatch.setenv("JUKI_NATIONAL_SEED_COUNT", "2000")
    return tmp_path


def test_juki_run_sets_everything_up_and_serves_the_printed_command(home: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*JUKI, "--home", str(home), "run", "--count", "500", "--show-sample"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip() == "ready":
                break
        assert lines and lines[-1].strip() == "ready", "".join(lines)
        command = next(line.strip() for line in lines if "juki" in line and " lookup " in line)
        code = command.split()[-1]
        assert len(code) == 11 and code.isdigit()
        # started with --home: the command to paste carries it (the dev CA of that home)
        assert f"--home {home.resolve()} lookup" in command
        # a second `juki run` here: one line naming the running one, exit 1, nothing started
        second = juki(home, "run", "--count", "500", check=False)
        assert second.returncode == 1, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1 and "already running" in second.stderr
        assert f"pid {proc.pid}" in second.stderr and os.environ["JUKI_PREFECTURE_PORT"] in second.stderr
        assert "ready" not in second.stdout and "Traceback" not in second.stderr
        assert oct((home / "certs/dev/ca.key").stat().st_mode & 0o777) == "0o600"
        assert (home / "var/keys/prefecture.keys.json").exists()
        # the printed command, as pasted (its arguments after `juki`)
        args = command.split()[1:]
        assert Path(command.split()[0]).name == "juki"
        out = juki(home, *args)
        record = json.loads(out.stdout)["record"]
        assert record["residentCode"] == code and len(record["myNumber"]) == 12
        # the README's forwarded provision: a resident of 名古屋市 held by the national server
        elsewhere = next(iter(generate_elsewhere(1))).record.resident_code
        assert elsewhere in (Path(__file__).parents[1] / "README.md").read_text()
        out = juki(home, "provide", "--as", "department/tax", "--purpose", "bt5-tax-vehicle", elsewhere)
        answer = json.loads(out.stdout)
        assert (
            answer["source"] == "RECORD_SOURCE_NATIONAL" and answer["records"][0]["residentCode"] == elsewhere
        )
        status = juki(home, "outbox", "status").stdout
        assert "outbox depth" in status
        # a search's next page by --page-token
        search = ("search", "--as", "operator/op-0001", "--purpose", "identity-check", "--page-size", "1")
        first = json.loads(juki(home, *search, "--address", "三重県", "--sex", "male").stdout)
        token = first["nextPageToken"]
        second = json.loads(
            juki(home, *search, "--address", "三重県", "--sex", "male", "--page-token", token).stdout
        )
        assert first["results"] and second["results"] and first["results"] != second["results"]
        # a provision by 4情報 with --sex
        sex = "male" if record["sex"] == "SEX_MALE" else "female"
        by_four = (
            "--kana",
            record["nameKana"],
            "--birth",
            record["birthDate"],
            "--address",
            record["address"],
        )
        provide = ("provide", "--as", "agency/police", "--purpose", "bt6-police-driving-licence", *by_four)
        found = json.loads(juki(home, *provide, "--sex", sex).stdout)
        assert code in {r["residentCode"] for r in found["records"]}
        other = "female" if sex == "male" else "male"
        refused = juki(home, *provide, "--sex", other, check=False)
        assert code not in refused.stdout
        # 整合: the municipality's view exported from the same seed matches the server
        municipality = "242012"
        view = home / "var" / "view.jsonl"
        juki(
            home, "cs", "export", "--as", f"municipal-cs/{municipality}", "--count", "500", "--out", str(view)
        )
        assert oct(view.stat().st_mode & 0o777) == "0o600" and view.read_text(encoding="utf-8")
        same = juki(home, "cs", "reconcile", "--as", f"municipal-cs/{municipality}", "--file", str(view))
        assert "missing here 0, missing there 0, items differ 0" in same.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_readme_examples_name_residents_that_make_run_seeds() -> None:
    """The README's sample codes exist: Mie's (first 100k of seed 1) and 名古屋市's (national)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    mie = {entry.record.resident_code for entry in generate(100_000, 1)}
    sample = readme.split("bt6-police-driving-licence ")[1].split()[0]
    assert sample in mie
    assert min(mie) == sample  # what `juki run --show-sample` prints: the first code of its store


def test_pki_issue_list_revoke(home: Path) -> None:
    juki(home, "pki", "init")
    juki(home, "pki", "issue", "agency", "fire")
    listing = juki(home, "pki", "list").stdout
    assert "spiffe://juki.mie/agency/fire" in listing and "valid" in listing
    juki(home, "pki", "revoke", "agency/fire")
    assert "REVOKED" in juki(home, "pki", "list").stdout
    refused = juki(home, "pki", "issue", "nobody", "x", check=False)
    assert refused.returncode != 0


def test_bench_lookup_smoke(home: Path) -> None:
    out = juki(home, "pki", "dev")
    out = juki(home, "bench", "lookup", "--calls", "50", "--residents", "300", timeout=180)
    result = json.loads(out.stdout)
    assert result["sequential"]["ping"]["p50_us"] > 0 and result["sequential"]["lookup"]["p50_us"] > 0
    assert result["concurrent"]["lookup_qps"] > 0 and result["residents"] == 300


def test_juki_run_with_a_port_taken_names_the_server_and_never_says_ready(home: Path) -> None:
    """The 附票 server's port is held by another program: `juki run` stops, exit 1, naming that server and
    why (from var/log/fuhyo.log), and never prints "ready"."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(os.environ["JUKI_FUHYO_PORT"])))
        taken.listen()
        result = juki(home, "run", "--count", "300", check=False, timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ready" not in result.stdout.split()
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: the 附票 (fuhyo) server did not start: cannot listen on 127.0.0.1:")
    assert "the port is in use" in error and "var/log/fuhyo.log" in error
    assert "Traceback" not in result.stderr
    # the national server, started first, was stopped again: nothing listens on its port
    assert_nothing_listens(int(os.environ["JUKI_NATIONAL_PORT"]))


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's answer to a mistake: exit 2 and one line on stderr ("Error: …"), no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_every_cli_mistake_is_one_line_saying_what_to_do(home: Path) -> None:
    juki(home, "pki", "dev")
    lookup = ("lookup", "--purpose", "bt6-police-driving-licence", "00000281034")
    error = one_error_line(juki(home, *lookup, "--as", "agency/nobody", check=False))
    assert "no certificate for agency/nobody" in error and "`juki pki issue agency nobody`" in error
    error = one_error_line(juki(home, *lookup, "--as", "police", check=False))
    assert "<role>/<id>" in error and "agency/police" in error
    # an operator registered (`juki admin register-operator op-0003`) but never given a certificate
    search = ("search", "--purpose", "identity-check", "--kana", "さとう", "--sex", "male")
    error = one_error_line(juki(home, *search, "--as", "operator/op-0003", check=False))
    assert "`juki pki issue operator op-0003`" in error
    for unknown in ("agency/nobody", "3f2a", "0xdeadbeef"):
        error = one_error_line(juki(home, "pki", "revoke", unknown, check=False))
        assert f"no certificate {unknown!r} was issued by this CA" in error
    bad = home / "residents.jsonl"
    bad.write_text('{"residentCode": "00000281034"}\n{"residentCode": \n', encoding="utf-8")
    reconcile = ("cs", "reconcile", "--as", "municipal-cs/242012", "--file", str(bad))
    error = one_error_line(juki(home, *reconcile, check=False))
    assert f"{bad}:2: not a juki.v1.ResidentRecord JSON line" in error and "juki cs export" in error
    error = one_error_line(juki(home, "cs", "apply", "--as", "municipal-cs/242012", str(bad), check=False))
    assert f"{bad}:2: not a juki.v1.ChangeNotice JSON line" in error
    error = one_error_line(juki(home, "cs", "export", "--as", "municipal-cs/999999", check=False))
    assert "municipal-cs/<市町村コード>" in error
    # a usage mistake too: one line (not click's usage screen) saying where the help is
    error = one_error_line(juki(home, "lookup", "--purpose", "identity-check", check=False))
    assert error == "Error: Missing option '--as'. (see `juki lookup --help`)"


def test_cs_export_from_a_municipality_csv(home: Path) -> None:
    """`juki cs export --csv`: the municipality's own records as the JSON lines `cs reconcile` reads."""
    header = ",".join(CSV_COLUMNS)
    rows = [
        "12345678901,三重　花子,ミエ　ハナコ,2026-11-01,female,三重県津市広明町13番地,983205673214,"
        "SHUSSEI,2026-11-01,0",
        "12345678902,三重　太郎,ミエ　タロウ,1980-04-02,male,三重県津市丸之内1番地,,TENSHUTSU,2020-03-31,1",
    ]
    assert header == "resident_code,name_kanji,name_kana,birth_date,sex,address,my_number,change_reason," + (
        "change_date,removed"
    )  # as the README and --help say
    source = home / "tsu.csv"
    source.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    out = home / "var" / "tsu.jsonl"
    juki(home, "cs", "export", "--as", "municipal-cs/242012", "--csv", str(source), "--out", str(out))
    first, second = (json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())
    assert first["residentCode"] == "12345678901" and first["municipalityCode"] == "242012"
    assert first["fourInfo"]["sex"] == "SEX_FEMALE" and first["changeReason"] == "CHANGE_REASON_SHUSSEI"
    assert first["myNumber"] == "983205673214" and "deletedFlag" not in first
    assert second["deletedFlag"] is True and second["changeReason"] == "CHANGE_REASON_TENSHUTSU"
    source.write_text(f"{header}\n{rows[0].replace(',female,', ',f,')}\n", encoding="utf-8")
    error = one_error_line(
        juki(home, "cs", "export", "--as", "municipal-cs/242012", "--csv", str(source), check=False)
    )
    assert f"{source}:2: sex 'f': male or female" in error


def test_juki_run_with_its_own_port_taken_stops_the_peers_it_started(home: Path) -> None:
    """The prefectural server (in the `juki run` process) cannot listen: exit 1 naming it, no "ready", and
    the national and 附票 servers it had started are stopped again."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(os.environ["JUKI_PREFECTURE_PORT"])))
        taken.listen()
        result = juki(home, "run", "--count", "300", check=False, timeout=180)
    assert result.returncode == 1 and "ready" not in result.stdout.split()
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: the prefectural server did not start: cannot listen on 127.0.0.1:")
    for peer in ("NATIONAL_PORT", "FUHYO_PORT"):
        assert_nothing_listens(int(os.environ[f"JUKI_{peer}"]))


def assert_nothing_listens(port: int) -> None:
    """Binding succeeds (SO_REUSEADDR: a connection in TIME_WAIT is no listener)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
