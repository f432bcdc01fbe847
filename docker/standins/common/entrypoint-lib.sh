# Shared by the stand-in entrypoints (sourced, not executed): logging, and the official images'
# *_FILE convention for secrets.

log() { echo "$(date -u +%FT%TZ) [entrypoint] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE.
file_env() {
    local var="$1" fvar="${1}_FILE" val="${2:-}"
    if [ -n "${!var:-}" ] && [ -n "${!fvar:-}" ]; then
        die "both $var and $fvar are set (but are exclusive)"
    fi
    if [ -n "${!var:-}" ]; then
        val="${!var}"
    elif [ -n "${!fvar:-}" ]; then
        [ -r "${!fvar}" ] || die "$fvar=${!fvar} is not readable"
        val="$(<"${!fvar}")"
    fi
    export "$var"="$val"
    unset "$fvar"
}
