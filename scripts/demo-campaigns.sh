#!/usr/bin/env bash
# Demo part 4 (called by scripts/demo.sh with its log dir): one newsletter through the
# automail_campaigns DAG to the local SMTP sink, and one step sequence through
# automail_step_mails. Expects scripts/env.sh sourced and the demo data seeded.
set -euo pipefail
LOGS=${1:-var/demo/logs}
now() { date -u +%Y-%m-%dT%H:%M:00+00:00; }
quiet() { local log="$LOGS/$1.log"; shift; "$@" >"$log" 2>&1 || { tail -40 "$log" >&2; exit 1; }; }

echo "-- the 3-minute rule (C1): a newsletter 1 minute ahead is refused"
automail campaigns create --shop tea --name too-soon --subject x --body x --format text \
  --at "$(date -u -d '1 minute' +%Y-%m-%dT%H:%M:%S+00:00)" || true

echo "-- a newsletter for tomorrow, then cancelled (C6: allowed until 30 minutes before)"
automail campaigns create --shop tea --name "明日のお知らせ" --subject "[TENPO_NAME] 明日" \
  --body "[CUSTOMER_NAME] 様" --format text --at "$(date -u -d '1 day' +%Y-%m-%dT%H:%M:%S+00:00)"
tomorrow=$(automail campaigns list --shop tea | head -1 | cut -f1)
automail campaigns cancel "$tomorrow"

echo "-- a newsletter to Tokyo customers that was scheduled an hour ago for 6 minutes ago"
python - <<'PY'
from datetime import UTC, datetime, timedelta
from sqlalchemy import select
from automail.campaigns import create_campaign
from automail.db import session_scope
from automail.models import Shop
now = datetime.now(UTC)
with session_scope() as s:
    shop = s.scalar(select(Shop).where(Shop.code == "tea"))
    c = create_campaign(
        s, shop_id=shop.id, name="新茶のご案内", subject="[TENPO_NAME] 新茶が入荷しました",
        body="[CUSTOMER_NAME] 様\n\n今年の新茶が入荷しました。\nクーポン: <#クーポンURL>\n",
        body_format="text", scheduled_at=now - timedelta(minutes=6),
        audience_filter={"prefectures": ["東京都"]}, now=now - timedelta(hours=1), actor="demo",
    )
    print(f"campaign {c.id} scheduled (filter: 東京都)")
PY
campaign=$(automail campaigns list --shop tea | grep 新茶 | head -1 | cut -f1)
automail campaigns audience "$campaign"
quiet campaigns-dag airflow dags test automail_campaigns "$(now)"
echo "-- released by automail_campaigns; automail_send (the one send path) sends it"
quiet campaigns-send airflow dags test automail_send "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
quiet campaigns-dag-count airflow dags test automail_campaigns "$(date -u -d '1 minute' +%Y-%m-%dT%H:%M:00+00:00)"
automail campaigns show "$campaign"
automail campaigns quota --shop tea

echo "-- a step sequence: welcome mail 10 minutes and 1 day after sign-up"
automail steps create --shop tea --name "ようこそ" --event signup \
  --starts-from "$(date -u -d '3 days ago' +%Y-%m-%dT%H:%M:%S+00:00)"
seq_id=$(automail steps list | tail -1 | cut -f1)
automail steps add-step "$seq_id" --offset 10m --subject "[TENPO_NAME]へようこそ" --body "[CUSTOMER_NAME] 様、ご登録ありがとうございます。"
automail steps add-step "$seq_id" --offset 1d --subject "人気の商品のご紹介" --body "[CUSTOMER_NAME] 様"
quiet steps-dag airflow dags test automail_step_mails "$(now)"
quiet steps-dag-rerun airflow dags test automail_step_mails "$(now)"
automail steps list
