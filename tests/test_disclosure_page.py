"""The 開示 page a resident holds: JST dates as a person reads them, recipients by name (the policy's
directory of display names, never a SPIFFE ID), refusals listed apart, and an A4 PDF whose first page,
rendered to an image, is not blank and carries the Japanese text (a font that covers it, no network)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from juki.v1 import prefecture_pb2, records_pb2

from clients.disclosure_report import (
    display_names,
    jst,
    pdf_unavailable,
    recipient_name,
    render_html,
    write_pdf,
)
from server.identity.policy import Policy

GENERATED = dt.datetime(2026, 12, 1, 6, 35, 40, tzinfo=dt.UTC)  # 15:35 in Japan


def disclosure() -> prefecture_pb2.DiscloseResponse:
    response = prefecture_pb2.DiscloseResponse(
        record=records_pb2.ResidentView(
            resident_code="00000281034",
            name_kanji="鈴木　正雄",
            name_kana="スズキ　マサオ",
            birth_date="2023-02-09",
            sex=records_pb2.SEX_MALE,
            address="三重県紀北町紀伊長島区長島389番地",
            my_number="983205673214",
            change_reason=records_pb2.CHANGE_REASON_SHUSSEI,
            change_date="2023-02-09",
        )
    )
    for seq, (time, caller, purpose, outcome) in enumerate(
        (
            ("2026-12-01T06:35:12.345Z", "agency/police", "bt6-police-driving-licence", "OK"),
            ("2026-11-30T23:59:00+00:00", "department/tax", "bt5-tax-vehicle", "OK"),
            ("2026-12-01T01:02:03Z", "agency/education", "bt5-tax-vehicle", "PERMISSION_DENIED"),
            ("2026-12-01T01:05:00Z", "agency/fire", "bt5-tax-vehicle", "UNAUTHENTICATED"),
        ),
        1,
    ):
        response.provisions.add(
            time=time, recipient=f"spiffe://juki.mie/{caller}", purpose=purpose, outcome=outcome, seq=seq
        )
    return response


def page() -> str:
    titles = {pid: p.title for pid, p in Policy.load(None).purposes.items()}
    return render_html(disclosure(), generated_at=GENERATED, purposes=titles, names=display_names(None))


def test_times_are_jst_as_a_person_reads_them() -> None:
    assert jst("2026-12-01T06:35:12.345Z") == "2026年12月1日 15:35"
    assert jst("2026-11-30T23:59:00+00:00") == "2026年12月1日 08:59"  # the next day in Japan
    assert jst(GENERATED) == "2026年12月1日 15:35"


def test_recipients_by_their_display_names_from_the_policy() -> None:
    names = display_names(None)
    assert recipient_name("spiffe://juki.mie/agency/police", names) == "三重県警察本部"
    assert recipient_name("spiffe://juki.mie/operator/op-0002", names) == "三重県 本人確認情報担当窓口"
    assert recipient_name("spiffe://juki.mie/municipal-cs/242012", names) == "津市"
    assert recipient_name("spiffe://juki.mie/agency/fire", names) == "agency/fire"  # no name: role/id


def test_the_page_lists_provisions_and_refusals_apart_without_spiffe_ids() -> None:
    html = page()
    assert "spiffe://" not in html and "T06:35" not in html
    provided, refused = html.split("<h2>提供・移転の記録</h2>")[1].split("<h2>拒否した要求の記録</h2>")
    assert "2026年12月1日 15:35" in provided and "三重県警察本部" in provided and "運転免許" in provided
    assert "2026年12月1日 08:59" in provided and "三重県総務部税務企画課" in provided
    assert "三重県教育委員会" not in provided and "三重県教育委員会" in refused
    assert "拒否しました（権限なし）" in refused and "agency/fire" in refused
    assert "2023年2月9日" in html and "作成日時: 2026年12月1日 15:35" in html
    assert "size: A4" in html


@pytest.mark.skipif(pdf_unavailable() is not None, reason=f"no PDF here: {pdf_unavailable()}")
def test_the_pdf_is_a4_and_its_first_page_shows_the_japanese_text(tmp_path: Path) -> None:
    import pypdfium2

    out = tmp_path / "disclosure.pdf"
    write_pdf(page(), out)
    pdf = pypdfium2.PdfDocument(out)
    try:
        first = pdf[0]
        width, height = first.get_size()
        assert abs(width - 595.3) < 1 and abs(height - 841.9) < 1  # A4 in points
        text = first.get_textpage().get_text_range()
        for words in ("本人確認情報の開示", "鈴木", "三重県警察本部", "2026年12月1日 15:35", "拒否"):
            assert words in text, words
        image = first.render(scale=1).to_pil().convert("L")
        image.save(tmp_path / "page-1.png")
        dark = sum(image.histogram()[:128])
        assert dark > 0.01 * image.width * image.height  # text and table rules, not a blank page
    finally:
        pdf.close()
