/*
 * record — the record builder alone, for counting instructions:
 *
 *   valgrind --tool=callgrind --toggle-collect=envelope_build_opts \
 *       build/bench/record FORMAT N [nofields]
 *
 * builds N records of one outbox row (a 0.3 kB jsonb payload, a traceparent,
 * one header field and one envelope field unless nofields) in FORMAT.
 * Callgrind's totals for two values of N, subtracted and divided by their
 * difference, give the instructions of one build without the first call's
 * lazy binding.  Prints the bytes written so the work cannot be optimised
 * away.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema/envelope.h"

static outbox_field fld(const char *s)
{
    return (outbox_field){.data = s, .len = strlen(s), .present = true};
}

int main(int argc, char **argv)
{
    static const envelope_field fields[] = {
        {.column = "tenant", .name = "tenant", .placement = ENVELOPE_PLACE_HEADER},
        {.column = "region", .name = "region", .placement = ENVELOPE_PLACE_ENVELOPE},
    };
    envelope_extra extras[2] = {
        {.field = &fields[0], .data = "acme", .len = 4, .type_oid = 25},
        {.field = &fields[1], .data = "eu", .len = 2, .type_oid = 25},
    };
    envelope_opts o = {.topic_tmpl = "outbox.event.{aggregate_type}"};
    envelope_source src = {.lsn = 0x16B3748,
                           .commit_lsn = 0x16B3800,
                           .xid = 745,
                           .commit_ts = INT64_C(848772853123999),
                           .db = "app",
                           .table = "public.outbox",
                           .slot = "outbox_relay"};
    outbox_row row;
    char err[256];
    size_t total = 0;
    long n;

    if (argc < 3 || argc > 4 || (argc == 4 && strcmp(argv[3], "nofields") != 0) ||
        envelope_format_parse(argv[1], &o.format) != 0 || (n = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: record FORMAT N [nofields]\n");
        return 2;
    }
    memset(&row, 0, sizeof row);
    row.f[OB_ID] = fld("6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a");
    row.f[OB_AGGREGATE_TYPE] = fld("order");
    row.f[OB_AGGREGATE_ID] = fld("42");
    row.f[OB_TYPE] = fld("OrderPlaced");
    row.f[OB_PAYLOAD] =
        fld("{\"orderId\": 42, \"customer\": {\"id\": 7, \"name\": \"Zoë Example\", \"email\": "
            "\"zoe@example.com\"}, \"lines\": [{\"sku\": \"A-100\", \"qty\": 2, \"price\": 19.99}, "
            "{\"sku\": \"B-200\", \"qty\": 1, \"price\": 5.5}], \"total\": 45.48, \"currency\": "
            "\"EUR\", \"note\": \"leave at the door\\n\"}");
    row.payload_type_oid = 3802;
    row.f[OB_TIMESTAMP] = fld("2026-11-23 18:14:13.123456+00");
    row.f[OB_TRACEPARENT] = fld("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    o.fields = fields;
    o.nfields = argc == 4 ? 0 : 2;
    for (long i = 0; i < n; i++) {
        envelope_msg m;

        src.seq = (uint32_t)i;
        if (envelope_build_opts(&o, &row, extras, o.nfields, &src, &m, err, sizeof err) != 0) {
            fprintf(stderr, "record: %s\n", err);
            return 1;
        }
        total += m.valuelen + (size_t)m.nheaders;
        envelope_msg_clear(&m);
    }
    printf("%zu\n", total);
    return 0;
}
