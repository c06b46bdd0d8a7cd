#!/bin/bash
# bash completion (packaging/rmig.bash-completion, installed by make
# install): commands, options read from rmig's own usage text (so a new
# option completes without touching the script), values of the options
# that have a fixed set, and set's keys.
. "$(dirname "$0")/lib.sh"
complete_line() { # WORDS...: what <TAB> after the last word offers
	bash -c '
		source packaging/rmig.bash-completion
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _rmig
		printf "%s\n" "${COMPREPLY[@]}"' _ "$@" | sort | xargs
}
RMIG_DIR=$(dirname "$RMIG")
export PATH="$RMIG_DIR:$PATH"
expect_eq "rmig se<TAB>" "$(complete_line rmig se)" "send set"
expect_eq "rmig p<TAB>" "$(complete_line rmig p)" "postcopy"
expect_eq "rmig send --bac<TAB>" "$(complete_line rmig send --bac)" "--backend"
expect_eq "rmig recv --keep<TAB>" "$(complete_line rmig recv --keep)" "--keep-listening"
expect_eq "rmig send --dry<TAB>" "$(complete_line rmig send --dry)" "--dry-run"
expect_eq "rmig send --backend s<TAB>" "$(complete_line rmig send --backend s)" "sim sim:"
expect_eq "rmig send --on-no-converge a<TAB>" "$(complete_line rmig send --on-no-converge a)" abort
expect_eq "rmig set PATH d<TAB>" "$(complete_line rmig set /run/x.sock d)" downtime-ms
# A path with a space stays one word.
mkdir -p "$T/a dir" && touch "$T/a dir/the sock"
expect_eq "rmig status PATH-with-space<TAB>" \
	"$(bash -c 'source packaging/rmig.bash-completion; COMP_WORDS=(rmig status "$1"); COMP_CWORD=2; _rmig; printf "[%s]" "${COMPREPLY[@]}"' _ "$T/a dir/the")" \
	"[$T/a dir/the sock]"
# Every option in the usage text is offered.
all=$(complete_line rmig send --)
for o in $(rmig help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
	grep -qw -- "$o" <<<"$all" || fail "--<TAB> does not offer $o"
done
pass "commands, $(wc -w <<<"$all") options from the usage text, option values, set's keys"
