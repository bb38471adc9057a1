#!/usr/bin/env python3
"""Print the C files of the transcoder core, as rpmcow/_build.py compiles them
(its SOURCES list, read without importing cffi); csrc/ also holds code that is
not part of the core (the rpm plugin, which needs librpm)."""
import ast
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CSRC = os.path.join(ROOT, "csrc")


def sources():
    with open(os.path.join(ROOT, "rpmcow", "_build.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "SOURCES" for t in node.targets):
            return [os.path.join(CSRC, s) for s in ast.literal_eval(node.value)]
    # fallback: every C file but the rpm plugin
    return sorted(os.path.join(CSRC, n) for n in os.listdir(CSRC)
                  if n.endswith(".c") and not n.startswith("rpm_plugin"))


if __name__ == "__main__":
    print(" ".join(sources()))
    sys.exit(0)
