# Shared by bin/cluster and bin/test (sourced, not run): make sure .venv exists, runs a Python >= 3.11, and has
# requirements.txt installed. The hash of the installed requirements.txt is kept in .venv/.requirements.sha256,
# so pip only runs when the file changed.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"

_python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1
}

_find_python() {
    local candidate
    for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 python; do
        if command -v "$candidate" >/dev/null 2>&1 && _python_ok "$candidate"; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

_requirements_hash() {
    "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' \
        "$ROOT/requirements.txt"
}

_ensure_venv_locked() {
    if [ -e "$VENV" ] && ! _python_ok "$VENV/bin/python"; then
        echo "bin: $VENV does not run a Python >= 3.11; recreating it" >&2
        rm -rf "$VENV"
    fi
    if [ ! -e "$VENV" ]; then
        local python
        if ! python="$(_find_python)"; then
            echo "bin: App Supervisor needs Python 3.11 or newer; none found on PATH (set PYTHON=/path/to/python3.11)" >&2
            return 1
        fi
        echo "bin: creating $VENV with $python ($("$python" --version 2>&1))" >&2
        if ! "$python" -m venv "$VENV"; then
            rm -rf "$VENV"
            echo "bin: '$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)" >&2
            return 1
        fi
    fi
    local wanted
    wanted="$(_requirements_hash)"
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
        echo "bin: installing requirements.txt into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements.txt" || return 1
        echo "$wanted" >"$STAMP"
    fi
}

ensure_venv() {
    # Two commands started together (bin/cluster and bin/test, say) must not install at the same time.
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9
            _ensure_venv_locked
        ) 9>"${TMPDIR:-/tmp}/appsup-venv.$(id -u).lock"
    else
        _ensure_venv_locked
    fi
}

_ensure_extra_locked() {
    local file="$1" stamp wanted
    stamp="$VENV/.$(basename "$file").sha256"
    wanted="$("$VENV/bin/python" -c \
        'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$file")"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
        echo "bin: installing $(basename "$file") into $VENV" >&2
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$file" || return 1
        echo "$wanted" >"$stamp"
    fi
}

# Install FILE (requirements-test.txt, requirements-bench.txt) on top of requirements.txt, the same way: only when
# it changed, its installed hash kept beside the venv's; under the same lock as ensure_venv.
ensure_extra_requirements() {
    if command -v flock >/dev/null 2>&1; then
        (
            flock 9
            _ensure_extra_locked "$1"
        ) 9>"${TMPDIR:-/tmp}/appsup-venv.$(id -u).lock"
    else
        _ensure_extra_locked "$1"
    fi
}
