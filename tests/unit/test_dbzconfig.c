/*
 * --debezium-config: a connector's properties become the relay's options;
 * what the relay cannot honour is refused naming the key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/dbzconfig.h"

static int parse(const char *text, cfgfile_entries *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof(*e));
    return dbzconfig_parse("c.properties", text, strlen(text), e, err, errlen);
}

/* The n-th value of key (0-based), or NULL. */
static const char *get(const cfgfile_entries *e, const char *key, int n)
{
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->v[i].key, key) == 0 && n-- == 0)
            return e->v[i].value;
    return NULL;
}

static void test_connector_mapped(void **state)
{
    static const char text[] =
        "# Debezium\n"
        "name = outbox-connector\n"
        "connector.class=io.debezium.connector.postgresql.PostgresConnector\n"
        "plugin.name: pgoutput\n"
        "database.hostname=db.example\n"
        "database.port=5433\n"
        "database.user=app\n"
        "database.dbname=shop\n"
        "topic.prefix=shop\n"
        "slot.name=dbz_outbox\n"
        "publication.name=dbz_pub\n"
        "table.include.list=public.outbox, \\\n"
        "    orders.outbox\n"
        "key.converter=org.apache.kafka.connect.storage.StringConverter\n"
        "value.converter=org.apache.kafka.connect.json.JsonConverter\n"
        "value.converter.schemas.enable=false\n"
        "transforms=outbox\n"
        "transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n"
        "transforms.outbox.table.field.event.key=order_id\n"
        "transforms.outbox.table.field.event.timestamp=created_at\n"
        "transforms.outbox.route.by.field=type\n"
        "transforms.outbox.route.topic.replacement=shop.${routedByValue}.events\n"
        "transforms.outbox.route.tombstone.on.empty.payload=true\n"
        "transforms.outbox.table.expand.json.payload=true\n"
        "transforms.outbox.table.fields.additional.placement=type:header:eventType,"
        "tenant:envelope:tenant\n"
        "transforms.outbox.tracing.span.context.field=trace\\u0073\n";
    cfgfile_entries e;
    char err[512] = "";

    (void)state;
    if (parse(text, &e, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(get(&e, "format", 0), "debezium");
    assert_string_equal(get(&e, "dbname", 0),
                        "host='db.example' port='5433' user='app' dbname='shop'");
    assert_string_equal(get(&e, "slot", 0), "dbz_outbox");
    assert_string_equal(get(&e, "publication", 0), "dbz_pub");
    assert_string_equal(get(&e, "table", 0), "public.outbox");
    assert_string_equal(get(&e, "table", 1), "orders.outbox");
    assert_string_equal(get(&e, "debezium-context", 0), "shop");
    assert_string_equal(get(&e, "debezium-converter", 0), "json");
    assert_string_equal(get(&e, "column", 0), "aggregate_id=order_id");
    assert_string_equal(get(&e, "column", 1), "timestamp=created_at");
    assert_string_equal(get(&e, "message-timestamp", 0), "event");
    assert_string_equal(get(&e, "column", 2), "aggregate_type=type");
    assert_string_equal(get(&e, "topic", 0), "shop.{aggregate_type}.events");
    assert_string_equal(get(&e, "tombstone-on-empty-payload", 0), "true");
    assert_string_equal(get(&e, "expand-json-payload", 0), "true");
    assert_string_equal(get(&e, "field", 0), "type:header:eventType");
    assert_string_equal(get(&e, "field", 1), "tenant:envelope:tenant");
    assert_string_equal(get(&e, "column", 3), "traceparent=traces");
    cfgfile_entries_free(&e);
}

static void expect_refused(const char *text, const char *needle)
{
    cfgfile_entries e;
    char err[512] = "";

    assert_int_equal(parse(text, &e, err, sizeof err), -1);
    if (strstr(err, needle) == NULL)
        fail_msg("\"%s\" does not name \"%s\"", err, needle);
    cfgfile_entries_free(&e);
}

static void test_refused_naming_the_key(void **state)
{
    (void)state;
    expect_refused("slot.name=a\nheartbeat.interval.ms=1000\n", "c.properties:2: heartbeat");
    expect_refused("plugin.name=decoderbufs\n", "plugin.name");
    expect_refused("table.include.list=public.outbox_.*\n", "table.include.list");
    expect_refused("transforms=o\ntransforms.o.type=io.debezium.transforms.outbox.EventRouter\n"
                   "transforms.o.table.fields.additional.placement=p:partition\n",
                   "partition");
    expect_refused("value.converter=org.apache.kafka.connect.json.JsonConverter\n",
                   "schemas.enable");
    expect_refused("transforms=o\ntransforms.o.type=org.example.Other\n", "transforms.o.type");
    expect_refused("transforms=o,p\n", "transforms");
    expect_refused("database.password=x\n", "database.password");
    expect_refused("key.converter=org.apache.kafka.connect.json.JsonConverter\n", "key.converter");
    expect_refused("transforms=o\ntransforms.o.type=io.debezium.transforms.outbox.EventRouter\n"
                   "transforms.o.route.topic.replacement=fixed\n",
                   "route.topic.replacement");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connector_mapped),
        cmocka_unit_test(test_refused_naming_the_key),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
