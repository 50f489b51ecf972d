#!/bin/sh
# Gridlink staging: keepalived's notify script on $host, rendered by infra/staging/render.py.
# keepalived runs it on every VRRP state change with: INSTANCE <name> <state> <priority>.
# It writes the state as keepalived-exporter names it (0 init, 1 backup, 2 master,
# 3 fault) for the node exporter's textfile collector (which runs as prometheus, so
# readable by all: keepalived runs scripts with umask 077); written whole, then renamed.
umask 022
case "$$3" in
    MASTER) state=2 ;;
    BACKUP) state=1 ;;
    FAULT) state=3 ;;
    *) state=0 ;;
esac
file=$textfile_dir/keepalived.prom
printf '# HELP keepalived_vrrp_state VRRP state: 0 init, 1 backup, 2 master, 3 fault.\n# TYPE keepalived_vrrp_state gauge\nkeepalived_vrrp_state{iname="%s"} %s\n' "$$2" "$$state" > "$$file.tmp"
mv "$$file.tmp" "$$file"
