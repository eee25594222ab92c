"""SPEC §4.2, §5.3, §5.4: every server trusts another only for what that server is for, every hop minimises,
and no refusal about a record the caller may not see tells whether it exists (issue 11, holes 1–5, 7).

One deployment of real processes (prefectural, 附票 and national servers) with the dev certificates."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from juki.v1 import fuhyo_pb2, national_pb2, national_pb2_grpc, prefecture_pb2, records_pb2

from clients.channel import error_details, secure_channel
from clients.fuhyo_cmds import fuhyo_stub
from server.audit.entries import AuditEvent, canonical, encode_entry, parse_entry
from server.audit.query import query
from server.domain.codes import municipality_check_digit
from server.identity.pki import Pki
from server.seed.elsewhere import generate_elsewhere
from server.seed.fuhyo import generate_fuhyo
from server.seed.population import generate
from tests.conftest import Server, make_server
from tests.notices import FuhyoMunicipality, Municipality, fresh_resident

SEEDED = 500
ELSEWHERE = 40
R, F, N = records_pb2, fuhyo_pb2, national_pb2
TD = "spiffe://juki.mie"
POLICE = ("agency/police", "bt6-police-driving-licence")
SCHOLARSHIP = ("agency/education", "bt6-education-scholarship")
WELFARE = ("department/health", "bt5-health-welfare")
FETCH = "/juki.v1.Prefecture/FetchMyNumber"
KAMEYAMA = "242101"  # its stream at the national server is fed only by this module's direct notifications
AICHI_NAGOYA = "23100" + str(municipality_check_digit("23100"))


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from importlib import resources

    path = tmp_path_factory.mktemp("policy") / "policy.toml"
    path.write_text(resources.files("server").joinpath("policy.toml").read_text(encoding="utf-8"))
    return path


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, pki_dir: Path, policy_file: Path
) -> Iterator[Server]:
    srv = make_server(
        tmp_path_factory.mktemp("trust"), pki_dir, seeded=SEEDED, elsewhere=ELSEWHERE, with_fuhyo=True,
        policy_file=policy_file,
    )  # fmt: skip
    srv.start()
    yield srv
    srv.stop_all()


@pytest.fixture(scope="module")
def residents() -> dict[str, Any]:
    """住民票コード → the seeded resident record (the prefectural server's, My Number included)."""
    return {e.record.resident_code: e.record for e in generate(SEEDED, 1)}


@pytest.fixture(scope="module")
def abroad(residents: dict[str, Any]) -> list[Any]:
    """Residents on the 附票 as living abroad (国外転出者): removed by 転出 at the prefectural server."""
    found = [residents[r.resident_code] for r in generate_fuhyo(SEEDED, 1) if r.state_kind == 2]
    assert len(found) >= 3, "the seed must hold a few 国外転出者"
    return found


def active(residents: dict[str, Any], municipality: str = "") -> Any:
    return next(
        r
        for r in residents.values()
        if not r.deleted_flag and (not municipality or r.municipality_code == municipality)
    )


def refused(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def answer_of(error: grpc.RpcError) -> tuple[Any, Any, Any]:
    """Everything a refused caller sees: status, message and the error details."""
    return error.code(), error.details(), error_details(error)


def seen(error: Any) -> str:
    """Everything a refused caller received: message, headers and trailers (error details included)."""
    return (error.details() or "") + repr(error.trailing_metadata()) + repr(error.initial_metadata())


def national(srv: Server, identity: str) -> Any:
    channel = secure_channel(Pki(srv.settings.pki_path), identity, srv.settings.national_target)
    srv._channels.append(channel)
    return national_pb2_grpc.NationalStub(channel)  # type: ignore[no-untyped-call]


def entries(srv: Server, directory: Path, method: str) -> list[dict[str, Any]]:
    return list(query(srv.settings.path(directory), method=method))


def fetch(srv: Server, code: str, *, requester: str = f"{TD}/agency/police", purpose: str = POLICE[1]) -> Any:
    request = prefecture_pb2.FetchMyNumberRequest(
        resident_code=code, purpose=purpose, requester=requester, request_id="trust-1"
    )
    return srv.stub("fuhyo-server/24").FetchMyNumber(request, timeout=10)


def provide_fuhyo(srv: Server, who: str, purpose: str, code: str, request_id: str) -> Any:
    request = F.FuhyoProvideRequest(
        resident_code=code, purpose=purpose, include_my_number=True, request_id=request_id
    )
    return fuhyo_stub(srv.settings, who).Provide(request, timeout=10)


# --- 1. the national server takes each file only from the server it belongs to --------------------------


def change(file: int, municipality: str, sequence: int = 1) -> tuple[Any, str]:
    """A resident change (a ChangeNotice) or a 附票 change (a FuhyoNotice), as `file` says."""
    code, number = fresh_resident()
    applied = {"applied_at": "2024-05-01T09:00:00+09:00"}
    if file == N.CHANGE_FILE_FUHYO:
        fuhyo = FuhyoMunicipality(municipality, sequence).notice(code, F.FUHYO_CHANGE_KIND_CREATE)
        propagated = N.PropagatedChange(file=file, fuhyo_notice=fuhyo, **applied)
    else:
        notice = Municipality(municipality, sequence).notice(code, R.CHANGE_REASON_SHUSSEI, my_number=number)
        propagated = N.PropagatedChange(file=file, notice=notice, **applied)
    return N.NotifyUpdatesRequest(prefecture_code="24", changes=[propagated]), code


def national_holds(srv: Server, file: int, stream: str, code: str) -> tuple[int, bool]:
    """(last sequence of `stream`, whether `code` is held) in the national file of `file`."""
    fuhyo = file == N.CHANGE_FILE_FUHYO
    store = srv.open_national_fuhyo_reader() if fuhyo else srv.open_national_reader()
    try:
        with store.reader() as tx:
            return tx.last_sequence(stream), tx.get(code) is not None
    finally:
        store.close()


@pytest.mark.parametrize(
    ("identity", "file", "stream"),
    [
        ("fuhyo-server/24", N.CHANGE_FILE_RESIDENT, KAMEYAMA),
        ("prefectural-server/24", N.CHANGE_FILE_FUHYO, KAMEYAMA),
    ],
)
def test_a_record_server_cannot_send_the_other_servers_file(
    deployment: Server, identity: str, file: int, stream: str
) -> None:
    request, code = change(file, KAMEYAMA)
    error = refused(national(deployment, identity).NotifyUpdates, request, timeout=10)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)[2] == "OTHER_FILE"
    assert national_holds(deployment, file, stream, code) == (0, False)  # nothing stored


def test_a_record_server_cannot_send_another_prefectures_municipality(deployment: Server) -> None:
    request, code = change(N.CHANGE_FILE_RESIDENT, AICHI_NAGOYA)
    assert request.prefecture_code == "24"
    error = refused(national(deployment, "prefectural-server/24").NotifyUpdates, request, timeout=10)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert national_holds(deployment, N.CHANGE_FILE_RESIDENT, AICHI_NAGOYA, code) == (0, False)


def test_each_record_server_sends_its_own_file(deployment: Server) -> None:
    resident, code = change(N.CHANGE_FILE_RESIDENT, KAMEYAMA)
    assert national(deployment, "prefectural-server/24").NotifyUpdates(resident, timeout=10).accepted == 1
    assert national_holds(deployment, N.CHANGE_FILE_RESIDENT, KAMEYAMA, code) == (1, True)
    fuhyo, fuhyo_code = change(N.CHANGE_FILE_FUHYO, KAMEYAMA)
    assert national(deployment, "fuhyo-server/24").NotifyUpdates(fuhyo, timeout=10).accepted == 1
    # the 附票全国サーバ file holds it; the resident file does not
    assert national_holds(deployment, N.CHANGE_FILE_FUHYO, KAMEYAMA, fuhyo_code) == (1, True)
    assert national_holds(deployment, N.CHANGE_FILE_RESIDENT, KAMEYAMA, fuhyo_code)[1] is False


# --- 2. the national server minimises too --------------------------------------------------------------


def elsewhere_person(index: int = 2) -> Any:
    return list(generate_elsewhere(index + 1))[index].record


def ask_national(srv: Server, identity: str, purpose: str, **key: Any) -> Any:
    request = N.NationalQueryRequest(purpose=purpose, requester=f"{TD}/agency/police", request_id="q1", **key)
    return national(srv, identity).Query(request, timeout=10)


def test_national_gives_my_number_only_for_a_purpose_that_allows_it(deployment: Server) -> None:
    person = elsewhere_person()
    server = "prefectural-server/24"
    (view,) = ask_national(deployment, server, POLICE[1], resident_code=person.resident_code).records
    assert view.my_number == person.my_number
    for purpose in ("identity-check", "bt6-education-teacher-licence", "bt5-health-statistics"):
        answer = ask_national(deployment, server, purpose, resident_code=person.resident_code)
        assert answer.records[0].resident_code == person.resident_code
        assert person.my_number not in str(answer) and answer.records[0].my_number == ""


def test_the_fuhyo_server_never_gets_a_my_number_from_the_national_server(deployment: Server) -> None:
    person = elsewhere_person(3)
    for purpose in ("bt6-police-driving-licence", "bt5-tax-vehicle"):
        answer = ask_national(deployment, "fuhyo-server/24", purpose, resident_code=person.resident_code)
        assert answer.records[0].resident_code == person.resident_code
        assert person.my_number not in str(answer)
    error = refused(ask_national, deployment, "fuhyo-server/24", POLICE[1], my_number=person.my_number)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert person.resident_code not in seen(error)


def test_national_query_records_the_requester(deployment: Server) -> None:
    person = elsewhere_person(4)
    ask_national(deployment, "prefectural-server/24", POLICE[1], resident_code=person.resident_code)
    s = deployment.settings
    (last,) = entries(deployment, s.national_audit_dir, "/juki.v1.National/Query")[-1:]
    assert last["requester"] == f"{TD}/agency/police" and last["caller"] == f"{TD}/prefectural-server/24"


# --- 3. redelivery: same caller, same purpose (still allowing My Number), within the TTL ------------------


@pytest.mark.parametrize(
    ("who", "purpose", "other_purpose"),
    [(*SCHOLARSHIP, "bt6-education-teacher-licence"), (*WELFARE, "bt5-health-statistics")],
)
def test_redelivery_states_the_purpose_of_the_provision(
    deployment: Server, abroad: list[Any], who: str, purpose: str, other_purpose: str
) -> None:
    person = abroad[0]
    rid = f"redo-{who.split('/')[1]}"
    first = provide_fuhyo(deployment, who, purpose, person.resident_code, rid)
    assert first.my_number == person.my_number
    stub = fuhyo_stub(deployment.settings, who)
    error = refused(stub.Redeliver, F.RedeliverRequest(request_id=rid, purpose=other_purpose), timeout=10)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert person.my_number not in seen(error) and person.resident_code not in seen(error)
    again = stub.Redeliver(F.RedeliverRequest(request_id=rid, purpose=purpose), timeout=10)
    assert again == first
    stub.AckDelivery(F.AckDeliveryRequest(request_id=rid, purpose=purpose), timeout=10)


def test_redelivery_after_a_policy_reload_that_withdraws_my_number_is_refused(
    deployment: Server, abroad: list[Any], policy_file: Path
) -> None:
    person = abroad[1]
    first = provide_fuhyo(deployment, *POLICE, person.resident_code, "reload-1")
    assert first.my_number == person.my_number
    original = policy_file.read_text(encoding="utf-8")
    section = original.index("[purposes.bt6-police-driving-licence]")
    at = original.index("my_number = true", section)
    withdrawn = original[:at] + "my_number = false" + original[at + len("my_number = true") :]
    stub = fuhyo_stub(deployment.settings, POLICE[0])
    request = F.RedeliverRequest(request_id="reload-1", purpose=POLICE[1])
    assert deployment.fuhyo_proc is not None
    try:
        policy_file.write_text(withdrawn)
        deployment.fuhyo_proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                stub.Redeliver(request, timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.PERMISSION_DENIED
                assert person.my_number not in seen(error)
                break
            assert time.monotonic() < deadline, "the reloaded policy was not applied"
            time.sleep(0.1)
    finally:
        policy_file.write_text(original)
        deployment.fuhyo_proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:  # the restored policy allows it again, within the TTL
        try:
            assert stub.Redeliver(request, timeout=10) == first
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the restored policy was not applied"
            time.sleep(0.1)


# --- 4. FetchMyNumber checks the requester and records it ----------------------------------------------


@pytest.mark.parametrize(
    "requester",
    [
        f"{TD}/agency/fire",  # in no grant
        f"{TD}/agency/education",  # not granted the police purpose
        f"{TD}/department/tax",
        "spiffe://other.example/agency/police",  # another deployment's police
    ],
)
def test_fetch_my_number_for_a_requester_not_granted_fuhyo_provide_is_refused(
    deployment: Server, abroad: list[Any], requester: str
) -> None:
    person = abroad[0]
    error = refused(fetch, deployment, person.resident_code, requester=requester)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)[2] == "REQUESTER_NOT_GRANTED"
    assert person.my_number not in seen(error)


def test_fetch_my_number_records_the_requester(deployment: Server, abroad: list[Any]) -> None:
    person = abroad[2]
    assert fetch(deployment, person.resident_code).my_number == person.my_number
    refused(fetch, deployment, person.resident_code, requester=f"{TD}/agency/fire")
    ok, denied = entries(deployment, deployment.settings.audit_dir, FETCH)[-2:]
    assert (ok["outcome"], ok["requester"]) == ("OK", f"{TD}/agency/police")
    assert (denied["outcome"], denied["requester"]) == ("PERMISSION_DENIED", f"{TD}/agency/fire")
    assert ok["caller"] == denied["caller"] == f"{TD}/fuhyo-server/24"


def test_a_requester_entry_is_canonical_and_older_entries_still_parse() -> None:
    event = AuditEvent("c", "fuhyo-server", FETCH, "p", "OK", requester='spiffe://x/agency/"q"')
    _, line = encode_entry(event, 1, "2025-04-01T09:00:00.000000+09:00", "ab" * 32)
    entry = parse_entry(line.encode())
    assert entry is not None and entry["requester"] == 'spiffe://x/agency/"q"'
    assert line == canonical(entry) + "\n"
    _, plain = encode_entry(AuditEvent("c", "agency", FETCH, "p", "OK"), 2, "t", "cd" * 32)
    assert '"requester"' not in plain and parse_entry(plain.encode()) is not None


# --- 5. the link serves only persons on the 附票 who moved abroad ----------------------------------------


def test_the_fuhyo_server_refuses_my_number_for_a_person_not_abroad_before_asking(
    deployment: Server, residents: dict[str, Any]
) -> None:
    person = active(residents)
    s = deployment.settings
    fetches = len(entries(deployment, s.audit_dir, FETCH))
    error = refused(provide_fuhyo, deployment, *POLICE, person.resident_code, "home-1")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and error_details(error)[2] == "NOT_ABROAD"
    assert person.my_number not in seen(error)
    assert len(entries(deployment, s.audit_dir, FETCH)) == fetches  # nothing asked of the prefecture
    gone = refused(
        fuhyo_stub(s, POLICE[0]).Redeliver, F.RedeliverRequest(request_id="home-1", purpose=POLICE[1])
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND  # nothing held in the temporary area
    (last,) = entries(deployment, s.fuhyo_audit_dir, "/juki.v1.Fuhyo/Provide")[-1:]
    assert (last["outcome"], last["caller"]) == ("PERMISSION_DENIED", f"{TD}/agency/police")


def test_the_prefectural_server_refuses_everyone_but_those_removed_by_moving_out_alike(
    deployment: Server, residents: dict[str, Any], abroad: list[Any]
) -> None:
    dead = next(r for r in residents.values() if r.change_reason == R.CHANGE_REASON_SHIBOU)
    living_here, unknown = active(residents), fresh_resident()[0]
    answers = []
    for code in (living_here.resident_code, dead.resident_code, unknown):
        error = refused(fetch, deployment, code)
        assert living_here.my_number not in seen(error) and dead.my_number not in seen(error)
        answers.append(answer_of(error))
    assert answers[0][0] == grpc.StatusCode.PERMISSION_DENIED
    assert answers[0] == answers[1] == answers[2]
    denied = entries(deployment, deployment.settings.audit_dir, FETCH)[-3:]
    assert [e["outcome"] for e in denied] == ["PERMISSION_DENIED"] * 3  # recorded on the prefecture's side
    assert fetch(deployment, abroad[0].resident_code).my_number == abroad[0].my_number


def test_a_refusal_by_the_prefectural_server_is_recorded_on_both_sides(deployment: Server) -> None:
    """The 附票 says abroad, the prefectural server holds nobody under the code: it refuses, and so does the
    附票 server, each in its own trail; nothing is held."""
    code = fresh_resident()[0]
    record = R.FuhyoRecord(
        resident_code=code, name_kanji="附票　次郎", name_kana="フヒョウ　ジロウ", birth_date="1970-02-02",
        sex=R.SEX_MALE, last_address="三重県津市広明町13番地", managing_municipality_code="242012",
        state_kind=2,
    )  # fmt: skip
    notice = F.FuhyoNotice(
        managing_municipality_code="242012", sequence=1, kind=F.FUHYO_CHANGE_KIND_CREATE,
        change_date="2024-01-01", record=record,
    )  # fmt: skip
    fuhyo_stub(deployment.settings, "municipal-cs/242012").ApplyUpdate(F.FuhyoApplyRequest(notice=notice))
    s = deployment.settings
    error = refused(provide_fuhyo, deployment, *POLICE, code, "both-1")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    (theirs,) = entries(deployment, s.audit_dir, FETCH)[-1:]
    (ours,) = entries(deployment, s.fuhyo_audit_dir, "/juki.v1.Fuhyo/Provide")[-1:]
    assert theirs["outcome"] == ours["outcome"] == "PERMISSION_DENIED"
    assert theirs["requester"] == ours["caller"] == f"{TD}/agency/police"
    assert theirs["subjects"] and ours["subjects"] and "my_number" not in theirs["items"] + ours["items"]
    gone = refused(
        fuhyo_stub(s, POLICE[0]).Redeliver, F.RedeliverRequest(request_id="both-1", purpose=POLICE[1])
    )
    assert gone.code() == grpc.StatusCode.NOT_FOUND


# --- 7. no refusal tells whether a record the caller may not see exists ---------------------------------


def test_a_change_for_another_municipalitys_resident_is_answered_as_for_an_unknown_code(
    deployment: Server, residents: dict[str, Any]
) -> None:
    tsu_resident = active(residents, "242012")
    town = Municipality("242021", 1)
    stub = deployment.stub("municipal-cs/242021")
    answers = []
    for reason in (R.CHANGE_REASON_TENKYO, R.CHANGE_REASON_SHIBOU):
        for code in (tsu_resident.resident_code, fresh_resident()[0]):
            notice = town.notice(
                code, reason, my_number=tsu_resident.my_number, address="三重県四日市市1番地"
            )
            town.next_sequence = notice.sequence  # a refused notice does not consume its sequence
            error = refused(stub.ApplyUpdate, prefecture_pb2.ApplyUpdateRequest(notice=notice), timeout=10)
            answers.append(answer_of(error))
    assert answers[0] == answers[1] and answers[2] == answers[3]
    assert answers[0][0] == grpc.StatusCode.NOT_FOUND


def test_a_fuhyo_change_for_another_municipalitys_record_is_answered_as_for_an_unknown_code(
    deployment: Server,
) -> None:
    tsu = next(r for r in generate_fuhyo(SEEDED, 1) if r.managing_municipality_code == "242012")
    stub = fuhyo_stub(deployment.settings, "municipal-cs/242021")
    answers = []
    for kind in (F.FUHYO_CHANGE_KIND_MODIFY, F.FUHYO_CHANGE_KIND_REMOVE):
        for code in (tsu.resident_code, fresh_resident()[0]):
            record = R.FuhyoRecord()
            record.CopyFrom(tsu)
            record.resident_code, record.managing_municipality_code = code, "242021"
            notice = F.FuhyoNotice(
                managing_municipality_code="242021", sequence=1, kind=kind, change_date="2024-01-01",
                record=record,
            )  # fmt: skip
            error = refused(stub.ApplyUpdate, F.FuhyoApplyRequest(notice=notice), timeout=10)
            answers.append(answer_of(error))
    assert answers[0] == answers[1] == answers[2] == answers[3]
    assert answers[0][0] == grpc.StatusCode.NOT_FOUND


def test_another_callers_request_id_is_answered_as_an_unknown_one(
    deployment: Server, abroad: list[Any]
) -> None:
    person = abroad[1]
    provide_fuhyo(deployment, *POLICE, person.resident_code, "theirs-1")
    tax = fuhyo_stub(deployment.settings, "department/tax")
    for call, message in ((tax.Redeliver, F.RedeliverRequest), (tax.AckDelivery, F.AckDeliveryRequest)):
        theirs = refused(call, message(request_id="theirs-1", purpose="bt5-tax-vehicle"), timeout=10)
        unknown = refused(call, message(request_id="nobody-1", purpose="bt5-tax-vehicle"), timeout=10)
        assert answer_of(theirs) == answer_of(unknown)
        assert theirs.code() == grpc.StatusCode.NOT_FOUND and person.my_number not in seen(theirs)
    # … and another caller's id is no obstacle to one's own request under the same id
    mine = provide_fuhyo(deployment, "department/tax", "bt5-tax-vehicle", person.resident_code, "theirs-1")
    assert mine.my_number == person.my_number
    police = fuhyo_stub(deployment.settings, POLICE[0])
    still = police.Redeliver(F.RedeliverRequest(request_id="theirs-1", purpose=POLICE[1]), timeout=10)
    assert still.my_number == person.my_number


def test_lookup_and_provide_by_a_my_number_without_a_my_number_purpose_tell_nothing(
    deployment: Server, residents: dict[str, Any]
) -> None:
    held = active(residents).my_number
    unknown = fresh_resident()[1]
    operator = deployment.stub("operator/op-0001")
    education = deployment.stub("agency/education")
    for call, make in (
        (operator.Lookup, lambda n: prefecture_pb2.LookupRequest(purpose="identity-check", my_number=n)),
        (
            education.Provide,
            lambda n: prefecture_pb2.ProvideRequest(purpose="bt6-education-teacher-licence", my_number=n),
        ),
    ):
        one, two = (refused(call, make(n), timeout=10) for n in (held, unknown))
        assert answer_of(one) == answer_of(two) and one.code() == grpc.StatusCode.PERMISSION_DENIED


def test_reconcile_answers_another_municipalitys_resident_as_an_unknown_code(
    deployment: Server, residents: dict[str, Any]
) -> None:
    tsu_resident = active(residents, "242012")
    every_range = [prefecture_pb2.RangeDigest(prefix=str(d), digest=b"x") for d in range(10)]
    differences = []
    for code in (tsu_resident.resident_code, fresh_resident()[0]):
        record = R.ResidentRecord()
        record.CopyFrom(tsu_resident)
        record.resident_code, record.municipality_code = code, "242021"
        ranges = prefecture_pb2.ReconcileRanges(
            municipality_code="242021", prefix_length=1, ranges=every_range
        )
        requests = [
            prefecture_pb2.ReconcileRequest(ranges=ranges),
            prefecture_pb2.ReconcileRequest(record=record),
        ]
        answers = list(deployment.stub("municipal-cs/242021").Reconcile(iter(requests), timeout=30))
        differences.append(
            [
                (a.difference.kind, list(a.difference.items))
                for a in answers
                if a.WhichOneof("part") == "difference"
            ]
        )
    assert differences[0] == differences[1]
    assert [kind for kind, _ in differences[0]].count(prefecture_pb2.DIFFERENCE_KIND_MISSING_HERE) == 1


def test_the_readme_sample_for_the_link_is_a_person_abroad() -> None:
    """What `make run` seeds (100k residents of seed 1): the README's 附票 sample moved abroad."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    sample = readme.split("--fuhyo ")[1].split()[0]
    person = next(r for r in generate_fuhyo(100_000, 1) if r.resident_code == sample)
    assert person.state_kind == 2
