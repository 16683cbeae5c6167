"""Transactional mail creation: switches, windows, sources and the run itself."""

from automail.creation.create import CreationReport, create_transactional
from automail.creation.switches import set_kind, shop_by_code

__all__ = ["CreationReport", "create_transactional", "set_kind", "shop_by_code"]
