"""The safe expression evaluator and the template sandbox (pure)."""

from __future__ import annotations

import pytest

from roost.workflows.expressions import (
    ExpressionError,
    TemplateRejected,
    compile_expression,
    evaluate,
    expression_names,
    render_template,
)

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
    "count if score else 0", "(x := 1)", "{1, 2}", "",
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
