"""A small INI reader that remembers line numbers.

Both our own policy format and zypper's vendors.d files are INI; Python's
configparser forgets where a value came from, and an invalid policy must be
reported with its file and line.  Accepted syntax: ``[section]`` headers,
``key = value`` (or ``key: value``), indented continuation lines, ``#`` and
``;`` comment lines.  Keys are case-insensitive; a key given twice in one
section is an error.
"""
from .errors import PolicyFileError


class Section:
    __slots__ = ("name", "line", "values", "lines")

    def __init__(self, name, line):
        self.name = name
        self.line = line
        self.values = {}      # key -> value (continuations joined with "\n")
        self.lines = {}       # key -> line number

    def get(self, key, default=None):
        return self.values.get(key, default)

    def line_of(self, key):
        return self.lines.get(key, self.line)


def parse(path, text, allow_duplicates=False):
    """List of Sections in file order (keys before any header go to a section
    named None)."""
    sections = []
    current = None
    last_key = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            last_key = None if not stripped else last_key
            continue
        if raw[0] in " \t" and last_key is not None:
            current.values[last_key] += "\n" + stripped
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise PolicyFileError(path, number, "malformed section header %r" % stripped)
            current = Section(stripped[1:-1].strip(), number)
            sections.append(current)
            last_key = None
            continue
        sep = min([i for i in (stripped.find("="), stripped.find(":")) if i > 0], default=-1)
        if sep < 0:
            raise PolicyFileError(path, number, "expected 'key = value', got %r" % stripped)
        key = stripped[:sep].strip().lower()
        value = stripped[sep + 1:].strip()
        if current is None:
            current = Section(None, number)
            sections.append(current)
        if key in current.values and not allow_duplicates:
            raise PolicyFileError(path, number, "%r given twice in section [%s] (first on "
                                  "line %d)" % (key, current.name, current.lines[key]))
        current.values[key] = value
        current.lines[key] = number
        last_key = key
    return sections
