#!/bin/sh
# Build ntpguard's Debian package from this checkout, offline, with Debian's tools only.
#
#   packaging/build-deb.sh [--head] [--source] [OUTDIR]
#
# dpkg-buildpackage needs debian/ at the top of the source tree, and the repository keeps it in
# packaging/debian, so this stages a copy in a temporary directory: the checkout's files
# (tracked and untracked-but-not-ignored ones from the working tree, or with --head the
# committed HEAD via `git archive`), packaging/debian as debian/, and the units and cron job
# from packaging/ under the names debhelper looks for. The .deb (and with --source also the
# .dsc and tarballs) lands in OUTDIR (default: dist/). Set DEB_BUILD_OPTIONS=nocheck to skip
# the unit tests run during the build.
#
# Needs: git dpkg-dev build-essential debhelper dh-python pybuild-plugin-pyproject python3-all-dev
# python3-setuptools (Makefile: DEB_BUILD_PACKAGES; `make deb` installs them).
set -eu

# Debian's own Python and tools only: a pyenv/venv python3 earlier in PATH (or PYTHONPATH)
# would build against other libraries than the ones the package depends on.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PYENV_VERSION PIP_REQUIRE_VIRTUALENV 2>/dev/null || true

usage() { echo "usage: $0 [--head] [--source] [OUTDIR]" >&2; exit 2; }

from=worktree
what=-b
outdir=
while [ $# -gt 0 ]; do
    case "$1" in
        --head) from=head ;;
        --source) what= ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) usage ;;
        *) [ -z "$outdir" ] || usage; outdir=$1 ;;
    esac
    shift
done

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
outdir=${outdir:-$top/dist}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

for tool in git dpkg-buildpackage dh dh_python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "build-deb.sh: $tool not found; install the packages in the Makefile's" \
             "DEB_BUILD_PACKAGES (make deb does)" >&2
        exit 1
    }
done

# The package version must be the code's version: refuse a mismatch before building.
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
upstream=${version%-*}
code=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' ntpguard/__init__.py)
if [ "$upstream" != "$code" ]; then
    echo "build-deb.sh: packaging/debian/changelog says $version but ntpguard/__init__.py" \
         "says $code; add a changelog entry (dch -v $code-1)" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ntpguard-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
src=$work/ntpguard-$upstream
mkdir -p "$src"

if [ "$from" = head ]; then
    git archive --format=tar HEAD | tar -x -C "$src"
else
    # Files deleted in the working tree but still in the index are skipped.
    git ls-files -z --cached --others --exclude-standard |
        xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar -c --null -T - -f - | tar -x -C "$src"
fi

# The upstream tarball (the tree before debian/ is added), so a source build works too.
tar -c -z -f "$work/ntpguard_$upstream.orig.tar.gz" -C "$work" "ntpguard-$upstream"

rm -rf "$src/debian"
cp -r "$src/packaging/debian" "$src/debian"
cp "$src/packaging/ntpguard.service" "$src/debian/ntpguard.service"
cp "$src/packaging/ntpguard.timer" "$src/debian/ntpguard.timer"
# Units not named after the package: dh_installsystemd --name=NAME installs
# debian/ntpguard.NAME.service as NAME.service.
for unit in ntpguard-boot ntpguard-watch; do
    cp "$src/packaging/$unit.service" "$src/debian/ntpguard.$unit.service"
done
cp "$src/packaging/ntpguard.cron" "$src/debian/ntpguard.cron.d"

(cd "$src" && dpkg-buildpackage -us -uc $what)

for f in "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$work"/*.dsc \
         "$work"/*.debian.tar.* "$work"/*.orig.tar.*; do
    [ -e "$f" ] || continue
    case "$f" in
        *.orig.tar.*) [ -z "$what" ] || continue ;;
    esac
    cp "$f" "$outdir/"
done
ls "$outdir"/ntpguard_"$version"_"$(dpkg --print-architecture)".deb
