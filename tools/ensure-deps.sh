#!/bin/sh
# Makes sure the Debian packages named as arguments are installed. As root,
# installs the missing ones with apt-get; otherwise prints the exact command
# and fails, so a build never stops on a cryptic missing header.
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "Installing missing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || exit 1
    apt-get install -y -q --no-install-recommends $missing || exit 1
    exit 0
fi
echo "Missing Debian packages. Run as root:" >&2
echo "    apt-get install -y$missing" >&2
exit 1
