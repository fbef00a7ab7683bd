"""The safe expression evaluator and the template sandbox (pure)."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc

import pytest

from roost.workflows.expressions import (
    MAX_TEMPLATE_DEPTH,
    ExpressionError,
    TemplateRejected,
    check_template,
    compile_expression,
    evaluate,
    expression_names,
    render_template,
)


def _render_in_child(template: str, within: float = 20) -> str:
    """Render in a child process capped at 2 GB and ``within`` seconds (a regression must
    not hang or exhaust the test run): 'REJECTED', 'RENDERED', or 'KILLED' (it ran past
    the time or memory cap)."""
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))\n"
            "from roost.workflows.expressions import render_template, TemplateRejected\n"
            "try:\n"
            "    render_template(sys.argv[1], {})\n"
            "    print('RENDERED')\n"
            "except TemplateRejected:\n"
            "    print('REJECTED')\n")
    try:
        done = subprocess.run([sys.executable, "-c", code, template], capture_output=True,
                              text=True, timeout=within, check=False)
    except subprocess.TimeoutExpired:
        return "KILLED"
    return done.stdout.strip() or "KILLED"


INPUTS = {"score": 0.7, "labels": ["yes", "maybe"], "user": {"name": "Ada", "tags": ["a"]},
          "count": 3}


@pytest.mark.parametrize(("expression", "expected"), [
    ("score >= 0.5", True),
    ("score > 0.5 and 'yes' in labels", True),
    ("not (count == 3) or user['name'] == 'Ada'", True),
    ("user['tags'][0] == 'a'", True),
    ("labels[-1]", "maybe"),
    ("1 < count <= 3", True),
    ("count in [1, 2]", False),
    ("score is None", False),
    ("{'a': 1}['a'] == 1", True),
    ("-count < 0", True),
    ("true and not false", True),
])
def test_evaluates_the_whitelist(expression: str, expected: object) -> None:
    assert evaluate(expression, INPUTS) == expected


@pytest.mark.parametrize("expression", [
    "user.__class__", "__import__('os')", "len(labels)", "count * 2", "count ** 99",
    "[x for x in labels]", "(lambda: 1)()", "labels[0:1]", "__builtins__", "f'{count}'",
    "count if score else 0", "(x := 1)", "{1, 2}", "", "{**user}",
])
def test_refuses_everything_else(expression: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(expression)


@pytest.mark.parametrize("expression", [
    "missing == 1", "user['nope'] == 1", "labels[9] == 1", "labels['x'] == 1",
    "score < 'a'", "count[0] == 1",
])
def test_run_time_errors_are_expression_errors(expression: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate(expression, INPUTS)


def test_names() -> None:
    assert expression_names(compile_expression("a > 1 and b['c'] == d")) == {"a", "b", "d"}


def test_renders_templates_in_the_sandbox() -> None:
    out = render_template("Hi {{ user.name }}: {{ labels|join(', ') }} "
                          "{% if score > 0.5 %}high{% endif %}", INPUTS)
    assert out == "Hi Ada: yes, maybe high"


@pytest.mark.parametrize("template", [
    "{{ labels.append('x') }}",  # mutation (immutable sandbox)
    "{{ user.update({'a': 1}) }}",
    "{{ user[key] }}",  # "__class__" at run time: the sandbox refuses the attribute
    "{{ '{:>999999999}'.format(1) }}",  # str.format
    "{{ '%999999999d' % 1 }}",
    "{{ 'a' * 100000000 }}",
    "{{ 2 ** 100000 }}",
    "{{ range(10**9)|list }}",
    "{{ nothing_here }}",  # undefined variables are errors, not empty strings
])
def test_unsafe_operations_are_refused_at_render(template: str) -> None:
    with pytest.raises(TemplateRejected):
        render_template(template, {**INPUTS, "key": "__class__"})


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ q.upper() }}|{{ q.split('b') | join('-') }}|{{ q.startswith('a') }}", "ABC|a-c|True"),
    ("{{ q.replace('b', 'x') }}|{{ (q ~ q).replace('b', 'yy', 1) }}", "axc|ayycabc"),
])
def test_cheap_string_methods_work_in_templates(template: str, expected: str) -> None:
    """The string methods that cannot outgrow the caps are callable (padding, joining and
    translating ones are refused: 'a'.ljust(10**9) made a gigabyte in one call)."""
    assert render_template(template, {"q": "abc"}) == expected
    for refused in ("{{ q.ljust(9) }}", "{{ q.join(['a', 'b']) }}", "{{ q.zfill(9) }}"):
        with pytest.raises(TemplateRejected, match="is not allowed in templates"):
            render_template(refused, {"q": "abc"})


@pytest.mark.parametrize("template", ["{{ q | dictsort }}", "{{ q | truncate(1) }}",
                                      "{{ q | truncate(9, leeway=-1) }}"])
def test_a_filter_misused_at_render_is_a_template_error(template: str) -> None:
    """dictsort of a string raises AttributeError, truncate below its leeway Jinja's own
    assert: a TemplateRejected like any render error (the node fails), not a raw
    exception (a 500 when the run starts)."""
    with pytest.raises(TemplateRejected, match="template error"):
        render_template(template, {"q": "abc"})


@pytest.mark.parametrize("template", [
    "{{ x" + " | upper" * 6000 + " }}",  # Jinja's recursive walks overflowed
    "{{ " + "a." * 10000 + "b }}",
    "{{ " + "1 + " * 10000 + "1 }}",
    "{{ x" + " | upper" * 200 + " }}",  # Python's compiler: too many nested parentheses
    "{% if x %}" * 100 + "y" + "{% endif %}" * 100,  # too many levels of indentation
], ids=["filters", "attributes", "plus", "200-filters", "100-ifs"])
def test_a_template_nested_too_deep_is_refused_at_save(template: str) -> None:
    with pytest.raises(TemplateRejected, match=f"nests deeper than {MAX_TEMPLATE_DEPTH}"):
        check_template(template)


def test_a_template_nested_within_the_limit_renders() -> None:
    levels = MAX_TEMPLATE_DEPTH - 5
    assert render_template("{{ x" + " | upper" * levels + " }}", {"x": "a"}) == "A"
    assert render_template("{{ " + "1 + " * levels + "1 }}", {}) == str(levels + 1)
    nested_ifs = "{% if x %}" * levels + "y" + "{% endif %}" * levels
    assert render_template(nested_ifs, {"x": True}) == "y"


def test_output_is_capped() -> None:
    with pytest.raises(TemplateRejected, match="longer than"):
        render_template("{% for i in range(10000) %}{% for j in range(10000) %}xxxxxxxxxx"
                        "{% endfor %}{% endfor %}", {})


@pytest.mark.parametrize(("template", "message"), [
    # Values built on the way are capped before they are built (each was gigabytes).
    ("{{ (range(10000)|join('x' * 1000))|length }}", "join would build"),
    ("{{ ('a' * 100000)|replace('a', 'a' * 10)|replace('a', 'a' * 10)|length }}",
     "replace would build"),
    ("{% set a = 'a' * 100000 %}{% set b = a ~ a %}{% set c = b ~ b %}{% set d = c ~ c %}"
     "{% set e = d ~ d %}{{ e|length }}", "~ would build"),
    ("{% set a = 'a' * 100000 %}{% set b = a + a %}{% set c = b + b %}{% set d = c + c %}"
     "{% set e = d + d %}{{ e|length }}", r"\+ would build"),
    # Two nested loops in a macro called in a loop nest four deep (~10^9 steps here):
    # the render stops at its clock, whatever the nesting.
    ("{% macro m() %}{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}"
     "{% endfor %}{% endmacro %}{% for a in range(10) %}{{ m() }}{% endfor %}",
     "ran longer than"),
])
def test_work_and_values_a_render_builds_are_bounded(template: str, message: str) -> None:
    with pytest.raises(TemplateRejected, match=message):
        render_template(template, {})


def test_recursive_loops_are_refused_and_ordinary_ones_still_work() -> None:
    with pytest.raises(TemplateRejected, match="recursive"):
        render_template("{% for a in range(3) recursive %}{{ loop(range(3)) }}{% endfor %}", {})
    out = render_template(
        "{% for l in labels %}{{ loop.index }}/{{ loop.length }}={{ l }};{% else %}none"
        "{% endfor %}{% for x in [] %}x{% else %}none{% endfor %} {{ 'a' ~ 1 ~ none }} "
        "{{ [1] + [2] }} {{ labels|join('-') }} {{ 'yes'|replace('s', 'S') }} "
        "{{ [user]|join(', ', attribute='name') }}", INPUTS)
    assert out == "1/2=yes;2/2=maybe;none a1None [1, 2] yes-maybe yeS Ada"


@pytest.mark.parametrize(("template", "message"), [
    # A list of one 10,000-item list repeated 1000 times (by reference) is 10^7 items:
    # its text was 58.9 million characters, built before the output cap looked at it.
    ("{% set r = range(10000)|list %}{{ ([r] * 1000)|length }}", "repeating a value"),
    ("{% set s = 'x' * 100000 %}{{ ([s] * 20)|tojson|length }}", "tojson would build"),
    ("{% set s = 'x' * 100000 %}{{ ([s] * 20)|string|length }}", "string would build"),
    ("{% set s = 'x' * 100000 %}{{ [s] * 20 }}", "the output would build"),
    ("{% set s = 'x' * 100000 %}{{ ([s] * 20) ~ 'x' }}", "~ would build"),
    ("{{ [1, 2]|tojson(indent=1000000000) }}", "tojson indents"),
    ("{{ [range(10000)|list, range(10000)|list]|sum(start=[])|length }}", "numbers only"),
    # a macro's or a set block's text is joined from its parts: 10,000 times a
    # 100,000-character value made 1 GB
    ("{% set a = 'x' * 100000 %}{% macro f() %}{% for i in range(10000) %}{{ a }}"
     "{% endfor %}{% endmacro %}{{ f()|length }}", "a macro or block would build"),
    ("{% set a = 'x' * 100000 %}{% set b %}{% for i in range(10000) %}{{ a }}{% endfor %}"
     "{% endset %}{{ b|length }}", "a macro or block would build"),
    # each value under the cap, but a literal list of them (or map) makes many: a 50,000-
    # character template held thousands (gigabytes); here 45 million characters, 10 million items
    ("{% set a = 'x' * 100000 %}{% set a = a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a %}"
     "{% set xs = [" + "a ~ ''," * 50 + "] %}{{ xs|length }}",
     "~ would bring what the template built past"),
    ("{% set a = 'x' * 100000 %}{% set a = a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a %}"
     "{% macro f() %}{{ a }}{% endmacro %}{% set xs = ["
     + "f()," * 50 + "] %}{{ xs|length }}", "a macro or block would bring"),
    ("{% set r = ['x'] * 100000 %}{% set xs = [" + "r + []," * 100 + "] %}{{ xs|length }}",
     r"\+ would bring"),
])
def test_values_built_past_the_cap_are_refused_before_they_exist(template: str,
                                                                  message: str) -> None:
    with pytest.raises(TemplateRejected, match=message):
        render_template(template, {})


@pytest.mark.parametrize(("template", "within"), [
    # summing lists is quadratic with no loop for the clock (minutes, in the event loop)
    ("{{ ([[1] * 10000] * 2000)|sum(start=[])|length }}", 20),
    ("{{ ([[1] * 10] * 10)|sum(start=[])|length }}", 20),
    # each exponent <= 64, but the number had 56 million bits (15 s of CPU)
    ("{{ ((((10 ** 64) ** 64) ** 64) ** 64) > 0 }}", 10),
    ("{% set a = 10 ** 64 %}{% set b = a ** 64 %}{{ (b * b * b * b * b * b * b * b) > 0 }}", 10),
    # 2^40 macro calls, no for loop: stops at the render's clock
    ("{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
     "{{ m(40) }}", 20),
])
def test_work_without_a_loop_is_bounded(template: str, within: float) -> None:
    assert _render_in_child(template, within) == "REJECTED"


def test_ordinary_json_sums_numbers_and_macros_still_work() -> None:
    out = render_template(
        "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ n }}{% endif %}{% endmacro %}"
        "{{ user|tojson }} {{ [1, 2]|tojson(indent=1) }} {{ [1, 2.5]|sum(start=1) }} "
        "{{ (10 ** 64) ** 2 > 0 }} {{ 3 * 4 }} {{ [[1], [2]] * 2 }} {{ m(3) }} "
        "{{ '<&>'|tojson }} {{ labels|string }}", INPUTS)
    assert out == ('{"name": "Ada", "tags": ["a"]} [\n 1,\n 2\n] 4.5 True 12 '
                   '[[1], [2], [1], [2]] 123 "\\u003c\\u0026\\u003e" [\'yes\', \'maybe\']')


@pytest.mark.parametrize("filter_name", ["lower", "e"])
def test_text_the_filters_build_in_a_render_is_capped_in_total(filter_name: str) -> None:
    """Each copy is under the cap, but ``map`` makes one per item of a list repeated by
    reference: at n = 100,000 that was 10 GB (the ``*`` check counts items, not
    characters).  Here n = 100: 10 million characters, past the render's budget."""
    source = ('{% set a = "x" * 100000 %}{{ ([a] * 100) | map("' + filter_name
              + '") | list | length }}')
    with pytest.raises(TemplateRejected, match=f"the filter {filter_name} would bring"):
        render_template(source, {})
    # a value a filter gives back unchanged is not new text
    out = render_template('{{ ["A", "<"] | map("' + filter_name + '") | join(",") }} '
                          "{{ q | default('') }}", {"q": "y" * 900_000})
    assert out.startswith({"lower": "a,< yy", "e": "A,&lt; yy"}[filter_name])


def test_join_of_a_mapped_list_is_refused_before_the_list_is_built() -> None:
    """``join`` made the whole list first (``list(value)``): ten 100,000-character copies
    here, 10 GB at n = 100,000, before its size check.  It takes the items one by one."""
    tracemalloc.start()
    try:
        with pytest.raises(TemplateRejected, match="longer than 1000000"):
            render_template('{% set a = "x" * 100000 %}{{ ([a] * 100) | map("lower") | join }}',
                            {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated before the join was refused"


@pytest.mark.parametrize("template", ['{{ 1 | round(1000000, "floor") }}',
                                      '{{ 5 | round(-1000000) }}', "{{ 1 | round(1.5) }}"],
                         ids=["floor", "common", "not-whole"])
def test_round_with_a_huge_precision_is_refused(template: str) -> None:
    """``round`` computes ``10 ** precision`` in one call the render's clock cannot stop
    (precision 10,000,000 took 47 s): the precision is an exponent, capped like ``**``'s."""
    with pytest.raises(TemplateRejected, match="round takes"):
        render_template(template, {})
    assert render_template('{{ 1.2345 | round(2) }} {{ 12345 | round(-2) }} '
                           '{{ 2.5 | round(0, "floor") }} {{ 1.5 | round }}', {}) \
        == "1.23 12300 2.0 2.0"
