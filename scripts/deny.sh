#!/usr/bin/env bash
# cargo-deny over the workspace's dependency tree, per deny.toml: licences,
# banned or duplicated crates, and where crates come from. Installs the
# pinned cargo-deny once into ~/.cargo/bin.
#
# The advisories check needs the RustSec advisory database, fetched from
# GitHub at run time; where GitHub cannot be reached it is skipped with one
# line saying so (set DENY_ADVISORIES=1 to make that an error instead).
#
#   scripts/deny.sh            install if needed, then check
#   scripts/deny.sh --install  only install
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION"
  cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --quiet
fi
[ "${1:-}" = "--install" ] && exit 0

checks=(licenses bans sources)
if timeout 15 git ls-remote --exit-code https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
  checks+=(advisories)
elif [ "${DENY_ADVISORIES:-0}" = 1 ]; then
  echo "the advisory database (github.com/rustsec/advisory-db) cannot be reached" >&2
  exit 1
else
  echo "advisories skipped: the advisory database on GitHub cannot be reached from here"
fi
cargo deny --workspace --locked check "${checks[@]}"
