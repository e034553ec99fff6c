#!/bin/sh
# What the official rabbitmq image does with its environment: the default user
# from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, allowed in from other hosts.
set -eu
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
CONF
# Debian's wrapper runs the server as the rabbitmq user.
exec rabbitmq-server
