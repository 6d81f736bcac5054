"""`${{ }}` expressions as GitHub evaluates the few forms the repository's workflows use: one
evaluator for every test that asks whether a job or step runs (tests/workflow_runner.py runs
whole jobs with it; tests/test_workflows.py and test_workflow_flow.py judge single conditions)."""

from __future__ import annotations

import json
import re
from typing import Any

TOKEN = re.compile(r"\s*('[^']*'|[A-Za-z_][\w.\-]*|\d+|==|!=|>=|<=|>|<|&&|\|\||!|\(|\)|,)")
FUNCTIONS = {
    "always": lambda: True,
    "success": lambda: True,  # see `status_functions`: what a failed step or job changes
    "failure": lambda: False,
    "cancelled": lambda: False,
    "startsWith": lambda text, prefix: str(text).lower().startswith(str(prefix).lower()),
    "fromJSON": lambda text: json.loads(str(text)),
}


def status_functions(failed: bool) -> dict[str, Any]:
    """FUNCTIONS where a step of this job failed (for a step's `if:`) or a needed job failed (for a
    job's): `success()` false, `failure()` true, as GitHub evaluates them."""
    return FUNCTIONS | {"success": lambda: not failed, "failure": lambda: failed}


def value_of(expression: str, context: dict[str, Any], functions: dict[str, Any] | None = None) -> Any:
    """An expression's value: names read from `context` (a missing one is empty, as GitHub reads
    an unset variable or output), `&&`/`||` returning an operand as GitHub's do; `functions`
    (default FUNCTIONS: nothing failed) are the status checks."""
    functions = FUNCTIONS if functions is None else functions
    inner, python, at = expression.strip().removeprefix("${{").removesuffix("}}"), [], 0
    while at < len(inner.rstrip()):
        token = TOKEN.match(inner, at)
        assert token, f"cannot read {inner[at:]!r}"
        word, at = token[1], token.end()
        if word.startswith("'"):
            python.append(repr(word[1:-1]))
        elif word in ("&&", "||", "!"):
            python.append({"&&": " and ", "||": " or ", "!": " not "}[word])
        elif word in ("true", "false"):
            python.append(str(word == "true"))
        elif word in FUNCTIONS:
            python.append(word)
        elif word[0].isalpha() or word[0] == "_":
            python.append(repr(context.get(word, "")))
        else:
            python.append(word)
    return eval("".join(python), {"__builtins__": {}}, functions)  # only the repository's own workflows
