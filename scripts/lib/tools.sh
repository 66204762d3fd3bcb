# Helpers for CI and the check scripts to get their tools; source it, do not run it.
#
#   . scripts/lib/tools.sh
#   ensure_debian_packages nginx-light prometheus     # apt-get install what is missing (as root)
#   npm_tool_dir scripts/asyncapi-check               # npm ci there when the lockfile changed
#   pip_venv openapi-lint scripts/openapi-lint/requirements.txt   # a venv with pinned packages
#
# Every tool is pinned (a package-lock.json, or exact versions in requirements.txt) and installed
# into its own folder, never globally, and only again when its pins change.

# The folder for venvs and stamps: the cargo target dir, which is git-ignored and per checkout.
tools_root() {
  local root=${CARGO_TARGET_DIR:-$(git rev-parse --show-toplevel)/target}
  mkdir -p "$root/tools"
  printf '%s/tools' "$root"
}

# ensure_debian_packages PKG...: installs the packages that are not installed yet. Runs apt-get
# update once per process. Needs root; without it, names what is missing and returns 1.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
    return 1
  fi
  echo "installing Debian packages: ${missing[*]}" >&2
  if [[ -z "${TOOLS_APT_UPDATED:-}" ]]; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    TOOLS_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >&2
}

# npm_tool_dir DIR: `npm ci` in DIR (which holds package.json and package-lock.json) unless its
# node_modules already match the lockfile.
npm_tool_dir() {
  local dir=$1 stamp want
  [[ -f "$dir/package-lock.json" ]] || { echo "$dir has no package-lock.json" >&2; return 1; }
  stamp=$dir/node_modules/.package-lock.sha256
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && return 0
  echo "npm ci in $dir" >&2
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
}

# pip_venv NAME REQUIREMENTS: a venv under the tools folder with exactly the pinned packages of
# REQUIREMENTS (name==version lines); prints the venv's path. Rebuilt when the file changes.
pip_venv() {
  local name=$1 requirements=$2 venv stamp want
  venv=$(tools_root)/venv-$name
  stamp=$venv/.requirements.sha256
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    if grep -Ev '^\s*(#|$)' "$requirements" | grep -Evq '==[^=]'; then
      echo "$requirements: every line must pin an exact version (name==version)" >&2
      return 1
    fi
    echo "installing $requirements into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    echo "$want" >"$stamp"
  fi
  printf '%s' "$venv"
}
