"""The sandboxed Jinja environments, template compilation (cached) and save-time checks.

Text bodies and subjects are rendered unescaped; HTML bodies autoescape, so customer
data such as `<script>` in a name comes out as `&lt;script&gt;` (F4). Both run in
Jinja's immutable sandbox: no attribute escapes (`''.__class__`), no mutation of the
values handed in, no loading of other templates. Unknown fields are StrictUndefined
and are caught by `validate_template` before a template is stored.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from automail.rendering.context import Item, Sources, build_context
from automail.rendering.errors import RenderError, TemplateError
from automail.rendering.formatting import br, jst_date, jst_datetime, yen
from automail.rendering.limits import MAX_SOURCE_CHARS, LimitedSandbox
from automail.rendering.samples import empty_sources, sample_sources
from automail.rendering.tags import (
    BY_TAG,
    FIELDS,
    TAG_LIKE,
    is_tag_token,
    to_jinja,
    to_preview_jinja,
)


def placeholder(value: Any, literal: str) -> Any:
    """Preview (A6): an empty value shows the tag as the shop wrote it."""
    return literal if value is None or value == "" else value


_ITEM_FIELDS = frozenset(Item._fields)


class MailEnvironment(LimitedSandbox, ImmutableSandboxedEnvironment):
    """The immutable sandbox with resource limits (limits.py), and a fast path for our
    own read-only order-line tuples."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is Item and attribute in _ITEM_FIELDS:  # plain values, safe to read
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)


def _make_env(html: bool) -> MailEnvironment:
    env = MailEnvironment(
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(yen=yen, jst_date=jst_date, jst_datetime=jst_datetime)
    env.filters["br"] = br if html else (lambda v: v)
    env.globals["_ph"] = placeholder
    return env


TEXT_ENV = _make_env(html=False)
HTML_ENV = _make_env(html=True)
_BASE_GLOBALS = dict(TEXT_ENV.globals)
# Globals a template may use besides FIELDS (range, namespace, ...), not our internals.
JINJA_GLOBALS = frozenset(n for n in TEXT_ENV.globals if not n.startswith("_"))


@dataclass(frozen=True)
class CompiledTemplate:
    """Subject and bodies compiled for one mode (sent or preview) and the fields they use."""

    subject: Template
    body_text: Template | None
    body_html: Template | None
    fields: tuple[str, ...]

    def render(self, src: Sources, preview: bool) -> tuple[str, str | None, str | None]:
        values = build_context(self.fields, src, preview)
        # Preview parts carry their own `_lits` globals: the plain (slower) path.
        run = _render_plain if preview else _render_shared
        if not preview:
            values = {**_BASE_GLOBALS, **values}
        field = "subject"
        try:
            subject = run(self.subject, values)
            field = "body_text"
            text = None if self.body_text is None else run(self.body_text, values)
            field = "body_html"
            html = None if self.body_html is None else run(self.body_html, values)
        except Exception as exc:  # sandbox refusal or limit, type errors in expressions
            raise RenderError(f"{field}: template failed to render: {exc}") from exc
        # A subject is one header line (F4): values cannot smuggle line breaks into it.
        if "\n" in subject or "\r" in subject:
            subject = " ".join(subject.split())
        return subject.strip(), text, html


def _render_plain(template: Template, values: dict[str, Any]) -> str:
    return template.render(values)


def _render_shared(template: Template, values: dict[str, Any]) -> str:
    """Template.render without copying globals+values into a new dict for each part.

    `values` already holds the environment globals; Jinja never writes to a shared
    parent (template-level `{% set %}` goes to the context's own vars).
    """
    env = template.environment
    ctx = env.context_class(env, values, template.name, template.blocks, None)
    try:
        return env.concat(template.root_render_func(ctx))
    except Exception:
        env.handle_exception()  # re-raises with template line numbers
        raise


def _compile_part(source: str, html: bool, preview: bool) -> tuple[Template, set[str]]:
    env = HTML_ENV if html else TEXT_ENV
    if preview:
        jinja_source, literals = to_preview_jinja(source, html=html)
        template = env.from_string(jinja_source, globals={"_lits": literals})
    else:
        jinja_source = to_jinja(source, html=html)
        template = env.from_string(jinja_source)
    names = meta.find_undeclared_variables(env.parse(jinja_source))
    return template, {n for n in names if n not in env.globals and not n.startswith("_")}


@lru_cache(maxsize=1024)
def compile_template(
    subject: str, body_text: str | None, body_html: str | None, preview: bool = False
) -> CompiledTemplate:
    """Compile once per distinct source (str hashes are cached, so lookups are cheap)."""
    subject_t, fields = _compile_part(subject, False, preview)
    text_t = html_t = None
    if body_text:
        text_t, more = _compile_part(body_text, False, preview)
        fields |= more
    if body_html:
        html_t, more = _compile_part(body_html, True, preview)
        fields |= more
    return CompiledTemplate(subject_t, text_t, html_t, tuple(sorted(fields)))


# --- save-time validation ------------------------------------------------------------

_LOADERS = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)


def _line_of(source: str, offset: int) -> int:
    return source.count("\n", 0, offset) + 1


def _template_line(tb: TracebackType | None) -> int | None:
    """The template line of a render error: Jinja maps template frames to '<template>'."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _check_tags(field: str, source: str) -> None:
    for m in TAG_LIKE.finditer(source):
        token = m.group(0)
        if token in BY_TAG or not is_tag_token(token):
            continue
        near = difflib.get_close_matches(token, BY_TAG, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise TemplateError(
            field,
            _line_of(source, m.start()),
            f"unknown tag {token}{hint}; `automail templates tags` lists the known tags",
        )


def _check_part(field: str, source: str, html: bool, allowed: set[str]) -> None:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(
            field, None, f"too long: {len(source):,} characters (limit {MAX_SOURCE_CHARS:,})"
        )
    _check_tags(field, source)
    env = HTML_ENV if html else TEXT_ENV
    jinja_source = to_jinja(source, html=html)
    try:
        ast = env.parse(jinja_source)
    except TemplateSyntaxError as exc:
        raise TemplateError(field, exc.lineno, f"syntax error: {exc.message}") from None
    except ValueError as exc:  # e.g. an integer literal of more than 4,300 digits
        raise TemplateError(field, None, f"syntax error: {exc}") from None
    for node in ast.find_all(_LOADERS):
        raise TemplateError(
            field,
            node.lineno,
            "disallowed construct: templates cannot extend, include or import other templates",
        )
    for ref in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Name)):
        if isinstance(ref, nodes.Getattr):
            name = ref.attr
        elif isinstance(ref, nodes.Getitem):
            name = ref.arg.value if isinstance(ref.arg, nodes.Const) else ""
        elif isinstance(ref, nodes.Name):
            name = ref.name
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            raise TemplateError(
                field,
                ref.lineno,
                f"disallowed construct: {name!r} (names starting with '_' are not accessible)",
            )
    unknown = meta.find_undeclared_variables(ast) - allowed
    if unknown:
        first = min(
            (n for n in ast.find_all(nodes.Name) if n.name in unknown and n.ctx == "load"),
            key=lambda n: n.lineno,
        )
        near = difflib.get_close_matches(first.name, sorted(allowed), n=1)
        hint = f" (did you mean {{{{ {near[0]} }}}}?)" if near else ""
        raise TemplateError(
            field,
            first.lineno,
            f"unknown tag {{{{ {first.name} }}}}{hint}; "
            "`automail templates tags` lists the known tags and fields",
        )


def validate_template(
    subject: str | None,
    body_text: str | None,
    body_html: str | None,
    *,
    extra_fields: Iterable[str] = (),
) -> None:
    """Raise TemplateError (field, line, problem) unless the template can be stored.

    Checks: subject present and one line; a text or HTML body present; known tags only;
    Jinja syntax; no disallowed constructs; and a dry render on sample data and on empty
    data in both modes, which catches expression errors the parser cannot see.
    """
    if subject is None or not subject.strip():
        raise TemplateError("subject", None, "a subject is required")
    if "\n" in subject.strip() or "\r" in subject.strip():
        line = _line_of(subject.strip(), subject.strip().find("\n")) + 1
        raise TemplateError("subject", line, "a subject is one line; remove the line break")
    if not (body_text and body_text.strip()) and not (body_html and body_html.strip()):
        raise TemplateError("body_text", None, "a text body or an HTML body is required")
    allowed = set(FIELDS) | set(extra_fields) | JINJA_GLOBALS
    parts = [("subject", subject, False), ("body_text", body_text, False)]
    parts.append(("body_html", body_html, True))
    for field, source, html in parts:
        if source:
            with _nesting_guard(field):
                _check_part(field, source, html, allowed)
    for field, source, html in parts:
        if not source:
            continue
        with _nesting_guard(field):
            _dry_render(field, source, html, allowed)


def _dry_render(field: str, source: str, html: bool, allowed: set[str]) -> None:
    for preview in (False, True):
        compiled = _compile_part(source, html, preview)[0]
        for src in (sample_sources(), empty_sources()):
            try:
                compiled.render(build_context(sorted(allowed - JINJA_GLOBALS), src, preview))
            except RecursionError:
                raise
            except Exception as exc:
                raise TemplateError(
                    field, _template_line(exc.__traceback__), f"cannot render: {exc}"
                ) from None


@contextmanager
def _nesting_guard(field: str) -> Iterator[None]:
    """Jinja's parser and compiler recurse once per nesting level: a hostile or broken
    template (thousands of nested blocks or parentheses) must be refused like any other
    bad template, not crash the caller with RecursionError."""
    try:
        yield
    except RecursionError:
        raise TemplateError(
            field, None, "nested too deeply (blocks or parentheses); simplify the template"
        ) from None
