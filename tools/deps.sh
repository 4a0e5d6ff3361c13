#!/bin/sh
# Checks the Debian packages the build needs; installs them when run as root, else prints the line.
missing=""
[ -f /usr/include/stb/stb_image_write.h ] || missing="$missing libstb-dev"
[ -f /usr/include/zlib.h ] || missing="$missing zlib1g-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing$missing" >&2
    (apt-get install -y -qq $missing || { apt-get update -qq && apt-get install -y -qq $missing; }) >/dev/null && exit 0
fi
echo "deps: missing Debian packages; run: sudo apt-get install -y$missing" >&2
exit 1
