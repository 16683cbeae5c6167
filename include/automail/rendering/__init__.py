"""Mail templates and rendering (A5, A6, F4): tags, sandboxed Jinja, resolution, defaults.

Public API:
- `TAGS`, `FIELDS`, `CARRIER_NAMES`: what a template may use (tag table for the UI).
- `validate_template`, `TemplateError`: save-time checks naming field and line.
- `resolve_template`, `save_template`, `reset_to_default`, `list_templates`,
  `TemplateNotFound`: the per-shop / per-device / per-stage / per-carrier slots.
- `install_default_templates`: the common defaults.
- `Renderer`, `RenderedMail`, `rerender_mail`, `preview`, `preview_mail`: rendering mails.
"""

from automail.rendering.defaults import DEFAULT_TEMPLATES, install_default_templates
from automail.rendering.environment import compile_template, validate_template
from automail.rendering.errors import RenderError, TemplateError, TemplateNotFound
from automail.rendering.render import (
    RenderedMail,
    Renderer,
    preview,
    preview_mail,
    rerender_mail,
    slot_for,
)
from automail.rendering.resolve import (
    list_templates,
    reset_to_default,
    resolve_template,
    save_template,
    stage_for,
)
from automail.rendering.tags import CARRIER_NAMES, FIELDS, TAGS, Tag

__all__ = [
    "CARRIER_NAMES",
    "DEFAULT_TEMPLATES",
    "FIELDS",
    "TAGS",
    "RenderError",
    "RenderedMail",
    "Renderer",
    "Tag",
    "TemplateError",
    "TemplateNotFound",
    "compile_template",
    "install_default_templates",
    "list_templates",
    "preview",
    "preview_mail",
    "rerender_mail",
    "reset_to_default",
    "resolve_template",
    "save_template",
    "slot_for",
    "stage_for",
    "validate_template",
]
