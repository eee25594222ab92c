"""The resident's disclosure report (本人確認情報開示, 住基法 30条の32) as a self-contained HTML page.

Japanese text is UTF-8 with a declared charset and a font stack that renders kana and kanji in any browser
or when printed to PDF. Every value is escaped.
"""

from __future__ import annotations

import html
from typing import Any

from juki.v1 import records_pb2

from server.audit.proof_check import inclusion_json_of

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
body { font-family: "Noto Sans CJK JP", "Noto Sans JP", "Hiragino Sans", "Yu Gothic", "Meiryo", sans-serif;
       margin: 2em auto; max-width: 46em; color: #222; line-height: 1.6; }
h1 { font-size: 1.4em; border-bottom: 2px solid #333; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { border: 1px solid #999; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; width: 12em; }
.note { font-size: .9em; color: #555; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _row(*cells: object) -> str:
    return "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"


def render_html(disclosure: Any, *, generated_at: str, purposes: dict[str, str]) -> str:
    """`disclosure` is a juki.v1.DiscloseResponse, or a FuhyoDiscloseResponse (a 附票 record: no 個人番号,
    no 異動事由, 国外転出者 marked); `purposes` maps purpose ids to their titles."""
    r = disclosure.record
    fuhyo = r.DESCRIPTOR.name == "FuhyoView"
    items = [
        ("住民票コード", r.resident_code),
        ("氏名", r.name_kanji),
        ("氏名（ふりがな）", r.name_kana),
        ("生年月日", r.birth_date),
        ("性別", _SEX.get(r.sex, "")),
        ("最終住所（国外転出者）" if fuhyo and r.abroad else "住所", r.address),
    ]
    if not fuhyo:
        items += [
            ("個人番号", r.my_number or "（この開示には含みません）"),
            ("異動事由", _REASON.get(r.change_reason, "")),
            ("異動年月日", r.change_date),
        ]
    rows = "\n".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items)
    if disclosure.provisions:
        provided = "\n".join(
            _row(
                p.time,
                p.recipient,
                purposes.get(p.purpose, p.purpose),
                _OUTCOME.get(p.outcome, p.outcome),
                f"{p.trail or '-'} #{p.seq}",
            )
            for p in disclosure.provisions
        )
        provisions = (
            "<table><tr><th>日時</th><th>提供先（要求元）</th><th>事務（目的）</th><th>結果</th><th>記録番号</th></tr>\n"
            f"{provided}</table>"
        )
    else:
        provisions = "<p>記録された提供・移転・拒否はありません。</p>"
    return f"""<!DOCTYPE html>
<html lang="ja">
<head><meta charset="utf-8"><title>本人確認情報開示</title><style>{_STYLE}</style></head>
<body>
<h1>本人確認情報の開示（住民基本台帳法第30条の32）</h1>
<p class="note">三重県知事が保存する本人確認情報と、その提供・移転の記録です。作成日時: {_e(generated_at)}</p>
<h2>本人確認情報</h2>
<table>
{rows}
</table>
<h2>提供・移転の記録（拒否を含む）</h2>
{provisions}
{_proofs(disclosure)}
<p class="note">提供・移転の記録は7年間保存されます。
内容に誤りがある場合は、お住まいの市町村にお申し出ください。</p>
</body>
</html>
"""


def _proofs(disclosure: Any) -> str:
    """Each record's inclusion proof, as a file `juki audit check-proof` verifies with the public key."""
    notes = {c.trail: c.checkpoint for c in disclosure.checkpoints}
    blocks = []
    for p in disclosure.provisions:
        note = notes.get(p.trail, "")
        if not p.tree_size or not note:
            blocks.append(
                f"<p>記録番号 {_e(p.trail or '-')} #{p.seq}: "
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
        summary = f"記録番号 {_e(p.trail or '-')} #{p.seq}"
        blocks.append(f"<details><summary>{summary}</summary><pre>{_e(proof)}</pre></details>")
    if not blocks:
        return ""
    return (
        "<h2>記録の検証</h2>\n"
        '<p class="note">各記録は監査証跡（Merkle木）に含まれることの証明付きです。証明をファイルに保存し、'
        "県が公開する監査証跡の公開鍵で "
        "<code>juki audit check-proof 証明.json --key 公開鍵</code> を実行すると、"
        "記録が改ざん・削除されていないことを誰でも確かめられます（証人の公開鍵を <code>--witness-key</code> "
        "に渡せば、第三者の証人が確認した時点の記録であることも確かめられます）。</p>\n" + "\n".join(blocks)
    )
