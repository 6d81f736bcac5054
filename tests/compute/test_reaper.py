"""The reaper's shape: it stops instances through Ec2Compute's public steps of a stop.

Its behaviour against moto's EC2 (expired, live, leased meanwhile) is in test_compute.py.
"""

from __future__ import annotations

import ast
import inspect

from wms.compute import reaper


def test_the_reaper_uses_no_private_name_of_another_object() -> None:
    """A private helper of Ec2Compute may change without notice; the reaper must not break with it."""
    tree = ast.parse(inspect.getsource(reaper))
    private = sorted(
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    )
    assert private == []
