/*
 * pgtypes — the PostgreSQL type OIDs the relay treats specially (the
 * catalog's fixed values, pg_type.dat).
 */
#ifndef DECODE_PGTYPES_H
#define DECODE_PGTYPES_H

#define PG_OID_BOOL 16
#define PG_OID_BYTEA 17
#define PG_OID_INT8 20
#define PG_OID_INT2 21
#define PG_OID_INT4 23
#define PG_OID_TEXT 25
#define PG_OID_OID 26
#define PG_OID_JSON 114
#define PG_OID_FLOAT4 700
#define PG_OID_FLOAT8 701
#define PG_OID_VARCHAR 1043
#define PG_OID_TIMESTAMP 1114
#define PG_OID_TIMESTAMPTZ 1184
#define PG_OID_NUMERIC 1700
#define PG_OID_JSONB 3802

#endif
