/*
 * pgtypes — the PostgreSQL type OIDs the schema layer tells apart (from
 * pg_type.h; fixed since PostgreSQL 9.4).  Constants only.
 */
#ifndef SCHEMA_PGTYPES_H
#define SCHEMA_PGTYPES_H

#define PGTYPE_BOOL 16
#define PGTYPE_BYTEA 17
#define PGTYPE_INT8 20
#define PGTYPE_INT2 21
#define PGTYPE_INT4 23
#define PGTYPE_TEXT 25
#define PGTYPE_OID 26
#define PGTYPE_JSON 114
#define PGTYPE_FLOAT4 700
#define PGTYPE_FLOAT8 701
#define PGTYPE_VARCHAR 1043
#define PGTYPE_NUMERIC 1700
#define PGTYPE_JSONB 3802

#endif
