"""One language at a time, following the Airflow UI's (issue 13 item 8).

Airflow 3 keeps the user's choice in localStorage `i18nextLng`; the page (same
origin inside Airflow's iframe) copies it into the `automail_lang` cookie and reloads
once when it differs, so the server renders that language. Without it: `?lang=`,
then the browser's Accept-Language. Japanese or English; anything else is English,
Airflow's own fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

LANGS = ("en", "ja")
COOKIE = "automail_lang"

# key: (English, Japanese)
MESSAGES: dict[str, tuple[str, str]] = {
    "app": ("Mail data", "メール配信データ管理"),
    "history": ("Send history", "配信履歴"),
    "reports": ("Reports", "レポート"),
    "search": ("Search", "検索"),
    "status": ("Status", "ステータス"),
    "all_statuses": ("(all statuses)", "（すべてのステータス）"),
    "kind": ("Mail kind", "メール種別"),
    "all_kinds": ("(all kinds)", "（すべての種別）"),
    "shop": ("Shop", "ショップ"),
    "all_shops": ("(all shops)", "（すべてのショップ）"),
    "to": ("To address", "宛先アドレス"),
    "partial": ("partial match", "部分一致"),
    "sent_from": ("Sent from", "配信日（から）"),
    "sent_to": ("Sent to", "配信日（まで）"),
    "body": ("Body contains", "本文を含む"),
    "per_page": ("Per page", "表示件数"),
    "match": ("{n} mail(s) match · page {page} of {pages}", "{n} 件 · {page} / {pages} ページ"),
    "prev": ("‹ prev", "‹ 前へ"),
    "next": ("next ›", "次へ ›"),
    "export": ("Export CSV", "CSV ダウンロード"),
    "select_on": ("Select all", "すべて選択"),
    "select_off": ("Clear", "選択解除"),
    "bulk_send": ("Bulk send", "一括配信"),
    "delete_selected": ("Delete selected", "選択したメールを削除"),
    "delete_all": ("Delete all {n} matching", "検索結果の {n} 件をすべて削除"),
    "id": ("ID", "ID"),
    "created": ("Created", "作成日時"),
    "subject": ("Subject", "件名"),
    "customer": ("Customer", "お客様"),
    "order": ("Order", "注文番号"),
    "send_col": ("Send", "配信"),
    "cancel_col": ("Cancel", "取消"),
    "copy_col": ("Copy", "コピー"),
    "no_match": ("No mail matches.", "該当するメールはありません。"),
    "copy": ("copy", "コピー"),
    "copy_more": ("copy…", "コピーして再配信…"),
    "other_mails": ("other mails to this address", "この宛先へのほかのメール"),
    "act_send": ("send", "配信"),
    "act_resend": ("resend", "再配信"),
    "act_cancel": ("cancel", "取消"),
    "act_uncancel": ("undo cancel", "取消を戻す"),
    "act_delete": ("delete", "削除"),
    "act_release": ("release", "保留を解除"),
    "viewer_note": (
        "Your role ({role}) can read but not act: actions need role user or above.",
        "あなたのロール（{role}）は閲覧のみです。操作にはロール user 以上が必要です。",
    ),
    "viewer_reason": ("needs role user or above", "ロール user 以上が必要です"),
    "op_reason": ("needs role op or above", "ロール op 以上が必要です"),
    # sending state
    "state": ("Sending", "配信状態"),
    "state_stopped": (
        "The mail server is stopped (mail_server_stopped): nothing is sent, not even by hand.",
        "メールサーバー停止中（mail_server_stopped）：手動を含め一切配信されません。",
    ),
    "state_paused": (
        "automail_send is paused: nothing is sent automatically; send buttons here still send at once.",
        "automail_send は一時停止中：自動配信はされません。この画面の配信ボタンは即時に配信します。",
    ),
    "state_running": (
        "automail_send is running: next send run due {at}.",
        "automail_send 稼働中：次回の配信実行は {at} です。",
    ),
    "state_running_unknown": (
        "automail_send is running (next run not scheduled yet).",
        "automail_send 稼働中（次回実行はまだ予定されていません）。",
    ),
    "state_unknown": (
        "The state of automail_send is not known here ({why}).",
        "automail_send の状態を取得できません（{why}）。",
    ),
    "state_not_parsed": ("Airflow has not parsed it yet", "Airflow がまだ読み込んでいません"),
    "stop_server": ("Stop the mail server", "メールサーバーを停止"),
    "start_server": ("Restart the mail server", "メールサーバーを再開"),
    # confirmation
    "confirm_title": ("Please confirm", "確認してください"),
    "confirm_delete": (
        "Delete {n} mail(s)? Deleted mails are never sent (the row stays, recorded).",
        "{n} 件のメールを削除しますか？削除したメールは配信されません（記録は残ります）。",
    ),
    "confirm_send": (
        "Send {n} mail(s) now? They go to the SMTP server at once.",
        "{n} 件のメールを今すぐ配信しますか？ただちに SMTP サーバーへ送られます。",
    ),
    "confirm_resend": (
        "Resend {n} mail(s) now? The customers receive them again.",
        "{n} 件のメールを今すぐ再配信しますか？お客様に再度届きます。",
    ),
    "confirm_all": (
        "This applies to every mail matching the search: {filter}.",
        "検索条件に一致するすべてのメールが対象です：{filter}",
    ),
    "confirm_yes": ("Yes, {action} {n} mail(s)", "はい、{n} 件を{action}します"),
    "confirm_server": (
        "Turn mail_server_stopped {to}? {effect}",
        "mail_server_stopped を {to} にしますか？{effect}",
    ),
    "effect_stop": (
        "Nothing will be sent (DAGs and buttons) until it is restarted.",
        "再開するまで（DAG もボタンも）一切配信されません。",
    ),
    "effect_start": (
        "Sending resumes: unpaused DAGs and the send buttons send again.",
        "配信を再開します：稼働中の DAG と配信ボタンが再び配信します。",
    ),
    "back": ("Back", "戻る"),
    "done": (
        "{action} by {actor} at {at}: {count} of {requested} mail(s) done",
        "{actor} が {at} に{action}：{requested} 件中 {count} 件完了",
    ),
    "done_sent": (
        "{sent} accepted by the SMTP server, {failed} not",
        "SMTP サーバー受付 {sent} 件、未受付 {failed} 件",
    ),
    "done_refused": ("{n} refused", "{n} 件は実行できませんでした"),
    "staff_action": ("staff action #{id}", "操作記録 #{id}"),
    "server_switched": (
        "mail_server_stopped is now {value} (by {actor} at {at}).",
        "mail_server_stopped を {value} にしました（{actor}、{at}）。",
    ),
    # detail / copy
    "mail": ("Mail {id}", "メール {id}"),
    "created_by": ("by {who}", "作成者 {who}"),
    "sent": ("Sent", "配信日時"),
    "sent_note": (
        "(sent = accepted by the SMTP server, not delivered)",
        "（配信済み＝SMTP サーバーが受け付けたこと。到達ではありません）",
    ),
    "due": ("Due", "配信予定"),
    "mode_device": ("Mode / device", "モード / 端末"),
    "tries": ("Tries", "試行回数"),
    "last_error": ("last error", "直近のエラー"),
    "bounce": ("Bounce", "バウンス"),
    "copy_of": ("Copy of", "コピー元"),
    "copies": ("Copies", "コピー"),
    "headers": ("Headers", "ヘッダー"),
    "text_body": ("Text body", "テキスト本文"),
    "html_body": ("HTML body", "HTML 本文"),
    "no_text": ("No text part", "テキスト部分はありません"),
    "not_rendered": ("(not rendered yet: rendered when sent)", "（未生成：配信時に生成されます）"),
    "tags_note": (
        "Tags with no value show here as written; the mail that is sent leaves them empty.",
        "値のないタグはここでは記述どおり表示され、配信されるメールでは空になります。",
    ),
    "no_html": ("No HTML part.", "HTML 部分はありません。"),
    "attempts": ("Send attempts", "配信試行"),
    "started": ("Started", "開始"),
    "finished": ("Finished", "終了"),
    "outcome": ("Outcome", "結果"),
    "smtp_code": ("SMTP code", "SMTP コード"),
    "enhanced": ("Enhanced", "拡張コード"),
    "message": ("Message", "メッセージ"),
    "never_tried": ("Never tried.", "まだ試行していません。"),
    "bounces": ("Bounces", "バウンス"),
    "received": ("Received", "受信"),
    "recipient": ("Recipient", "受信者"),
    "result": ("Result", "結果"),
    "reason": ("Reason", "理由"),
    "matched_by": ("Matched by", "照合方法"),
    "effect": ("Effect", "影響"),
    "diagnostic": ("Diagnostic", "診断"),
    "no_bounce": ("No bounce received for this mail.", "このメールのバウンスはありません。"),
    "events": ("Status history", "ステータス履歴"),
    "when": ("When", "日時"),
    "event": ("Event", "イベント"),
    "from": ("From", "変更前"),
    "to_status": ("To", "変更後"),
    "by": ("By", "実行者"),
    "detail": ("Detail", "詳細"),
    "no_events": ("No events recorded.", "記録はありません。"),
    "copy_title": ("Copy mail {id}", "メール {id} をコピー"),
    "copy_note": (
        "Only the To address can change. The copy is saved as a new manual mail; the original stays as it is.",
        "変更できるのは宛先だけです。コピーは新しい手動メールとして保存され、元のメールはそのままです。",
    ),
    "save": ("Save", "保存"),
    "save_send": ("Save and send", "保存して配信"),
    "copy_saved": ("Saved as mail {id}.", "メール {id} として保存しました。"),
    "history_title": ("Send history", "配信履歴"),
    "newest": ("Newest", "最新"),
    "show": ("Show", "表示"),
    "history_note": (
        '{n} mail(s), newest try first. "sent" means accepted by the SMTP server.',
        "{n} 件、新しい試行順。「sent」は SMTP サーバーが受け付けたことを表します。",
    ),
    "last_try": ("Last try", "最終試行"),
    "nothing_sent": ("Nothing sent yet.", "まだ配信はありません。"),
    "login": ("Log in to Airflow", "Airflow にログイン"),
    "times_in": ("Times in {zone}", "時刻は {zone}"),
}


def pick(request: Request) -> str:
    for value in (request.query_params.get("lang"), request.cookies.get(COOKIE)):
        if value:
            return "ja" if value.lower().startswith("ja") else "en"
    first = request.headers.get("accept-language", "").split(",")[0].strip().lower()
    return "ja" if first.startswith("ja") else "en"


def translator(lang: str) -> Callable[..., str]:
    index = LANGS.index(lang) if lang in LANGS else 0

    def t(key: str, **values: Any) -> str:
        text = MESSAGES[key][index]
        return text.format(**values) if values else text

    return t
