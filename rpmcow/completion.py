"""Bash completion for ``rpmcow`` and ``rpm2extents``, rendered from the
command line's own parsers (so it never drifts from them):
``python3 -m rpmcow.completion > /usr/share/bash-completion/completions/rpmcow``
(the RPM spec does that; ``rpm2extents`` gets a link to the same file)."""
import sys

from . import cli

TEMPLATE = r'''# bash completion for rpmcow and rpm2extents (made by python3 -m rpmcow.completion)
_rpmcow()
{
    local cur prev cmd i
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    if [[ ${COMP_WORDS[0]##*/} == rpm2extents ]]; then
        case $prev in --root|--dbpath) COMPREPLY=($(compgen -d -- "$cur")); return;; esac
        COMPREPLY=($(compgen -W "%(r2e_opts)s %(algos)s" -- "$cur"))
        return
    fi
    cmd=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in -*) ;; *) cmd=${COMP_WORDS[i]}; break;; esac
    done
    if [[ -z $cmd ]]; then
        COMPREPLY=($(compgen -W "%(commands)s --help --version" -- "$cur"))
        return
    fi
    case $prev in
        --root|--dbpath|-d|--directory) COMPREPLY=($(compgen -d -- "$cur")); return;;
        --verify-level) COMPREPLY=($(compgen -W "%(levels)s" -- "$cur")); return;;
        --digest) COMPREPLY=($(compgen -W "%(algos)s" -- "$cur")); return;;
    esac
    case $cur in
        -*)
            case $cmd in
%(option_cases)s
            esac
            return;;
    esac
    case $cmd in
        cache) COMPREPLY=($(compgen -W "status clean" -- "$cur") $(compgen -d -- "$cur"));;
        vendor) COMPREPLY=($(compgen -W "%(vendor_actions)s" -- "$cur"));;
        *) COMPREPLY=($(compgen -f -X '!*.@(rpm|rpme)' -- "$cur") $(compgen -d -- "$cur"));;
    esac
}
complete -F _rpmcow rpmcow rpm2extents
'''


def _options(parser):
    out = []
    for action in parser._actions:
        out.extend(o for o in action.option_strings if o.startswith("-"))
    return sorted(set(out))


def render():
    from .digests import ALGOS
    cases = []
    for name in cli.COMMANDS:
        opts = " ".join(_options(cli.build_command_parser(name)))
        cases.append('                %s) COMPREPLY=($(compgen -W "%s" -- "$cur"));;'
                     % (name, opts))
    return TEMPLATE % {
        "commands": " ".join(cli.COMMANDS),
        "levels": " ".join(cli.rpmconfig.LEVELS),
        "algos": " ".join(a.name for a in ALGOS),
        "r2e_opts": " ".join(_options(cli.build_rpm2extents_parser())),
        "option_cases": "\n".join(cases),
        "vendor_actions": " ".join(_vendor_actions()),
    }


def _vendor_actions():
    from .vendorpolicy import commands
    return commands.SUBCOMMANDS


def main():
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
