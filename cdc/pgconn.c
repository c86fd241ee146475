#include "cdc/pgconn.h"

#include <bsd/string.h>
#include <stdio.h>
#include <string.h>

PGconn *pgconn_open(const char *conninfo, const char *password, bool replication,
                    const char *appname)
{
    const char *keys[5], *vals[5];
    int n = 0;

    keys[n] = "dbname";
    vals[n++] = conninfo;
    if (replication) {
        keys[n] = "replication";
        vals[n++] = "database";
    }
    keys[n] = "fallback_application_name";
    vals[n++] = appname;
    /* last, so that it overrides a password in conninfo */
    if (password) {
        keys[n] = "password";
        vals[n++] = password;
    }
    keys[n] = NULL;
    vals[n] = NULL;
    return PQconnectdbParams(keys, vals, 1);
}

void pgconn_one_line(char *buf)
{
    size_t n = strlen(buf);

    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
}

const char *pgconn_error(const PGconn *conn, char *buf, size_t len)
{
    strlcpy(buf, conn ? PQerrorMessage(conn) : "out of memory", len);
    pgconn_one_line(buf);
    return buf;
}

PGresult *pgconn_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                      ExecStatusType want, char *err, size_t errlen, char sqlstate[6])
{
    PGresult *res = nparams > 0 ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                                : PQexec(conn, sql);
    const char *st;

    if (sqlstate)
        sqlstate[0] = '\0';
    if (PQresultStatus(res) == want)
        return res;
    st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (sqlstate && st)
        strlcpy(sqlstate, st, 6);
    strlcpy(err, res ? PQresultErrorMessage(res) : "", errlen);
    if (!err[0])
        strlcpy(err, conn ? PQerrorMessage(conn) : "out of memory", errlen);
    pgconn_one_line(err);
    PQclear(res);
    return NULL;
}
