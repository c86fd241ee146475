/* Unit tests for cdc/config: the command-line contract and its checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "cdc/config.h"

#define ARGV(...) ((char *[]){"outbox-relay", __VA_ARGS__, NULL})
#define ARGC(...) ((int)(sizeof((char *[]){"outbox-relay", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(cfg, err, ...)                                                                       \
    config_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (cfg), (err), sizeof(err))

static void test_defaults(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    assert_int_equal(PARSE(&cfg, err, "-b", "127.0.0.1:9092"), CONFIG_OK);
    assert_string_equal(cfg.conninfo, "");
    assert_string_equal(cfg.slot, "outbox_relay");
    assert_string_equal(cfg.publication, "outbox_pub");
    assert_int_equal(cfg.ntables, 1);
    assert_string_equal(cfg.tables[0].qualname, "public.outbox");
    assert_string_equal(cfg.topic, "outbox.event.{aggregate_type}");
    assert_string_equal(cfg.dlq_topic, "outbox.dlq");
    assert_false(cfg.create_slot);
    assert_false(cfg.has_start_lsn);
    assert_false(cfg.has_end_lsn);
    assert_int_equal(cfg.status_interval_ms, 1000);
    assert_string_equal(cfg.tables[0].colmap.col[OB_AGGREGATE_ID], "aggregateid");
    assert_null(cfg.messages_prefix);
    config_free(&cfg);
}

static void test_run_subcommand_and_everything(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    assert_int_equal(PARSE(&cfg, err, "run", "-d", "host=x dbname=app", "--slot", "s1", "-P",
                           "pub1", "-t", "orders.outbox", "--table", "billing", "--create-slot",
                           "--brokers", "a:1,b:2", "-X", "linger.ms=5", "--topic",
                           "events.{table}.{type}", "--column", "aggregate_id=order_id", "--column",
                           "public.billing:aggregate_id=invoice_id", "--messages", "outbox",
                           "--dlq-topic", "dead", "--start-lsn", "0/16B3748", "--end-lsn", "1/0",
                           "--status-interval", "0.5", "--max-inflight", "100",
                           "--max-inflight-bytes", "1M", "-v", "--log-format", "json"),
                     CONFIG_OK);
    assert_string_equal(cfg.conninfo, "host=x dbname=app");
    assert_string_equal(cfg.slot, "s1");
    assert_string_equal(cfg.publication, "pub1");
    assert_int_equal(cfg.ntables, 2);
    assert_string_equal(cfg.tables[0].schema, "orders");
    assert_string_equal(cfg.tables[0].name, "outbox");
    assert_string_equal(cfg.tables[1].qualname, "public.billing");
    assert_true(cfg.create_slot);
    assert_string_equal(cfg.brokers, "a:1,b:2");
    assert_int_equal(cfg.nprops, 1);
    assert_string_equal(cfg.props[0].name, "linger.ms");
    assert_string_equal(cfg.props[0].value, "5");
    assert_string_equal(cfg.tables[0].colmap.col[OB_AGGREGATE_ID], "order_id");
    assert_string_equal(cfg.tables[1].colmap.col[OB_AGGREGATE_ID], "invoice_id");
    assert_string_equal(cfg.tables[1].colmap.col[OB_TYPE], "type");
    assert_string_equal(cfg.messages_prefix, "outbox");
    assert_string_equal(cfg.dlq_topic, "dead");
    assert_true(cfg.has_start_lsn);
    assert_int_equal(cfg.start_lsn, 0x16B3748);
    assert_int_equal(cfg.end_lsn, UINT64_C(1) << 32);
    assert_int_equal(cfg.status_interval_ms, 500);
    assert_int_equal(cfg.max_inflight_events, 100);
    assert_int_equal(cfg.max_inflight_bytes, 1 << 20);
    assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
    assert_true(cfg.log_json);
    config_free(&cfg);
}

/* Each bad input gives CONFIG_USAGE and a message containing a hint. */
static void expect_usage(int argc, char **argv, const char *hint)
{
    config cfg;
    char err[512] = "";
    assert_int_equal(config_parse(argc, argv, &cfg, err, sizeof(err)), CONFIG_USAGE);
    if (!strstr(err, hint))
        fail_msg("message \"%s\" lacks \"%s\"", err, hint);
    config_free(&cfg);
}

#define EXPECT_USAGE(hint, ...) expect_usage(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), hint)

static void test_bad_usage(void **state)
{
    (void)state;
    EXPECT_USAGE("unknown option", "-b", "x:1", "--no-such-flag");
    EXPECT_USAGE("needs a value", "-b", "x:1", "--slot");
    EXPECT_USAGE("malformed --start-lsn", "-b", "x:1", "--start-lsn", "16B3748");
    EXPECT_USAGE("malformed --end-lsn", "-b", "x:1", "--end-lsn", "0/xyz");
    EXPECT_USAGE("use envelope, debezium", "-b", "x:1", "--format", "avro");
    EXPECT_USAGE("no Kafka brokers", "-d", "dbname=x");
    EXPECT_USAGE("-X list", "-b", "x:1", "-X", "no.such.property=1");
    EXPECT_USAGE("-X list", "-b", "x:1", "-X", "linger.ms");
    EXPECT_USAGE("acks", "-b", "x:1", "-X", "acks=maybe");
    EXPECT_USAGE("--column", "-b", "x:1", "--column", "nosuchrole=x");
    EXPECT_USAGE("not an outbox table", "-b", "x:1", "--column", "other.t:type=kind");
    EXPECT_USAGE("--messages", "-b", "x:1", "--messages", "");
    EXPECT_USAGE("--field", "-b", "x:1", "--field", "col:nowhere");
    EXPECT_USAGE("--message-timestamp", "-b", "x:1", "--message-timestamp", "later");
    EXPECT_USAGE("debezium", "-b", "x:1", "--tombstone-on-empty-payload");
    EXPECT_USAGE("--slot", "-b", "x:1", "--slot", "Bad-Name");
    EXPECT_USAGE("--table", "-b", "x:1", "--table", "a.b.c");
    EXPECT_USAGE("--table", "-b", "x:1", "--table", "a\".b");
    EXPECT_USAGE("twice", "-b", "x:1", "--table", "outbox", "--table", "public.outbox");
    EXPECT_USAGE("--topic", "-b", "x:1", "--topic", "x.{nope}");
    EXPECT_USAGE("--dlq-topic", "-b", "x:1", "--dlq-topic", "bad topic");
    EXPECT_USAGE("--http", "-b", "x:1", "--http", "127.0.0.1:notaport");
    EXPECT_USAGE("--log-format", "-b", "x:1", "--log-format", "xml");
    EXPECT_USAGE("--status-interval", "-b", "x:1", "--status-interval", "0");
    EXPECT_USAGE("--max-inflight", "-b", "x:1", "--max-inflight", "10k");
    EXPECT_USAGE("--max-inflight-bytes", "-b", "x:1", "--max-inflight-bytes", "-1");
    EXPECT_USAGE("swap", "-b", "x:1", "--start-lsn", "0/20", "--end-lsn", "0/10");
    EXPECT_USAGE("unexpected argument", "-b", "x:1", "stray");
    EXPECT_USAGE("unknown sub-command", "rerun", "-b", "x:1");
}

static void test_bootstrap_from_property(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    assert_int_equal(PARSE(&cfg, err, "-X", "bootstrap.servers=127.0.0.1:9"), CONFIG_OK);
    config_free(&cfg);
}

static void test_parse_twice(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";
    /* getopt keeps global state: a second parse must start over. */
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--slot", "one"), CONFIG_OK);
    config_free(&cfg);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--slot", "two"), CONFIG_OK);
    assert_string_equal(cfg.slot, "two");
    config_free(&cfg);
}

static void test_sizes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(config_parse_size("10", &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(config_parse_size("64M", &v), 0);
    assert_int_equal(v, UINT64_C(64) << 20);
    assert_int_equal(config_parse_size("2kB", &v), 0);
    assert_int_equal(v, 2048);
    assert_int_equal(config_parse_size("1G", &v), 0);
    assert_int_equal(v, UINT64_C(1) << 30);
    assert_int_equal(config_parse_size("0", &v), -1);
    assert_int_equal(config_parse_size("", &v), -1);
    assert_int_equal(config_parse_size("1T", &v), -1);
    assert_int_equal(config_parse_size("1MM", &v), -1);
    assert_int_equal(config_parse_size("99999999999999999999", &v), -1);
    assert_int_equal(config_parse_size("18446744073709551615G", &v), -1);
}

static void test_password_file(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "", path[] = "/tmp/obx-pw-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hunter2\nignored\n", 16), 16);
    close(fd);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--password-file", path), CONFIG_OK);
    assert_string_equal(cfg.password, "hunter2");
    config_free(&cfg);
    assert_null(cfg.password);
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--password-file", path), CONFIG_USAGE);
    assert_non_null(strstr(err, "empty"));
    config_free(&cfg);
    unlink(path);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--password-file", path), CONFIG_USAGE);
    assert_non_null(strstr(err, "cannot read"));
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),      cmocka_unit_test(test_run_subcommand_and_everything),
        cmocka_unit_test(test_bad_usage),     cmocka_unit_test(test_bootstrap_from_property),
        cmocka_unit_test(test_parse_twice),   cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_password_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
