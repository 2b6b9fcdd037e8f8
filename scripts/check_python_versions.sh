#!/usr/bin/env bash
# A fresh clone passes `make test` on each Python that pyproject.toml supports and this machine has.
#
#   scripts/check_python_versions.sh                 # python3.11 and python3.12: make test in fresh clones
#   scripts/check_python_versions.sh python3.13      # or the interpreters named
#   scripts/check_python_versions.sh --fast python3.12   # make test-fast instead (what CI runs, see .ci/run)
#
# Each runs in its own clone of HEAD (its own .venv), so nothing here is touched. An interpreter
# that is not installed cannot run the tests: for it, the script checks only that pip resolves every
# pin of requirements.lock for that Python version (a wheel or an sdist exists; nothing installed)
# and says so ("RESOLVES ONLY", never "PASSED"). CI (.ci/run) runs it for the supported versions
# other than its own python3. The exit status is 1 if any run or resolution failed.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
target=test
if [ "${1:-}" = "--fast" ]; then target=test-fast; shift; fi
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(python3.11 python3.12)
status=0

# The interpreter's path: on PATH (and working: a pyenv shim for a version not selected fails),
# else in pyenv's versions when pyenv is installed.
find_python() {
  if "$1" --version >/dev/null 2>&1; then command -v "$1"; return 0; fi
  if command -v pyenv >/dev/null 2>&1; then
    for candidate in "$(pyenv root)"/versions/*/bin/"$1"; do
      if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then echo "$candidate"; return 0; fi
    done
  fi
  return 1
}

for py in "${versions[@]}"; do
  if ! interpreter="$(find_python "$py")"; then
    version="${py#python}"
    echo "== $py: not installed on this machine; checking that requirements.lock resolves for Python $version"
    target="$(mktemp -d)"
    pip_python="$here/.venv/bin/python"  # pip from the project's environment (make creates it)
    [ -x "$pip_python" ] || pip_python=python3
    if "$pip_python" -m pip install --quiet --dry-run --ignore-installed --no-deps --python-version "$version" \
         --target "$target" -r "$here/requirements.lock"; then
      echo "== $py: every pin of requirements.lock has a distribution for Python $version: RESOLVES ONLY (tests not run)"
    else
      echo "== $py: requirements.lock does NOT resolve for Python $version: FAILED"
      status=1
    fi
    rm -rf "$target"
    continue
  fi
  clone="$(mktemp -d)/entromix"
  git clone -q "$here" "$clone"
  echo "== $("$interpreter" --version) ($interpreter): make $target in a fresh clone ($clone)"
  if (cd "$clone" && make "$target" PYTHON="$interpreter"); then
    echo "== $py: PASSED"
  else
    echo "== $py: FAILED"
    status=1
  fi
  rm -rf "$(dirname "$clone")"
done
exit $status
