#!/bin/sh
# Installs redis-server from Debian's packages when we can (root with apt-get);
# otherwise says what to do. The tests that need Redis skip with a message
# when no redis-server is on PATH, so this never fails the build by itself.
set -u
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get install -y -qq redis-server >/dev/null 2>&1 ||
   { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq redis-server >/dev/null 2>&1; }) &&
    echo "installed redis-server" && exit 0
fi
echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server') to run the Redis tests" >&2
exit 0
