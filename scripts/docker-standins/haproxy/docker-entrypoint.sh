#!/bin/sh
# As the official haproxy image: options alone mean `haproxy <options>`, and `haproxy`
# runs in the foreground (-db) in master-worker mode (-W, reloads on SIGUSR2).
set -e
case $1 in
  -*) set -- haproxy "$@" ;;
esac
if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi
exec "$@"
