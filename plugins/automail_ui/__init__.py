"""Automail's mail data management screen (seed 000) as an Airflow 3 UI plugin."""
