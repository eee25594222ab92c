"""The resident's disclosure report (本人確認情報開示, 住基法 30条の32): a self-contained HTML page and the
same page as an A4 PDF, for the resident to hold.

Dates are in JST as a person reads them (2026年12月1日 15:35); each recipient by its display name (the
`[names]` directory of the policy, e.g. 三重県警察本部, never a SPIFFE ID); refusals listed apart from
provisions. Japanese text is UTF-8 with a declared charset and a font stack of fonts installed locally
(IPAex, Noto CJK…; nothing is fetched from the network). Every value is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from juki.v1 import records_pb2

from server.audit.proof_check import inclusion_json_of
from server.domain.codes import MIE_MUNICIPALITIES

JST = dt.timezone(dt.timedelta(hours=9), "JST")
_SEX = {records_pb2.SEX_MALE: "男", records_pb2.SEX_FEMALE: "女"}
_REASON = {
    records_pb2.CHANGE_REASON_TENNYU: "転入",
    records_pb2.CHANGE_REASON_SHUSSEI: "出生",
    records_pb2.CHANGE_REASON_SHOKKEN_KISAI: "職権記載",
    records_pb2.CHANGE_REASON_TENSHUTSU: "転出",
    records_pb2.CHANGE_REASON_SHIBOU: "死亡",
    records_pb2.CHANGE_REASON_SHOKKEN_SHOJO: "職権消除",
    records_pb2.CHANGE_REASON_TENKYO: "転居",
    records_pb2.CHANGE_REASON_SHIMEI_HENKO: "氏名の変更",
    records_pb2.CHANGE_REASON_KOJIN_BANGO_HENKO: "個人番号の変更",
    records_pb2.CHANGE_REASON_SHOKKEN_SHUSEI: "職権修正",
}
_OUTCOME = {
    "OK": "提供しました",
    "PERMISSION_DENIED": "拒否しました（権限なし）",
    "UNAUTHENTICATED": "拒否しました（認証できない証明書）",
    "INVALID_ARGUMENT": "拒否しました（要求の誤り）",
    "FAILED_PRECONDITION": "拒否しました（条件を満たさない）",
    "NOT_FOUND": "該当なし",
    "UNAVAILABLE": "応答できませんでした",
}

_STYLE = """
@page { size: A4; margin: 16mm 15mm; }
body { font-family: "IPAexGothic", "IPAGothic", "Noto Sans CJK JP", "Noto Sans JP", "Hiragino Sans",
       "Yu Gothic", "Meiryo", sans-serif; margin: 2em auto; max-width: 46em; color: #222; line-height: 1.6; }
h1 { font-size: 1.4em; border-bottom: 2px solid #333; }
h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; width: 100%; margin: .6em 0; }
th, td { border: 1px solid #999; padding: .3em .6em; text-align: left; vertical-align: top; }
.record th { background: #f0f0f0; width: 12em; }
.log th { background: #f0f0f0; white-space: nowrap; }
.log td:first-child, .log td:last-child { white-space: nowrap; }
.note { font-size: .9em; color: #555; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  tr { page-break-inside: avoid; }
  .proofs pre { display: none; }
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"


def jst(moment: str | dt.datetime) -> str:
    """An RFC 3339 time (or a datetime) as a person in Japan reads it: 2026年12月1日 15:35 (JST)."""
    when = moment if isinstance(moment, dt.datetime) else dt.datetime.fromisoformat(moment)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    local = when.astimezone(JST)
    return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}"


def japanese_date(value: str) -> str:
    """YYYY-MM-DD as 2023年2月9日 (anything else as it is)."""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return value
    return f"{day.year}年{day.month}月{day.day}日"


def display_names(policy_path: Path | None) -> dict[str, str]:
    """The directory of display names, `[names]` of the policy: "<role>/<id>" or "<role>/*" → name."""
    if policy_path is None:
        text = resources.files("server").joinpath("policy.toml").read_text(encoding="utf-8")
    else:
        text = policy_path.read_text(encoding="utf-8")
    names = tomllib.loads(text).get("names", {})
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def recipient_name(recipient: str, names: dict[str, str]) -> str:
    """Whom a resident reads for a caller: its display name; a municipal CS by its municipality; otherwise
    `<role>/<id>` (never the SPIFFE URI)."""
    if not recipient:
        return "（証明書を確認できない要求元）"
    role, _, ident = recipient.removeprefix("spiffe://").partition("/")[2].partition("/")
    key = f"{role}/{ident}"
    if key in names:
        return names[key]
    if role == "municipal-cs" and ident in MIE_MUNICIPALITIES:
        return MIE_MUNICIPALITIES[ident]
    return names.get(f"{role}/*", key)


def _number(provision: Any) -> str:
    """An entry's number as the page shows it: #seq in the main trail, "w1 #seq" in a worker's."""
    return f"{provision.trail} #{provision.seq}" if provision.trail else f"#{provision.seq}"


def _table(head: tuple[str, ...], rows: list[str]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table class="log"><tr>{header}</tr>\n' + "\n".join(rows) + "</table>"


def render_html(
    disclosure: Any, *, generated_at: dt.datetime, purposes: dict[str, str], names: dict[str, str]
) -> str:
    """`disclosure` is a juki.v1.DiscloseResponse, or a FuhyoDiscloseResponse (a 附票 record: no 個人番号,
    no 異動事由, 国外転出者 marked); `purposes` maps purpose ids to their titles, `names` callers to their
    display names (display_names)."""
    r = disclosure.record
    fuhyo = r.DESCRIPTOR.name == "FuhyoView"
    items = [
        ("住民票コード", r.resident_code),
        ("氏名", r.name_kanji),
        ("氏名（ふりがな）", r.name_kana),
        ("生年月日", japanese_date(r.birth_date)),
        ("性別", _SEX.get(r.sex, "")),
        ("最終住所（国外転出者）" if fuhyo and r.abroad else "住所", r.address),
    ]
    if not fuhyo:
        items += [
            ("個人番号", r.my_number or "（この開示には含みません）"),
            ("異動事由", _REASON.get(r.change_reason, "")),
            ("異動年月日", japanese_date(r.change_date)),
        ]
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    provided: list[str] = []
    refused: list[str] = []
    for p in disclosure.provisions:
        row = _row(
            jst(p.time),
            recipient_name(p.recipient, names),
            purposes.get(p.purpose, p.purpose),
            _OUTCOME.get(p.outcome, p.outcome),
            _number(p),
        )
        (provided if p.outcome == "OK" else refused).append(row)
    head = ("日時", "提供先", "事務（目的）", "結果", "記録番号")
    provisions = _table(head, provided) if provided else "<p>記録された提供・移転はありません。</p>"
    refusals = (
        _table(("日時", "要求元", "事務（目的）", "結果", "記録番号"), refused)
        if refused
        else "<p>拒否した要求はありません。</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="ja">
<head><meta charset="utf-8"><title>本人確認情報開示</title><style>{_STYLE}</style></head>
<body>
<h1>本人確認情報の開示（住民基本台帳法第30条の32）</h1>
<p class="note">三重県知事が保存する本人確認情報と、その提供・移転の記録です。
作成日時: {_e(jst(generated_at))}</p>
<h2>本人確認情報</h2>
<table class="record">
{rows}
</table>
<h2>提供・移転の記録</h2>
{provisions}
<h2>拒否した要求の記録</h2>
<p class="note">あなたの本人確認情報を求められ、県が提供しなかった要求です（権限のない要求元・事務など）。</p>
{refusals}
{_proofs(disclosure)}
<p class="note">提供・移転の記録は7年間保存されます。
内容に誤りがある場合は、お住まいの市町村にお申し出ください。</p>
</body>
</html>
"""


def pdf_unavailable() -> str | None:
    """Why a PDF cannot be written here (no font covering Japanese, no Pango for WeasyPrint), or None."""
    import subprocess

    try:
        fonts = subprocess.run(["fc-list", ":lang=ja", "family"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        fonts = None
    if fonts is None or fonts.returncode != 0 or not fonts.stdout.strip():
        return "no Japanese font installed (Debian: apt-get install fonts-ipaexfont-gothic)"
    _quiet()
    try:
        import weasyprint  # noqa: F401  (loads Pango)
    except (ImportError, OSError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else "unknown"
        return f"WeasyPrint cannot load ({reason}; Debian: apt-get install libpango-1.0-0)"
    return None


def write_pdf(page: str, out: Path) -> None:
    """The page as an A4 PDF (WeasyPrint: local fonts only, nothing fetched)."""
    _quiet()
    from weasyprint import HTML  # imported here: it loads Pango, which no other command needs

    HTML(string=page, base_url=None).write_pdf(out)


def _quiet() -> None:
    """WeasyPrint's progress and fontTools' subsetting notes are not the CLI's output (errors still are)."""
    for chatty in ("weasyprint", "fontTools"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def _proofs(disclosure: Any) -> str:
    """Each record's inclusion proof, as a file `juki audit check-proof` verifies with the public key."""
    notes = {c.trail: c.checkpoint for c in disclosure.checkpoints}
    blocks = []
    for p in disclosure.provisions:
        note = notes.get(p.trail, "")
        if not p.tree_size or not note:
            blocks.append(
                f"<p>記録番号 {_e(_number(p))}: "
                "直近のチェックポイントの後の記録です（数秒後に証明できます）。</p>"
            )
            continue
        proof = inclusion_json_of(
            note.split("\n", 1)[0],
            p.seq - 1,
            p.tree_size,
            list(p.inclusion_proof),
            note,
            entry=p.entry.encode() if p.entry else None,
            leaf=p.leaf_hash,
        )
        summary = f"記録番号 {_e(_number(p))}"
        blocks.append(f"<details><summary>{summary}</summary><pre>{_e(proof)}</pre></details>")
    if not blocks:
        return ""
    return (
        '<div class="proofs"><h2>記録の検証</h2>\n'
        '<p class="note">各記録は監査証跡（Merkle木）に含まれることの証明付きです。証明をファイルに保存し、'
        "県が公開する監査証跡の公開鍵で "
        "<code>juki audit check-proof 証明.json --key 公開鍵</code> を実行すると、"
        "記録が改ざん・削除されていないことを誰でも確かめられます（証人の公開鍵を <code>--witness-key</code> "
        "に渡せば、第三者の証人が確認した時点の記録であることも確かめられます）。"
        "証明は画面版（HTML）に含まれます。</p>\n" + "\n".join(blocks) + "</div>"
    )
