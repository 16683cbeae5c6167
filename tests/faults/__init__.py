"""Fault-injection suite (issue 8): kills, concurrent runs, SMTP outage, hostile input."""
