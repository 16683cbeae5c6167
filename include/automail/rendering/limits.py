"""Resource limits of the template sandbox: no template may make a render slow or huge.

Jinja's sandbox stops attribute escapes but not arithmetic: `{{ "a"*10**9 }}` (folded
at compile time!), `'a'|center(10**9)`, nested `range()` loops or a macro that calls
itself twice all pass it. `LimitedSandbox` bounds every way a template can make work:

- operators that amplify (`*`, `**`, `%`, `+`) are intercepted: checked before they
  run (size of the result from the operands) and charged after;
- every builtin filter, and every call (methods such as `.center()`, `.format()`,
  globals such as `lipsum`, macros, recursive loops), is estimated first where its
  arguments can blow the result up, then charged its input and output size;
- loops charge one step per iteration (plus their body's literal text); `range` is
  capped; output expressions that can repeat or hold computed values are charged;
- the joined output of a part is capped (literal text outside loops is bounded by the
  template's size, which is checked when it is saved).

Charges accumulate per render of one part (in the Jinja Context), so many small
amplifications add up like one big one. Limits are far above any real mail (a few
KB, a few hundred order lines). Compile-time constant folding never runs an
intercepted operator or a wrapped filter, so compiling a template is always cheap.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import SandboxedEnvironment, SecurityError
from jinja2.visitor import NodeTransformer
from markupsafe import Markup

MAX_WORK = 2_000_000  # characters/items computed or output per render of one part
MAX_STEPS = 10_000  # loop iterations and calls per render of one part
MAX_ITEMS = 10_000  # items of a list/tuple/dict a template computes
MAX_INT_BITS = 8_192  # integers stay small (str() of a huge int is quadratic)
MAX_SECONDS = 2.0  # safety net; the counters above stop every known shape far earlier
MAX_SOURCE_CHARS = 1_000_000  # a template part; checked when a template is saved
MAX_OUTPUT_CHARS = MAX_SOURCE_CHARS + MAX_WORK  # literal text plus what was computed

# Our own filters (formatting.py, the campaigns' br) are linear in their input.
LINEAR_FILTERS = frozenset({"yen", "jst_date", "jst_datetime", "br", "e", "escape"})


class TemplateLimitError(SecurityError):
    """A template tried to compute or output more than a mail may hold."""

    def __init__(self, what: str, limit: float) -> None:
        super().__init__(
            f"exceeds a rendering limit: {what} (limit {limit:,}); simplify the template"
        )


def size(value: Any, limit: int = MAX_WORK) -> int:
    """What `value` costs to build or print: its length, summed over containers."""
    kind = type(value)
    if kind is str or kind is Markup:
        return len(value)
    if kind is int:
        return value.bit_length() // 3 + 1  # ~ decimal digits
    if kind in (list, tuple, set, frozenset, dict):
        if len(value) > MAX_ITEMS:  # also keeps this walk short
            return limit + 1
        total = len(value)
        for item in value.items() if kind is dict else value:
            total += len(item) if type(item) is str else size(item, limit)
            if total > limit:
                break
        return total
    if kind is range:
        return len(value)
    return 1


class BudgetContext(Context):
    """The render's context, also holding what the render has spent so far."""

    _work = 0
    _steps = 0
    _calls = 0
    _started = 0.0

    def charge(self, work: int, steps: int = 0) -> None:
        self._work += work
        self._steps += steps
        self._calls += 1
        if self._work > MAX_WORK:
            raise TemplateLimitError("computes or outputs too much text", MAX_WORK)
        if self._steps > MAX_STEPS:
            raise TemplateLimitError("too many loop iterations or calls", MAX_STEPS)
        if self._calls & 255 == 1:
            now = time.monotonic()
            if not self._started:
                self._started = now
            elif now - self._started > MAX_SECONDS:
                raise TemplateLimitError("takes too long to render (seconds)", MAX_SECONDS)

    def room(self) -> int:
        return MAX_WORK - self._work


def _refuse_over(ctx: BudgetContext, what: str, estimate: float) -> None:
    if estimate > ctx.room():
        raise TemplateLimitError(what, MAX_WORK)


# --- estimates made before an operation runs ---------------------------------------

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")


def _percent_widths(fmt: str) -> int:
    """Largest width/precision in a printf-style format (`*` takes it from an argument,
    and arguments are checked on their own)."""
    widest = 0
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for part in (width, precision):
            if part and part != "*":
                widest = max(widest, int(part) if len(part) < 12 else MAX_WORK + 1)
    return widest


def _format_widths(fmt: str) -> int:
    """Largest number in the format specs of a str.format template."""
    widest = 0
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return 0  # str.format raises the same error itself
    for _literal, _name, spec, _conv in fields:
        for digits in _DIGITS.findall(spec or ""):
            widest = max(widest, int(digits) if len(digits) < 12 else MAX_WORK + 1)
    return widest


def _int_args(args: Iterable[Any]) -> int:
    """The largest integer among arguments (a width, a count, a repeat)."""
    largest = 0
    for arg in args:
        if type(arg) is int:
            largest = max(largest, abs(arg))
        elif type(arg) in (tuple, list):
            largest = max(largest, _int_args(arg))
    return largest


def _str_arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> int:
    value = args[index] if len(args) > index else kwargs.get(name)
    return size(value) if value is not None else 0


def _estimate(
    name: str, value: Any, args: tuple[Any, ...], kwargs: dict[str, Any], method: bool = False
) -> float:
    """Upper bound of the result size of filter (or, `method`, str method) `name`."""
    n = size(value)
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(n, _int_args(args) + _int_args(kwargs.values()))
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        per_line = size(width) if isinstance(width, str) else _int_args([width])
        lines = value.count("\n") + 1 if isinstance(value, str) else n
        return n + lines * per_line
    if name == "expandtabs":
        tabs = value.count("\t") if isinstance(value, str) else 0
        return n + tabs * _int_args(list(args) + list(kwargs.values()))
    if name == "replace":
        old = args[0] if args else kwargs.get("old", "")
        new = args[1] if len(args) > 1 else kwargs.get("new", "")
        if not isinstance(value, str) or not isinstance(old, str):
            return n
        hits = len(value) + 1 if old == "" else value.count(old)
        return n + hits * size(new)
    if name == "join":
        items = value if isinstance(value, list | tuple | str) else ()
        return n + len(items) * (_str_arg(args, kwargs, 0, "d") + 1)
    if name == "wordwrap":
        width = args[0] if args else kwargs.get("width", 79)
        wrap = _str_arg(args, kwargs, 3, "wrapstring") or 1
        return n + (n // max(int(width) if type(width) is int else 1, 1) + 1) * wrap
    if name in ("format", "format_map") and method:  # "{:>9}".format(x)
        widest = _format_widths(value) if isinstance(value, str) else 0
        widths = _int_args(args) + _int_args(kwargs.values())  # "{:>{}}".format(x, 10**9)
        return n + widest + widths + size(args) + size(kwargs)
    if name == "format" and isinstance(value, str):  # the filter: "%9d"|format(x)
        return _percent_estimate(value, args or kwargs)
    if name == "tojson":
        indent = args[0] if args else kwargs.get("indent")
        return n * (1 + (_int_args([indent]) if indent is not None else 0))
    if name in ("batch", "slice"):
        return n + _int_args(args[:1]) + _int_args(kwargs.values())
    if name == "truncate":
        return n + _str_arg(args, kwargs, 2, "end")
    if name == "urlize":
        extra = sum(size(a) for a in args if isinstance(a, str))
        extra += sum(size(v) for v in kwargs.values() if isinstance(v, str))
        return n * (1 + extra)
    return n + _int_args(args) + _int_args(kwargs.values())


def _percent_estimate(fmt: str, args: Any) -> float:
    return size(fmt) + _percent_widths(fmt) + size(args) + _int_args([args])


# --- filters, loops and outputs ----------------------------------------------------


def guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` (a builtin filter) estimated before and charged after each call."""
    pass_arg = getattr(getattr(func, "jinja_pass_arg", None), "name", None)

    @pass_context
    def guarded(ctx: BudgetContext, value: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name == "join" and not isinstance(value, list | tuple | str):
            value = list(_bounded_iter(ctx, value, 0))  # to know how many items it joins
        if name == "sum":  # sum(start=[]) concatenates lists: quadratic
            start = args[1] if len(args) > 1 else kwargs.get("start", 0)
            if not isinstance(start, int | float):
                raise SecurityError("sum: only numbers can be summed in a template")
        estimate = _estimate(name, value, args, kwargs)
        _refuse_over(ctx, f"'{name}' would build a result too large", estimate)
        ctx.charge(size(value) + 1)
        if pass_arg == "context":
            result = func(ctx, value, *args, **kwargs)
        elif pass_arg == "eval_context":
            result = func(ctx.eval_ctx, value, *args, **kwargs)
        elif pass_arg == "environment":
            result = func(ctx.environment, value, *args, **kwargs)
        else:
            result = func(value, *args, **kwargs)
        ctx.charge(size(result))
        return result

    guarded.__name__ = guarded.__qualname__ = f"guarded_{name}"
    return guarded


def _bounded_iter(ctx: BudgetContext, iterable: Iterable[Any], literal: int) -> Iterator[Any]:
    for item in iterable:
        ctx.charge(literal, 1)
        yield item


_SIZED = frozenset({list, tuple, dict, str, Markup, range})


@pass_context
def loop_guard(ctx: BudgetContext, iterable: Any, literal: int) -> Iterable[Any]:
    """Every `{% for %}`'s iterable: a step per iteration plus the body's literal text.
    A sized iterable is charged up front and iterated as it is (the hot path of an
    order's lines); anything else is charged item by item."""
    if type(iterable) in _SIZED:
        n = len(iterable)
        ctx._steps += n  # charge() inlined: this runs for every loop of every mail
        ctx._work += n * literal
        if ctx._steps > MAX_STEPS or ctx._work > MAX_WORK:
            ctx.charge(0)  # raises, naming the limit
        return iterable
    return _bounded_iter(ctx, iterable, literal)


@pass_context
def charged_output(ctx: BudgetContext, value: Any) -> Any:
    """An output expression that can repeat or holds a computed value."""
    ctx.charge(size(value))
    return value


def bounded_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_STEPS:
        raise TemplateLimitError("range() too long", MAX_STEPS)
    return rng


def bounded_concat(parts: Iterable[str]) -> str:
    """Environment.concat: the joined output of a part (or of a macro/block) is capped.
    What can grow it is charged as it is made (see _Bounder), so joining first is safe."""
    out = "".join(parts)
    if len(out) > MAX_OUTPUT_CHARS:
        raise TemplateLimitError("output too long (characters)", MAX_OUTPUT_CHARS)
    return out


# --- compile-time rewrite ---------------------------------------------------------


def _new(node: nodes.Node, env: Any, lineno: int) -> Any:
    node.set_lineno(lineno)
    node.set_environment(env)
    return node


class _Bounder(NodeTransformer):
    """Route loops, concatenations and repeatable outputs through the guards above.

    Outputs are charged unless they cannot repeat or amplify: a plain field of the
    data handed in (`{{ customer_name }}`, `{{ item.name }}` in one loop over `items`)
    outside macros and blocks, so the common mail template pays nothing extra.
    """

    def __init__(self, env: Any, tree: nodes.Template) -> None:
        self.env = env
        stored: dict[str, int] = {}
        for name in tree.find_all(nodes.Name):
            if name.ctx in ("store", "param"):
                stored[name.name] = stored.get(name.name, 0) + 1
        self.stored = stored
        self.loops = 0
        self.buffered = 0
        self.loop_roots: set[str] = set()

    def _data_path(self, expr: nodes.Node) -> bool:
        while True:
            const_item = isinstance(expr, nodes.Getitem) and isinstance(expr.arg, nodes.Const)
            if isinstance(expr, nodes.Getattr) or const_item:
                expr = expr.node  # type: ignore[attr-defined]
            elif isinstance(expr, nodes.Filter) and expr.node is not None:
                if expr.name not in LINEAR_FILTERS or expr.args or expr.kwargs:
                    return False
                if expr.dyn_args is not None or expr.dyn_kwargs is not None:
                    return False
                expr = expr.node
            else:
                break
        if not isinstance(expr, nodes.Name):
            return False
        return expr.name not in self.stored or expr.name in self.loop_roots

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node.iter = self.visit(node.iter)
        if node.test is not None:
            node.test = self.visit(node.test)
        literal = sum(len(d.data) for b in node.body for d in b.find_all(nodes.TemplateData))
        root = None
        if (
            not node.recursive
            and self._data_path(node.iter)
            and isinstance(node.target, nodes.Name)
            and self.stored.get(node.target.name) == 1
        ):
            root = node.target.name
            self.loop_roots.add(root)
        self.loops += 1
        node.body = [self.visit(b) for b in node.body]
        self.loops -= 1
        if root is not None:
            self.loop_roots.discard(root)
        node.else_ = [self.visit(b) for b in node.else_]
        guard = nodes.Filter(node.iter, "_loop_guard", [nodes.Const(literal)], [], None, None)
        node.iter = _new(guard, self.env, node.lineno)
        return node

    def _buffered(self, node: nodes.Node) -> nodes.Node:
        self.buffered += 1
        try:
            return self.generic_visit(node)
        finally:
            self.buffered -= 1

    visit_Macro = visit_CallBlock = visit_FilterBlock = visit_AssignBlock = _buffered

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        out: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                out.append(child)
                continue
            child = self.visit(child)
            if self.buffered or self.loops > 1 or not self._data_path(child):
                child = _new(
                    nodes.Filter(child, "_out", [], [], None, None), self.env, child.lineno
                )
            out.append(child)
        node.nodes = out
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        concat = self.generic_visit(node)
        return _new(nodes.Filter(concat, "_out", [], [], None, None), self.env, node.lineno)


# --- the environment --------------------------------------------------------------


def _method(obj: Any) -> tuple[Any, str]:
    """(bound self, name) of a method call; str.format comes wrapped by the sandbox."""
    target = getattr(obj, "__wrapped__", obj)
    return getattr(target, "__self__", None), getattr(target, "__name__", "")


class LimitedSandbox(SandboxedEnvironment):
    """A sandbox whose templates cannot exhaust time or memory (see module doc)."""

    context_class = BudgetContext
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(bounded_concat)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name, func in list(self.filters.items()):
            if name not in LINEAR_FILTERS:
                self.filters[name] = guarded_filter(name, func)
        self.filters.update(_loop_guard=loop_guard, _out=charged_output)
        self.globals["range"] = bounded_range
        lipsum = self.globals.get("lipsum")
        if callable(lipsum):
            self.globals["lipsum"] = _guarded_lipsum(lipsum)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        _Bounder(self, source).visit(source)
        return super()._generate(source, name, filename, defer_init=defer_init)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        ctx: BudgetContext = context  # type: ignore[assignment]
        if operator == "*":
            if type(left) is int and type(right) is int:
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise TemplateLimitError("integer too large (bits)", MAX_INT_BITS)
            else:
                count = right if type(right) is int else left if type(left) is int else 1
                seq = left if type(right) is int else right
                _refuse_over(ctx, "'*' would build a result too large", size(seq) * max(count, 0))
        elif operator == "**" and type(left) is int and type(right) is int and right > 0:
            if max(left.bit_length(), 1) * right > MAX_INT_BITS:
                raise TemplateLimitError("integer too large (bits)", MAX_INT_BITS)
        elif operator == "%" and isinstance(left, str):
            _refuse_over(ctx, "'%' would build a result too large", _percent_estimate(left, right))
        result = self.binop_table[operator](left, right)
        if type(result) is int and result.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError("integer too large (bits)", MAX_INT_BITS)
        ctx.charge(size(result))
        return result

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        ctx: BudgetContext = __context  # type: ignore[assignment]
        ctx.charge(1, 1)
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` of a recursive loop
            args = (_bounded_iter(ctx, args[0], 0), *args[1:])
        bound, name = _method(__obj)
        if isinstance(bound, str | list | tuple | dict):  # `"a".center(n)`, `", ".join(xs)`
            _refuse_over(
                ctx,
                f"'{name}' would build a result too large",
                _estimate(name, bound, args, kwargs, method=True),
            )
            ctx.charge(size(bound))
        elif _int_args(args) > MAX_WORK or _int_args(kwargs.values()) > MAX_WORK:
            raise TemplateLimitError("argument too large", MAX_WORK)
        result = super().call(__context, __obj, *args, **kwargs)
        ctx.charge(size(result))
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        result = super().getitem(obj, argument)
        # a slice copies: `big[::-1]` in a loop is work like any other
        if type(argument) is slice and size(result) > MAX_WORK:
            raise TemplateLimitError("slice too large", MAX_WORK)
        return result


def _guarded_lipsum(func: Callable[..., Any]) -> Callable[..., Any]:
    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        if type(n) is not int or type(max) is not int or n * max * 8 > MAX_WORK:
            raise TemplateLimitError("lipsum() too long", MAX_WORK)
        return func(n, html, min, max)

    return lipsum
