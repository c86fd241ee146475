/*
 * pgconn — how every part of outbox-relay opens a PostgreSQL connection and
 * reports libpq's messages.
 */
#ifndef CDC_PGCONN_H
#define CDC_PGCONN_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

/*
 * Connect with conninfo (keyword string or URI; PG* variables and .pgpass
 * honoured), adding replication=database when replication is set and
 * appname as the fallback application_name.  password (from
 * --password-file), when not NULL, wins over one in conninfo.  Returns the
 * connection, NULL only when out of memory; check PQstatus().
 */
PGconn *pgconn_open(const char *conninfo, const char *password, bool replication,
                    const char *appname);

/* libpq messages end with a newline and may span lines: make buf one line
 * (in place), for logs and error messages. */
void pgconn_one_line(char *buf);

/* The connection's last error as one line, in buf; returns buf. */
const char *pgconn_error(const PGconn *conn, char *buf, size_t len);

#endif
