"""Bounce / DSN parsing: classify returned mail as hard, soft or no failure (pure Python)."""

from automail.bounces.codes import classify_smtp
from automail.bounces.model import BounceRecipient, ParsedBounce
from automail.bounces.parser import parse_bounce

__all__ = ["BounceRecipient", "ParsedBounce", "classify_smtp", "parse_bounce"]
