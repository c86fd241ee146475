/*
 * pgtypes — the PostgreSQL type OIDs the relay treats specially (the
 * catalog's fixed values, pg_type.dat).
 */
#ifndef BASE_PGTYPES_H
#define BASE_PGTYPES_H

#define PG_OID_BYTEA 17
#define PG_OID_TEXT 25
#define PG_OID_JSON 114
#define PG_OID_VARCHAR 1043
#define PG_OID_JSONB 3802

#endif
