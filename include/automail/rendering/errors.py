"""Errors of the template area: all are ValueError/LookupError so the CLI prints them plainly."""

from __future__ import annotations


class TemplateError(ValueError):
    """A template that cannot be saved: names the field, the line and the problem."""

    def __init__(self, field: str, line: int | None, problem: str) -> None:
        where = f"{field}: line {line}" if line else field
        super().__init__(f"{where}: {problem}")
        self.field = field
        self.line = line
        self.problem = problem


class TemplateNotFound(LookupError):
    """No template fits a (shop, kind, device, stage, carrier) slot, not even a default."""

    def __init__(
        self, shop_id: int | None, kind: str, device: str, stage: int, carrier: str
    ) -> None:
        super().__init__(
            f"no template for shop {shop_id}, kind {kind!r}, device {device!r}, "
            f"stage {stage}, carrier {carrier!r}: neither the shop nor the common default "
            "has one (run `automail templates install-defaults` or `automail templates set`)"
        )
        self.shop_id = shop_id
        self.kind = kind
        self.device = device
        self.stage = stage
        self.carrier = carrier


class RenderError(ValueError):
    """A stored template failed while rendering one mail (e.g. the sandbox refused it)."""
