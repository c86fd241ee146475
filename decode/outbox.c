#include "decode/outbox.h"

#include <stdio.h>
#include <string.h>

static const char *const role_names[OB_NROLES] = {
    [OB_ID] = "id",
    [OB_AGGREGATE_TYPE] = "aggregate_type",
    [OB_AGGREGATE_ID] = "aggregate_id",
    [OB_TYPE] = "type",
    [OB_PAYLOAD] = "payload",
    [OB_TIMESTAMP] = "timestamp",
    [OB_TRACEPARENT] = "traceparent",
};

/* Debezium's outbox event router column names. */
static const char *const default_cols[OB_NROLES] = {
    [OB_ID] = "id",
    [OB_AGGREGATE_TYPE] = "aggregatetype",
    [OB_AGGREGATE_ID] = "aggregateid",
    [OB_TYPE] = "type",
    [OB_PAYLOAD] = "payload",
    [OB_TIMESTAMP] = "timestamp",
    [OB_TRACEPARENT] = "tracingspancontext",
};

#define VALID_ROLES "id, aggregate_type, aggregate_id, type, payload, timestamp, traceparent"

const char *outbox_role_name(enum outbox_role role)
{
    if ((unsigned)role >= OB_NROLES)
        return "unknown";
    return role_names[role];
}

bool outbox_role_required(enum outbox_role role)
{
    return role == OB_ID || role == OB_AGGREGATE_TYPE || role == OB_AGGREGATE_ID || role == OB_TYPE;
}

void outbox_colmap_init(outbox_colmap *map)
{
    memset(map, 0, sizeof *map);
    for (int r = 0; r < OB_NROLES; r++)
        snprintf(map->col[r], sizeof map->col[r], "%s", default_cols[r]);
}

int outbox_colmap_set(outbox_colmap *map, const char *role_eq_col, char *err, size_t errlen)
{
    const char *eq;
    const char *col;
    size_t rlen, clen;

    if (map == NULL || role_eq_col == NULL) {
        snprintf(err, errlen, "no column mapping given");
        return -1;
    }
    eq = strchr(role_eq_col, '=');
    if (eq == NULL) {
        snprintf(err, errlen, "column mapping \"%s\" is not ROLE=COLUMN (roles: %s)", role_eq_col,
                 VALID_ROLES);
        return -1;
    }
    rlen = (size_t)(eq - role_eq_col);
    col = eq + 1;
    clen = strlen(col);
    for (int r = 0; r < OB_NROLES; r++) {
        if (strlen(role_names[r]) != rlen || strncmp(role_names[r], role_eq_col, rlen) != 0)
            continue;
        if (clen == 0) {
            snprintf(err, errlen, "empty column name for role %s in \"%s\"", role_names[r],
                     role_eq_col);
            return -1;
        }
        if (clen >= sizeof map->col[r]) {
            snprintf(err, errlen, "column name for role %s is %zu bytes, longer than 63",
                     role_names[r], clen);
            return -1;
        }
        memcpy(map->col[r], col, clen + 1);
        return 0;
    }
    snprintf(err, errlen, "unknown role \"%.*s\" in column mapping; valid roles: %s",
             (int)(rlen > 64 ? 64 : rlen), role_eq_col, VALID_ROLES);
    return -1;
}

int outbox_bind(const outbox_colmap *map, const relcache_entry *rel, outbox_binding *out, char *err,
                size_t errlen)
{
    int rc = 0;

    for (int r = 0; r < OB_NROLES; r++) {
        out->idx[r] = -1;
        out->type_oid[r] = 0;
    }
    if (map == NULL || rel == NULL) {
        snprintf(err, errlen, "no column map or relation to bind");
        return -1;
    }
    for (int r = 0; r < OB_NROLES; r++) {
        for (uint16_t i = 0; i < rel->natts; i++) {
            if (rel->atts[i].name != NULL && strcmp(rel->atts[i].name, map->col[r]) == 0) {
                out->idx[r] = i;
                out->type_oid[r] = rel->atts[i].type_oid;
                break;
            }
        }
        /* Report the first missing required role; keep binding the rest. */
        if (out->idx[r] < 0 && outbox_role_required((enum outbox_role)r) && rc == 0) {
            snprintf(err, errlen,
                     "outbox table \"%s\" has no column \"%s\" for role %s; add it or map "
                     "another column with --column %s=COLUMN",
                     rel->qualname != NULL ? rel->qualname : "?", map->col[r], role_names[r],
                     role_names[r]);
            rc = -1;
        }
    }
    return rc;
}

int outbox_extract(const outbox_binding *b, const relcache_entry *rel, const pgo_tuple *tuple,
                   outbox_row *out, char *err, size_t errlen)
{
    const char *table;

    if (b == NULL || rel == NULL || tuple == NULL || out == NULL) {
        snprintf(err, errlen, "no binding, relation or tuple to extract from");
        return -1;
    }
    memset(out, 0, sizeof *out);
    table = rel->qualname != NULL ? rel->qualname : "?";
    if (tuple->ncols != rel->natts) {
        snprintf(err, errlen, "row of \"%s\" has %u columns but the relation has %u", table,
                 (unsigned)tuple->ncols, (unsigned)rel->natts);
        return -1;
    }
    for (int r = 0; r < OB_NROLES; r++) {
        bool required = outbox_role_required((enum outbox_role)r);
        int i = b->idx[r];
        const pgo_value *v;
        const char *col;

        if (i < 0) {
            if (required) {
                snprintf(err, errlen, "outbox table \"%s\" has no column for role %s", table,
                         role_names[r]);
                return -1;
            }
            continue;
        }
        if (i >= tuple->ncols) {
            snprintf(err, errlen, "column %d for role %s is outside the %u-column row of \"%s\"", i,
                     role_names[r], (unsigned)tuple->ncols, table);
            return -1;
        }
        v = &tuple->cols[i];
        col = rel->atts[i].name;
        switch (v->kind) {
        case 'n':
            if (required) {
                snprintf(err, errlen, "column \"%s\" (role %s) is null", col, role_names[r]);
                return -1;
            }
            break;
        case 't':
            if (v->len == 0 && required) {
                snprintf(err, errlen, "column \"%s\" (role %s) is empty", col, role_names[r]);
                return -1;
            }
            if (v->len > 0 && v->data == NULL) {
                snprintf(err, errlen, "column \"%s\" (role %s) has no data", col, role_names[r]);
                return -1;
            }
            out->f[r].data = v->data != NULL ? v->data : "";
            out->f[r].len = v->len;
            out->f[r].present = true;
            break;
        case 'b':
            /* The row has no room for a format flag: a consumer would take
             * binary send format (jsonb's version byte ...) for text. */
            snprintf(err, errlen, "column \"%s\" (role %s) arrived in binary format, not text", col,
                     role_names[r]);
            return -1;
        case 'u':
            /* An INSERT always carries whole values; 'u' means corruption. */
            snprintf(err, errlen, "column \"%s\" (role %s) is an unchanged toast value", col,
                     role_names[r]);
            return -1;
        default:
            snprintf(err, errlen, "column \"%s\" (role %s) has unknown kind 0x%02x", col,
                     role_names[r], (unsigned char)v->kind);
            return -1;
        }
    }
    out->payload_type_oid = b->type_oid[OB_PAYLOAD];
    return 0;
}
