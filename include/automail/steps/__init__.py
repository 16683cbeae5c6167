"""Step mails (SPEC D1, D2): sequences of mails sent N minutes after a start event."""

from automail.steps.events import START_EVENTS
from automail.steps.runner import StepReport, create_due_step_mails, source_key
from automail.steps.sequences import add_step, create_sequence, parse_offset

__all__ = [
    "START_EVENTS",
    "StepReport",
    "add_step",
    "create_due_step_mails",
    "create_sequence",
    "parse_offset",
    "source_key",
]
