"""Vendor strings: normalisation and the comparators of the policy formats.

A package without a vendor has the vendor ``""`` everywhere in this package
(hawkey says ``'<NULL>'`` for installed packages and ``''`` for repository
packages; rpm says ``(none)``).
"""
import fnmatch
import re

NO_VENDOR_SPELLINGS = ("<NULL>", "(none)")


def raw_vendor(value):
    """The vendor as stored, with every spelling of "none" made ``""``."""
    if value is None:
        return ""
    value = str(value)
    return "" if value in NO_VENDOR_SPELLINGS else value


def normalize(vendor, fold=True):
    """Whitespace trimmed and collapsed; case folded unless ``fold`` is false."""
    text = " ".join(raw_vendor(vendor).split())
    return text.casefold() if fold else text


# dnf5's string comparators (libdnf5 sack::QueryCmp names); the NOT_ forms
# that only version 1.2 files may use are listed in NOT_SINCE_1_2.
STRING_COMPARATORS = ("EXACT", "IEXACT", "GLOB", "IGLOB", "REGEX", "IREGEX",
                      "CONTAINS", "ICONTAINS", "STARTSWITH", "ISTARTSWITH",
                      "ENDSWITH", "IENDSWITH")
NOT_FORMS_1_0 = ("NOT_EXACT", "NOT_IEXACT", "NOT_GLOB", "NOT_IGLOB", "NOT_CONTAINS",
                 "NOT_ICONTAINS")
NOT_SINCE_1_2 = ("NOT_STARTSWITH", "NOT_ISTARTSWITH", "NOT_ENDSWITH", "NOT_IENDSWITH",
                 "NOT_REGEX", "NOT_IREGEX")
RELATIONAL = ("EXACT", "NOT_EXACT", "GT", "GTE", "LT", "LTE")


def compile_comparator(comparator, pattern):
    """A predicate ``f(value) -> bool`` for one of dnf5's string comparators.

    Raises ValueError for an unknown comparator or a bad regular expression
    (a REGEX must match the whole value, as libdnf5's std::regex_match does).
    """
    negate = comparator.startswith("NOT_")
    base = comparator[4:] if negate else comparator
    icase = base.startswith("I") and base[1:] in ("EXACT", "GLOB", "REGEX", "CONTAINS",
                                                  "STARTSWITH", "ENDSWITH")
    kind = base[1:] if icase else base
    fold = (lambda v: v.casefold()) if icase else (lambda v: v)
    pat = fold(pattern)
    if kind == "EXACT":
        test = (lambda v: fold(v) == pat)
    elif kind == "GLOB":
        rx = re.compile(fnmatch.translate(pat), re.DOTALL)
        test = (lambda v: rx.match(fold(v)) is not None)
    elif kind == "REGEX":
        rx = re.compile(pattern, re.IGNORECASE if icase else 0)
        test = (lambda v: rx.fullmatch(v) is not None)
    elif kind == "CONTAINS":
        test = (lambda v: pat in fold(v))
    elif kind == "STARTSWITH":
        test = (lambda v: fold(v).startswith(pat))
    elif kind == "ENDSWITH":
        test = (lambda v: fold(v).endswith(pat))
    else:
        raise ValueError("unknown comparator %r" % comparator)
    if negate:
        return lambda v: not test(v)
    return test


def glob_list_matcher(patterns):
    """Predicate: does a package name match any of the shell globs?"""
    exact = {p for p in patterns if not any(c in p for c in "*?[")}
    globs = [re.compile(fnmatch.translate(p)) for p in patterns if p not in exact]

    def match(name):
        return name in exact or any(g.match(name) for g in globs)
    match.patterns = list(patterns)
    return match
