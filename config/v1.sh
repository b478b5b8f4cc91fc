#!/bin/sh
# /etc/vservers/v1.sh: hooks of the vserver v1, run on the host as `v1.sh ACTION NAME` with
# ACTION one of pre-start, post-start, pre-stop, post-stop. A failing pre-start aborts the start
# before anything is set up. VSERVER_ROOT holds the vserver's tree.
#
# Typical use: share a host directory with the vserver through a bind mount made before it starts
# (the vserver sees mounts under its tree that exist at start).
action=$1
name=$2
shared=/srv/shared/$name

case "$action" in
pre-start)
    mkdir -p "$shared" "$VSERVER_ROOT/srv/shared"
    mount --bind "$shared" "$VSERVER_ROOT/srv/shared"
    ;;
post-start)
    logger -t vserver "$name started"
    ;;
pre-stop)
    logger -t vserver "$name stopping"
    ;;
post-stop)
    umount "$VSERVER_ROOT/srv/shared" 2>/dev/null || true
    ;;
esac
