"""Safe condition expressions and sandboxed templates for workflow nodes (pure: no I/O).

Two kinds of user-written code live in a workflow's nodes, and neither is ever handed to
``eval`` or to an unrestricted Jinja environment:

**Expressions** (a condition node's ``expression``, a loop node's ``condition``) are
Python *syntax* parsed with :mod:`ast` and walked by a tiny evaluator that knows only a
whitelist: literals (strings, numbers, booleans, ``None``, lists, tuples, dicts),
names (looked up in the variables the engine passes: the node's inputs), subscripts
(``x["key"]``, ``items[0]``) of dicts, lists, tuples and strings, comparisons
(``== != < <= > >= in not in is is not``), ``and``/``or``/``not`` and unary minus.
No attribute access, no calls, no imports, no lambdas, no comprehensions, no arithmetic
(``"a" * 10**9`` is how a memory bomb starts).  :func:`compile_expression` checks an
expression at save time; :func:`evaluate` runs it (again checked) at run time.

**Templates** (an LLM node's ``prompt``, an agent node's ``input``...) are Jinja2,
compiled in a :class:`jinja2.sandbox.ImmutableSandboxedEnvironment` subclass.  At save,
:func:`check_template` parses the template and refuses what the sandbox would only
catch at render (attributes or keys starting with ``_``, ``include``/``import``/``extends``,
loops nested deeper than :data:`MAX_LOOP_DEPTH`, a syntax tree nested deeper than
:data:`MAX_TEMPLATE_DEPTH`).  At render, :func:`render_template`
relies on the sandbox for the rest (unsafe attributes, mutating calls), multiplies and
powers are checked for size, string formatting (``%``, ``str.format``) is refused, only
whitelisted filters exist, ``range`` is capped, undefined variables are errors and the
output is capped at :data:`MAX_OUTPUT_CHARS`.  What a template may build on the way is
capped too: ``+``, ``~``, ``join``, ``replace``, ``string``, ``tojson``, the text of a
macro or block and each output value's text refuse a value longer than
:data:`MAX_OUTPUT_CHARS` before (or, for ``tojson`` and ``join``, while) building it (a few
chained ``replace``, doubled ``~`` or the text of a list repeated by reference made
gigabytes), and all a render builds (each filter's, operator's, macro's and block's new
string or list) is capped at :data:`MAX_BUILT_SIZE` (many values under the cap made
gigabytes too), integers stay under :data:`MAX_INT_BITS` (``round``'s precision under
:data:`MAX_POWER_EXPONENT`), ``sum`` adds numbers only, and every ``for`` loop and every
call goes through a clock: a render that runs past :data:`MAX_RENDER_SECONDS` stops (a
macro with two nested loops called in a loop nests four deep, ~10^12 steps, a macro
calling itself twice makes 2^n calls, and the render runs in the engine's event loop).
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Final

from jinja2 import StrictUndefined, TemplateError, nodes, pass_environment, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS, make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_EXPRESSION_CHARS: Final = 1000
MAX_EXPRESSION_NODES: Final = 200
MAX_TEMPLATE_CHARS: Final = 50_000
MAX_OUTPUT_CHARS: Final = 1_000_000
# What one render may build in all (characters of text plus items of lists): each value is
# capped at MAX_OUTPUT_CHARS, but a literal list of values or map() can make thousands.
MAX_BUILT_SIZE: Final = 4 * MAX_OUTPUT_CHARS
MAX_LOOP_DEPTH: Final = 2
# How deep a template's syntax tree may nest (blocks in blocks, a filter applied to a
# filter's result, a.b.c, 1 + 1 + 1...): the code Jinja generates nests as deep, and Python
# refuses 100 indentation levels or 200 nested parentheses; Jinja's walks of the tree recurse.
MAX_TEMPLATE_DEPTH: Final = 50
MAX_RANGE: Final = 10_000
MAX_POWER_EXPONENT: Final = 64
MAX_SEQUENCE_PRODUCT: Final = 100_000
MAX_INT_BITS: Final = 100_000  # about 30,000 digits: more than str() may print anyway
MAX_JSON_INDENT: Final = 16
MAX_RENDER_SECONDS: Final = 2.0


class ExpressionError(ValueError):
    """An expression is not allowed (at save) or cannot be evaluated (at run).  The message
    names what is wrong, never echoing variable values."""


class TemplateRejected(ValueError):
    """A template is not allowed (at save) or failed to render (at run)."""


# --- expressions ---------------------------------------------------------------------------

_COMPARE_OPS: Final[dict[type[ast.cmpop], Callable[[Any, Any], bool]]] = {
    ast.Eq: lambda a, b: bool(a == b),
    ast.NotEq: lambda a, b: bool(a != b),
    ast.Lt: lambda a, b: bool(a < b),
    ast.LtE: lambda a, b: bool(a <= b),
    ast.Gt: lambda a, b: bool(a > b),
    ast.GtE: lambda a, b: bool(a >= b),
    ast.In: lambda a, b: bool(a in b),
    ast.NotIn: lambda a, b: bool(a not in b),
    ast.Is: lambda a, b: a is b,
    ast.IsNot: lambda a, b: a is not b,
}
_ALLOWED_NODES: Final = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Compare, ast.Constant, ast.Name, ast.Load, ast.Subscript, ast.List, ast.Tuple,
    ast.Dict, *_COMPARE_OPS,
)
_WHAT: Final[dict[type[ast.AST], str]] = {
    ast.Attribute: "attribute access (a.b)", ast.Call: "function calls",
    ast.BinOp: "arithmetic", ast.Lambda: "lambdas", ast.IfExp: "if-else expressions",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment (:=)", ast.Slice: "slices", ast.Starred: "starred values",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.JoinedStr: "f-strings",
    ast.Set: "set literals",
}


def compile_expression(source: str) -> ast.Expression:
    """``source`` parsed and checked against the whitelist; :class:`ExpressionError` says
    which construct is not allowed."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("the expression cannot be parsed") from None
    count = 0
    for node in ast.walk(tree):
        count += 1
        if count > MAX_EXPRESSION_NODES:
            raise ExpressionError(f"the expression has more than {MAX_EXPRESSION_NODES} parts")
        if not isinstance(node, _ALLOWED_NODES):
            what = _WHAT.get(type(node), type(node).__name__)
            raise ExpressionError(f"{what} not allowed: only literals, names, subscripts, "
                                  "comparisons and and/or/not")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExpressionError(f"the name {node.id!r} is not allowed (names starting "
                                  "with _ are reserved)")
        if isinstance(node, ast.Constant) and not isinstance(
                node.value, str | int | float | bool | type(None)):
            raise ExpressionError("only string, number, boolean and None literals are allowed")
        if isinstance(node, ast.Dict) and any(k is None for k in node.keys):
            raise ExpressionError("** in dict literals is not allowed")  # at save, not at run
    return tree


def expression_names(tree: ast.Expression) -> set[str]:
    """The variable names an expression reads."""
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def evaluate(expression: str | ast.Expression, variables: Mapping[str, Any]) -> Any:
    """The value of ``expression`` with ``variables`` (the node's inputs) as its names."""
    tree = compile_expression(expression) if isinstance(expression, str) else expression
    if not isinstance(tree, ast.Expression):
        raise ExpressionError("not a compiled expression")
    try:
        return _eval(tree.body, variables)
    except ExpressionError:
        raise
    except (TypeError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"cannot evaluate: {type(exc).__name__}") from None


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("true", "false", "null"):  # what JSON users write
            return {"true": True, "false": False, "null": None}[node.id]
        if node.id not in env:
            raise ExpressionError(f"unknown name {node.id!r}")
        return env[node.id]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, env)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, env)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not operand
        if not isinstance(operand, int | float) or isinstance(operand, bool):
            raise ExpressionError("unary minus and plus apply to numbers only")
        return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, env)
            try:
                ok = _COMPARE_OPS[type(op)](left, right)
            except TypeError:
                raise ExpressionError(
                    f"cannot compare {type(left).__name__} with {type(right).__name__}") from None
            if not ok:
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        container = _eval(node.value, env)
        key = _eval(node.slice, env)
        if isinstance(container, Mapping):
            if key not in container:
                raise ExpressionError(f"no key {key!r}" if isinstance(key, int | float)
                                      else "missing key")
            return container[key]
        if isinstance(container, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExpressionError("a list index must be an integer")
            if not -len(container) <= key < len(container):
                raise ExpressionError(f"index {key} is out of range")
            return container[key]
        raise ExpressionError(f"cannot subscript a {type(container).__name__}")
    if isinstance(node, ast.List):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval(e, env) for e in node.elts)
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ExpressionError("** in dict literals is not allowed")
        return {_eval(k, env): _eval(v, env) for k, v in zip(node.keys, node.values, strict=True)
                if k is not None}
    raise ExpressionError(f"{type(node).__name__} not allowed")  # compile_expression refused it


# --- templates -----------------------------------------------------------------------------

SAFE_FILTERS: Final = frozenset({
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float",
    "int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject",
    "rejectattr", "replace", "reverse", "round", "select", "selectattr", "sort", "string",
    "striptags", "sum", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode",
    "wordcount",
})


def _capped_range(*args: int) -> range:
    result = range(*args)
    if len(result) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} items in templates")
    return result


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_built(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise SecurityError(f"{what} would build a value longer than {MAX_OUTPUT_CHARS} "
                            "characters")


# What the render in progress has built so far (see _built).
_BUILT: ContextVar[int] = ContextVar("workflow_template_built", default=0)


def _built(value: Any, what: str) -> Any:
    """``value``, a string, list or tuple the render just made, charged to the render: past
    :data:`MAX_BUILT_SIZE` characters and items in all it stops.  Each value is capped, but
    values can be many: ``map('lower')`` over a 100,000-character string repeated 100,000
    times by reference made 10 GB of copies, a literal list of ``a ~ ''`` thousands of them."""
    size = _size(value)
    if size:
        built = _BUILT.get() + size
        if built > MAX_BUILT_SIZE:
            raise SecurityError(f"{what} would bring what the template built past "
                                f"{MAX_BUILT_SIZE} characters and list items")
        _BUILT.set(built)
    return value


def _walk(value: Any) -> Iterator[Any]:
    """``value`` and every value nested in it, a list repeated by reference once per time
    (``[r] * 1000`` is 1000 items, but its text or sum holds each of r's items 1000 times).
    A container's items are reached only when the caller asks for the next value."""
    stack = [value]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)


def _nested_items(value: Any, limit: int) -> int:
    """How many items ``value``'s containers hold, all levels, counted to just past
    ``limit``."""
    count = 0
    for item in _walk(value):
        if isinstance(item, Mapping | list | tuple | set | frozenset):
            count += len(item)
            if count > limit:
                break
    return count


def _text_size(value: Any, limit: int) -> int:
    """About how long ``str(value)`` is, counted to just past ``limit``."""
    size = 0
    for item in _walk(value):
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, int) and not isinstance(item, bool):
            size += item.bit_length() * 3 // 10 + 1
        elif isinstance(item, Mapping | list | tuple | set | frozenset):
            size += 2 + 4 * len(item)
        else:
            size += 5
        if size > limit:
            break
    return size


def _text(value: Any, what: str) -> str:
    """``str(value)``, size-checked before it is built (str of a list repeated by
    reference was tens of millions of characters)."""
    if not isinstance(value, str):
        _check_built(_text_size(value, MAX_OUTPUT_CHARS), what)
    return str(value)


# Names of the helpers the compiled code calls (a template may call them too: they only
# time a loop or check a concatenation).
_TIMED: Final = "_roost_timed"
_CONCAT: Final = "_roost_concat"


# The end of the render in progress (time.monotonic), for _timed loops.
_DEADLINE: ContextVar[float] = ContextVar("workflow_template_deadline", default=math.inf)


def _timed(iterable: Any) -> Iterator[Any]:
    """Every ``for`` loop's iterable (compile_template rewrites the loops): stops the
    render once :data:`MAX_RENDER_SECONDS` have passed."""
    deadline = _DEADLINE.get()
    for item in iterable:
        if time.monotonic() > deadline:
            raise SecurityError(f"the template ran longer than {MAX_RENDER_SECONDS} s")
        yield item


def _charged(name: str, f: Callable[..., Any]) -> Callable[..., Any]:
    """The filter ``f``, each new string or list it returns charged to the render
    (:func:`_built`; a value it got and gives back unchanged is not new)."""
    @functools.wraps(f)  # keeps Jinja's pass_context/pass_eval_context/pass_environment mark
    def charged(*args: Any, **kwargs: Any) -> Any:
        result = f(*args, **kwargs)
        if not any(result is arg for arg in args):
            _built(result, f"the filter {name}")
        return result
    return charged


def _concat(*parts: Any) -> str:
    """``a ~ b ~ ...``, size-checked before it is built."""
    texts = [_text(part, "~") for part in parts]
    _check_built(sum(map(len, texts)), "~")
    return str(_built("".join(texts), "~"))


def _joined(texts: Iterable[str], separator: str, what: str) -> str:
    """``separator.join(texts)``, taking the texts one by one with a running total: refused
    as soon as it passes the cap, before the rest is made (a mapped list was built whole
    first) and before the result is."""
    kept: list[str] = []
    size = 0
    for text in texts:
        size += len(text) + (len(separator) if kept else 0)
        _check_built(size, what)
        kept.append(text)
    return separator.join(kept)


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """Jinja's ``join``, each item's text size-checked as it comes."""
    if attribute is not None:
        value = map(make_attrgetter(eval_ctx.environment, attribute), value)
    return _joined((_text(item, "join") for item in value), str(d), "join")


def _block_text(parts: Iterable[str]) -> str:
    """The sandbox's ``concat``: the text of every macro call and ``{% set %}``/
    ``{% filter %}`` block, size-checked (a macro looping 10,000 times over a
    100,000-character value returned 1 GB)."""
    return str(_built(_joined(parts, "", "a macro or block"), "a macro or block"))


def _replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text, old, new = _text(s, "replace"), _text(old, "replace"), _text(new, "replace")
    _check_replace(text, old, new, count)
    return str(FILTERS["replace"](eval_ctx, text, old, new, count))


def _check_replace(text: str, old: str, new: str, count: int | None) -> None:
    """The size ``text.replace(old, new, count)`` would have, checked before it is built."""
    found = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        found = min(found, count)
    _check_built(len(text) + found * (len(new) - len(old)), "replace")


def _round(value: Any, precision: Any = 0, method: str = "common") -> Any:
    """Jinja's ``round`` with a precision of at most :data:`MAX_POWER_EXPONENT` digits either
    way: it computes ``10 ** precision`` in one call (precision 10,000,000 took 47 s)."""
    if not isinstance(precision, int) or abs(precision) > MAX_POWER_EXPONENT:
        raise SecurityError(f"round takes a whole precision of at most {MAX_POWER_EXPONENT} "
                            "digits either way")
    return FILTERS["round"](value, precision, method)


def _string(value: Any) -> str:
    return _text(value, "string")


def _output(value: Any) -> str:
    """Every ``{{ ... }}`` value (the environment's finalize), size-checked as text."""
    return _text(value, "the output")


def _tojson(value: Any, indent: int | None = None) -> str:
    """Jinja's ``tojson`` (sorted keys, HTML-safe), its text counted while it is built:
    the pure-Python encoder yields it piece by piece."""
    if indent is not None and (not isinstance(indent, int) or not 0 <= indent <= MAX_JSON_INDENT):
        raise SecurityError(f"tojson indents by 0 to {MAX_JSON_INDENT} spaces")
    size, chunks = 0, []
    for chunk in json.JSONEncoder(sort_keys=True, indent=indent).iterencode(value):
        size += len(chunk)
        _check_built(size, "tojson")
        chunks.append(chunk)
    return ("".join(chunks).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026").replace("'", "\\u0027"))


def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's ``sum`` of numbers only: summing lists copies the total at every step
    (quadratic, with no loop for the clock to stop) and can flatten millions of items."""
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise SecurityError("sum adds numbers only (start must be a number)")
    return FILTERS["sum"](environment, iterable, attribute, start)


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise SecurityError(f"numbers beyond {MAX_INT_BITS} bits are not allowed")


# The methods of a string a template may call: none builds more than a few times the
# string's own size (``upper`` of "ß" is "SS").
_STR_METHODS: Final = frozenset({
    "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
    "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable",
    "isspace", "istitle", "isupper", "lower", "lstrip", "partition", "removeprefix",
    "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split",
    "splitlines", "startswith", "strip", "swapcase", "title", "upper"})


class WorkflowSandbox(ImmutableSandboxedEnvironment):
    """The sandbox of workflow templates: immutable values, size-checked ``*`` and ``**``,
    no string formatting, whitelisted filters, a capped ``range``."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    concat = staticmethod(_block_text)  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, finalize=_output)
        self.filters = {name: f for name, f in FILTERS.items() if name in SAFE_FILTERS}
        self.filters.update(join=pass_eval_context(_join), replace=pass_eval_context(_replace),
                            round=_round, string=_string, tojson=_tojson,
                            sum=pass_environment(_sum))
        self.filters = {name: _charged(name, f) for name, f in self.filters.items()}
        self.globals = {"range": _capped_range, _TIMED: _timed, _CONCAT: _concat}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "+":
            sizes = (_size(left), _size(right))
            if sizes[0] is not None and sizes[1] is not None:
                _check_built(sizes[0] + sizes[1], "+")
            return _built(left + right, "+")
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER_EXPONENT:
                raise SecurityError(f"exponents above {MAX_POWER_EXPONENT} are not allowed")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                # chained powers: ((10 ** 64) ** 64) ** 64 took seconds, one more minutes
                _check_bits(abs(left).bit_length() * right)
            return left ** right
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting with % is not allowed in templates")
            return left % right
        if isinstance(left, int) and isinstance(right, int):
            _check_bits(abs(left).bit_length() + abs(right).bit_length())
            return left * right
        # "*": repeating a string or list is size-checked, counting the items of the lists
        # it holds (each is repeated too, by reference)
        for seq, times in ((left, right), (right, left)):
            n = _size(seq)
            if isinstance(seq, list | tuple):
                n = _nested_items(seq, MAX_SEQUENCE_PRODUCT)
            if n is not None and isinstance(times, int) and n * max(times, 0) > MAX_SEQUENCE_PRODUCT:
                raise SecurityError(f"repeating a value beyond {MAX_SEQUENCE_PRODUCT} items "
                                    "is not allowed")
        return _built(left * right, "*")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # every call (a macro calling itself twice makes 2^n calls with no loop) goes
        # through the render's clock
        if time.monotonic() > _DEADLINE.get():
            raise SecurityError(f"the template ran longer than {MAX_RENDER_SECONDS} s")
        if isinstance(getattr(obj, "__self__", None), str):
            return _built(self._str_method(obj, args, kwargs), f"str.{obj.__name__}")
        return super().call(context, obj, *args, **kwargs)

    @staticmethod
    def _str_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A method of a string, called only when its result cannot outgrow the caps before
        it is built (one C call: the render's clock cannot stop it): ``'a'.ljust(10**9)``
        made a gigabyte.  ``replace`` is checked as the filter is; the others of
        :data:`_STR_METHODS` build at most a few times the string; any other is refused."""
        name = method.__name__
        if name == "replace":
            bound = inspect.signature(str.replace).bind(method.__self__, *args, **kwargs)
            _, old, new, *count = bound.args
            _check_replace(method.__self__, _text(old, "replace"), _text(new, "replace"),
                           count[0] if count else None)
            return method(*args, **kwargs)
        if name not in _STR_METHODS:
            raise SecurityError(f"str.{name} is not allowed in templates (padding and "
                                "joining methods can build gigabytes: use the filters)")
        return method(*args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if isinstance(getattr(value, "__self__", None), str) and getattr(
                value, "__name__", None) in ("format", "format_map"):
            # str.format: a padding width can allocate gigabytes
            def refused(*args: Any, **kwargs: Any) -> str:
                raise SecurityError("str.format is not allowed in templates")
            return refused
        return None


_SANDBOX: Final = WorkflowSandbox()


def _check_tree(tree: nodes.Template) -> None:
    for stmt in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        raise TemplateRejected(f"{type(stmt).__name__.lower()} is not allowed in templates")
    for attr in tree.find_all(nodes.Getattr):
        if attr.attr.startswith("_"):
            raise TemplateRejected(f"the attribute {attr.attr!r} is not allowed (names "
                                   "starting with _ are unsafe)")
    for item in tree.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str) \
                and item.arg.value.startswith("_"):
            raise TemplateRejected(f"the key {item.arg.value!r} is not allowed (names "
                                   "starting with _ are unsafe)")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:  # loop(...) would iterate past the render's clock
            raise TemplateRejected("recursive loops are not allowed in templates")
    for used in tree.find_all(nodes.Filter):
        if used.name not in SAFE_FILTERS:
            raise TemplateRejected(f"the filter {used.name!r} is not available in templates")
    for test in tree.find_all(nodes.Test):
        if test.name not in _SANDBOX.tests:
            raise TemplateRejected(f"the test {test.name!r} does not exist")


def _check_depth(tree: nodes.Template) -> None:
    """The tree nested at most :data:`MAX_TEMPLATE_DEPTH` deep, its loops at most
    :data:`MAX_LOOP_DEPTH`: walked with a stack, not recursion, stopping at the first node
    too deep (before Jinja's recursive walks: 6,000 chained filters overflowed them, and
    the error's traceback took seconds)."""
    stack: list[tuple[nodes.Node, int, int]] = [(tree, 0, 0)]
    while stack:
        node, level, loops = stack.pop()
        if level > MAX_TEMPLATE_DEPTH:
            raise TemplateRejected(f"the template nests deeper than {MAX_TEMPLATE_DEPTH} "
                                   "levels (blocks, chained filters or attributes, operators)")
        for child in node.iter_child_nodes():
            inner = loops + 1 if isinstance(child, nodes.For) else loops
            if inner > MAX_LOOP_DEPTH:
                raise TemplateRejected(f"loops nested deeper than {MAX_LOOP_DEPTH} are not "
                                       "allowed")
            stack.append((child, level + 1, inner))


def check_template(source: str) -> None:
    """Save-time check: ``source`` parsed by the sandbox's parser and refused if it uses
    what the sandbox would only catch at render (:class:`TemplateRejected` with the reason
    and line).  Cheaper than :func:`compile_template`, which also generates the code."""
    _parse(source)


def _instrumented(tree: nodes.Template) -> nodes.Template:
    """Each ``for`` loop's iterable through :func:`_timed`, each ``~`` through
    :func:`_concat`."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Call(nodes.Name(_TIMED, "load"), [loop.iter], [], None, None)
    for concat in list(tree.find_all(nodes.Concat)):
        call = nodes.Call(nodes.Name(_CONCAT, "load"), list(concat.nodes), [], None, None)
        concat.nodes = [call]  # a Concat of one part is that part, as text
    return tree


@functools.lru_cache(maxsize=512)
def compile_template(source: str) -> Any:
    """``source`` checked (:func:`check_template`) and compiled in the sandbox, its loops
    and ``~`` instrumented (:func:`_instrumented`)."""
    tree = _instrumented(_parse(source))
    try:
        return _SANDBOX.from_string(tree)
    except TemplateError as exc:
        raise TemplateRejected(f"template error: {exc.message or 'invalid'}") from None
    except (RecursionError, MemoryError, SyntaxError):
        # SyntaxError: Python's compiler refusing the generated code (too deeply nested)
        raise TemplateRejected("the template is too deeply nested") from None


def _parse(source: str) -> nodes.Template:
    if not isinstance(source, str):
        raise TemplateRejected("a template must be a string")
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRejected(f"the template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        tree = _SANDBOX.parse(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise TemplateRejected(f"template syntax error{where}: {exc.message or 'invalid'}") \
            from None
    except (RecursionError, MemoryError):
        raise TemplateRejected("the template is too deeply nested") from None
    _check_depth(tree)
    try:
        _check_tree(tree)
    except (RecursionError, MemoryError):
        raise TemplateRejected("the template is too deeply nested") from None
    return tree


def render_template(source: str, variables: Mapping[str, Any]) -> str:
    """``source`` rendered with ``variables`` in the sandbox; :class:`TemplateRejected` on an
    unsafe operation, an undefined variable or output beyond :data:`MAX_OUTPUT_CHARS`."""
    template = compile_template(source)
    out: list[str] = []
    size = 0
    clock = _DEADLINE.set(time.monotonic() + MAX_RENDER_SECONDS)
    budget = _BUILT.set(0)
    try:
        chunks: Iterator[str] = template.generate(dict(variables))
        for chunk in chunks:
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateRejected(f"the rendered text is longer than {MAX_OUTPUT_CHARS} "
                                       "characters")
            out.append(chunk)
    except TemplateRejected:
        raise
    except SecurityError as exc:
        raise TemplateRejected(f"unsafe operation refused by the sandbox: {exc}") from None
    except TemplateError as exc:
        raise TemplateRejected(f"template error: {exc.message or type(exc).__name__}") from None
    except Exception as exc:
        # whatever else a filter or operator raises on the values it got (dictsort of a
        # string: AttributeError, truncate below its leeway: AssertionError, TypeError,
        # RecursionError...) is the template's fault too: the node fails, not the request
        raise TemplateRejected(f"template error: {type(exc).__name__}") from None
    finally:
        _BUILT.reset(budget)
        _DEADLINE.reset(clock)
    return "".join(out)
