#!/usr/bin/env bash
# Writes vendor/<crate>.patch: the diff of each vendored burn crate against its crates.io
# release (apply with `patch -p1` inside an unpacked release's parent folder). Run after
# changing anything under vendor/; the patches are what could go upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.21.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for crate in burn-flex burn-autodiff burn-communication burn-collective; do
  mkdir -p "$work/a" "$work/b"
  local_copy=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate-$version" 2>/dev/null | head -n 1 || true)
  if [ -n "$local_copy" ]; then
    cp -r "$local_copy" "$work/a/$crate"
  else
    curl -sSfL "https://static.crates.io/crates/$crate/$crate-$version.crate" | tar xz -C "$work/a"
    mv "$work/a/$crate-$version" "$work/a/$crate"
  fi
  rm -f "$work/a/$crate"/{Cargo.lock,Cargo.toml.orig,.cargo_vcs_info.json,.cargo-ok}
  cp -r "vendor/$crate" "$work/b/$crate"
  rm -f "$work/b/$crate"/{PATCHED.md,.cargo-ok}
  (cd "$work" && git diff --no-index --no-prefix "a/$crate" "b/$crate" > "$crate.patch" || true)
  mv "$work/$crate.patch" "vendor/$crate.patch"
  echo "vendor/$crate.patch: $(grep -c '^diff' "vendor/$crate.patch") files, $(wc -l < "vendor/$crate.patch") lines"
done
