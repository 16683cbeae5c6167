"""Mail data management (seed 000, SPEC B2–B5, A9): search, detail, staff actions,
send history and CSV export, shared by the Airflow UI plugin and `automail mails`.

Plain Python over the mail store: no Airflow import, so the CLI and tests use it as is.
"""
