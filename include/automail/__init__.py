"""Automail: an online shop's automatic mail, as a plain-Python domain package for Airflow."""
