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

/*
 * The one query wrapper: run sql (with nparams text params through the
 * extended protocol; nparams 0 uses the simple protocol, the only one a
 * replication connection speaks) and return the result when its status is
 * want.  Otherwise NULL with err holding the server's message on one line
 * and, when sqlstate is not NULL, its SQLSTATE ("" when none).
 */
PGresult *pgconn_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                      ExecStatusType want, char *err, size_t errlen, char sqlstate[6]);

/* libpq messages end with a newline and may span lines: make buf one line
 * (in place), for logs and error messages. */
void pgconn_one_line(char *buf);

/* The connection's last error as one line, in buf; returns buf. */
const char *pgconn_error(const PGconn *conn, char *buf, size_t len);

#endif
