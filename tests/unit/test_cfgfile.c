/* Unit tests for cdc/cfgfile (the file's syntax, the environment's names)
 * and for config_parse()'s layering of file < environment < command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cdc/cfgfile.h"
#include "cdc/config.h"

static int parse(const char *text, cfgfile_entries *e, char *err, size_t errlen)
{
    return cfgfile_parse("t.conf", text, strlen(text), e, err, errlen);
}

static void test_syntax(void **state)
{
    (void)state;
    cfgfile_entries e = {0};
    char err[256] = "";
    const char *text = "\xEF\xBB\xBF# comment\n"
                       "\n"
                       "   \t# indented comment\r\n"
                       "slot=s1\n"
                       "  brokers   =   a:1,b:2   # trailing comment\n"
                       "topic = \"x #y \\\"q\\\" \\\\ \"  # comment after a quoted value\n"
                       "dbname = host=x dbname=a#b\r\n"
                       "kafka.linger.ms = 5"; /* no final newline */

    assert_int_equal(parse(text, &e, err, sizeof(err)), 0);
    assert_int_equal(e.n, 5);
    assert_string_equal(e.v[0].key, "slot");
    assert_string_equal(e.v[0].value, "s1");
    assert_int_equal(e.v[0].line, 4);
    assert_string_equal(e.v[0].where, "t.conf:4");
    assert_string_equal(e.v[1].value, "a:1,b:2");
    assert_string_equal(e.v[2].value, "x #y \"q\" \\ ");
    assert_string_equal(e.v[3].value, "host=x dbname=a#b"); /* '#' without a blank before */
    assert_string_equal(e.v[4].key, "kafka.linger.ms");
    assert_string_equal(e.v[4].value, "5");
    assert_int_equal(e.v[4].line, 8);
    cfgfile_entries_free(&e);
    assert_int_equal(e.n, 0);
    cfgfile_entries_free(&e); /* twice is fine */
    cfgfile_entries_free(NULL);
}

/* Each bad line is refused with the file name, its line and what to do. */
static void test_nasty_inputs(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"slot\n", "t.conf:1: expected \"=\""},
        {"\n\nslot s1\n", "t.conf:3: expected \"=\""},
        {"= value\n", "t.conf:1: expected \"key = value\""},
        {"slot =\n", "t.conf:1: \"slot\" has no value"},
        {"slot =    # only a comment\n", "t.conf:1: \"slot\" has no value"},
        {"slot = \"\"\n", "t.conf:1: \"slot\" has an empty value"},
        {"slot = \"abc\n", "t.conf:1: unterminated quoted value"},
        {"slot = \"abc\" def\n", "t.conf:1: text after the closing quote"},
        {"Slot = x\n", "t.conf:1: keys are lower case"},
        {"sl$ot = x\n", "t.conf:1: character '$' is not allowed"},
        {"slot = a\x01z\n", "t.conf:1: control character 0x01"},
        {"[section]\n", "t.conf:1: expected \"key = value\", found '['"},
    };
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfgfile_entries e = {0};
        err[0] = '\0';
        assert_int_equal(parse(cases[i].text, &e, err, sizeof(err)), -1);
        if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s...\"", i, err, cases[i].want);
        cfgfile_entries_free(&e);
    }
    /* a NUL byte, on line 2 */
    cfgfile_entries e = {0};
    assert_int_equal(cfgfile_parse("t.conf", "a = 1\nb = \0x\n", 12, &e, err, sizeof(err)), -1);
    assert_string_equal(err, "t.conf:2: a NUL byte: is this a text file?");
    cfgfile_entries_free(&e);
    /* a line longer than the cap */
    size_t n = CFGFILE_MAX_LINE + 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memcpy(big, "slot = ", 7);
    memset(big + 7, 'a', n - 7);
    big[n] = '\0';
    assert_int_equal(parse(big, &e, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "t.conf:1: line longer than"));
    free(big);
    cfgfile_entries_free(&e);
}

static void test_read_file(void **state)
{
    (void)state;
    char path[] = "/tmp/obx-cfgfile-XXXXXX", err[512];
    cfgfile_entries e = {0};
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "slot = a\n", 9), 9);
    close(fd);
    assert_int_equal(cfgfile_read(path, &e, err, sizeof(err)), 0);
    assert_int_equal(e.n, 1);
    cfgfile_entries_free(&e);
    unlink(path);
    assert_int_equal(cfgfile_read(path, &e, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file"));
    assert_non_null(strstr(err, path));
    assert_int_equal(cfgfile_read("/", &e, err, sizeof(err)), -1);
}

static void test_env_names(void **state)
{
    (void)state;
    char *envp[] = {"PATH=/bin",
                    "OUTBOX_RELAY_BROKERS=a:1",
                    "OUTBOX_RELAY_MAX_INFLIGHT_BYTES=1M",
                    "OUTBOX_RELAY_KAFKA_SASL_PASSWORD=p=w",
                    "OUTBOX_RELAY_CONFIG=/etc/x.conf",
                    "OUTBOX_RELAYX=1",
                    NULL};
    cfgfile_entries e = {0};
    char err[256], name[128];

    assert_int_equal(cfgfile_from_env(envp, &e, err, sizeof(err)), 0);
    assert_int_equal(e.n, 3);
    assert_string_equal(e.v[0].key, "brokers");
    assert_string_equal(e.v[0].where, "env OUTBOX_RELAY_BROKERS");
    assert_string_equal(e.v[1].key, "max-inflight-bytes");
    assert_string_equal(e.v[2].key, "kafka.sasl.password");
    assert_string_equal(e.v[2].value, "p=w");
    cfgfile_entries_free(&e);
    char *bad[] = {"OUTBOX_RELAY_=1", NULL};
    assert_int_equal(cfgfile_from_env(bad, &e, err, sizeof(err)), -1);
    cfgfile_entries_free(&e);
    cfgfile_env_name("kafka.sasl.password", name, sizeof(name));
    assert_string_equal(name, "OUTBOX_RELAY_KAFKA_SASL_PASSWORD");
    cfgfile_env_name("max-inflight", name, sizeof(name));
    assert_string_equal(name, "OUTBOX_RELAY_MAX_INFLIGHT");
}

/* ---- layering through config_parse() --------------------------------------- */

static char conf_path[64];

static void write_conf(const char *text)
{
    FILE *f;
    strcpy(conf_path, "/tmp/obx-conf-XXXXXX");
    int fd = mkstemp(conf_path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int clear_env(void **state)
{
    (void)state;
    unsetenv("OUTBOX_RELAY_SLOT");
    unsetenv("OUTBOX_RELAY_TABLE");
    unsetenv("OUTBOX_RELAY_CONFIG");
    unsetenv("OUTBOX_RELAY_CREATE_SLOT");
    unsetenv("OUTBOX_RELAY_KAFKA_LINGER_MS");
    unsetenv("OUTBOX_RELAY_NO_SUCH");
    if (conf_path[0])
        unlink(conf_path);
    conf_path[0] = '\0';
    return 0;
}

#define PARSE(cfg, err, ...)                                                                       \
    config_parse((int)(sizeof((char *[]){"outbox-relay", __VA_ARGS__}) / sizeof(char *)),          \
                 (char *[]){"outbox-relay", __VA_ARGS__, NULL}, (cfg), (err), sizeof(err))

static void test_precedence(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "";

    write_conf("brokers = f:1\n"
               "slot = file_slot\n"
               "publication = file_pub\n"
               "dlq-topic = file.dlq\n"
               "table = f.one\n"
               "table = f.two\n"
               "create-slot = true\n"
               "kafka.linger.ms = 5\n"
               "kafka.acks = 1\n"
               "log-level = warn\n");
    setenv("OUTBOX_RELAY_SLOT", "env_slot", 1);
    setenv("OUTBOX_RELAY_TABLE", "e.one, e.two,e.three", 1);
    setenv("OUTBOX_RELAY_CREATE_SLOT", "false", 1);
    setenv("OUTBOX_RELAY_KAFKA_LINGER_MS", "7", 1);
    assert_int_equal(
        PARSE(&cfg, err, "--config", conf_path, "--publication", "cli_pub", "-X", "acks=all"),
        CONFIG_OK);
    assert_string_equal(cfg.brokers, "f:1");         /* file only */
    assert_string_equal(cfg.slot, "env_slot");       /* env over file */
    assert_string_equal(cfg.publication, "cli_pub"); /* command line over file */
    assert_string_equal(cfg.dlq_topic, "file.dlq");
    assert_int_equal(cfg.ntables, 3); /* the environment's list replaces */
    assert_string_equal(cfg.tables[0].qualname, "e.one");
    assert_string_equal(cfg.tables[2].qualname, "e.three");
    assert_false(cfg.create_slot); /* env false over file true */
    assert_int_equal(cfg.log_level, LOG_LEVEL_WARN);
    /* -X merges by property: the last of each wins in librdkafka */
    const char *linger = NULL, *acks = NULL;
    for (size_t i = 0; i < cfg.nprops; i++) {
        if (strcmp(cfg.props[i].name, "linger.ms") == 0)
            linger = cfg.props[i].value;
        if (strcmp(cfg.props[i].name, "acks") == 0)
            acks = cfg.props[i].value;
    }
    assert_string_equal(linger, "7");
    assert_string_equal(acks, "all");
    config_free(&cfg);

    /* the command line's list replaces the environment's */
    assert_int_equal(PARSE(&cfg, err, "--config", conf_path, "-t", "c.only", "--create-slot", "-v"),
                     CONFIG_OK);
    assert_int_equal(cfg.ntables, 1);
    assert_string_equal(cfg.tables[0].qualname, "c.only");
    assert_true(cfg.create_slot);
    assert_int_equal(cfg.log_level, LOG_LEVEL_INFO); /* warn from the file, -v */
    config_free(&cfg);

    /* OUTBOX_RELAY_CONFIG names the file when --config does not */
    unsetenv("OUTBOX_RELAY_TABLE");
    setenv("OUTBOX_RELAY_CONFIG", conf_path, 1);
    assert_int_equal(PARSE(&cfg, err, "--dlq-topic", "cli.dlq"), CONFIG_OK);
    assert_string_equal(cfg.tables[1].qualname, "f.two");
    assert_string_equal(cfg.dlq_topic, "cli.dlq");
    assert_string_equal(cfg.config_file, conf_path);
    config_free(&cfg);
    clear_env(NULL);
}

/* A bad value in the file is reported at its line; so is one from the
 * environment, by name. */
static void test_bad_values_located(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "", want[128];

    write_conf("brokers = f:1\n\nmax-inflight = lots\n");
    assert_int_equal(PARSE(&cfg, err, "--config", conf_path), CONFIG_USAGE);
    snprintf(want, sizeof(want), "%s:3: invalid --max-inflight \"lots\"", conf_path);
    assert_non_null(strstr(err, want));
    config_free(&cfg);
    clear_env(NULL);

    write_conf("brokers = f:1\nkafka.no.such.property = 1\n");
    assert_int_equal(PARSE(&cfg, err, "--config", conf_path), CONFIG_USAGE);
    snprintf(want, sizeof(want), "%s:2:", conf_path);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "no.such.property"));
    config_free(&cfg);
    clear_env(NULL);

    setenv("OUTBOX_RELAY_SLOT", "Bad-Slot", 1);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1"), CONFIG_USAGE);
    assert_non_null(strstr(err, "environment variable OUTBOX_RELAY_SLOT: invalid --slot"));
    config_free(&cfg);
    clear_env(NULL);

    setenv("OUTBOX_RELAY_NO_SUCH", "1", 1);
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1"), CONFIG_USAGE);
    assert_non_null(strstr(err, "OUTBOX_RELAY_NO_SUCH: unknown option \"no-such\""));
    config_free(&cfg);
    clear_env(NULL);
}

static void test_file_refusals(void **state)
{
    static const struct {
        const char *text;
        const char *want;
    } cases[] = {
        {"brokers = a:1\nkafka.sasl.password = hunter2\n",
         ":2: kafka.sasl.password is a secret and does not belong in the file: write "
         "\"kafka.sasl.password.file = PATH\""},
        {"kafka.ssl.key.pem = ---\n", ":1: kafka.ssl.key.pem is a secret"},
        {"dbname = host=db password=hunter2\n", ":1: the conninfo carries a password"},
        {"dbname = postgresql://u:hunter2@db/app\n", ":1: the conninfo carries a password"},
        {"slot = a\nslot = b\n", ":2: slot is already set on line 1"},
        {"no-such-option = 1\n", ":1: unknown option \"no-such-option\""},
        {"help = true\n", ":1: \"help\" can only be given on the command line"},
        {"config = /etc/other.conf\n", ":1: \"config\" can only be given"},
        {"kafka = linger.ms=1\n", ":1: \"kafka\" can only be given"},
        {"create-slot = maybe\n", ":1: create-slot takes true or false"},
        {"kafka. = 1\n", ":1: give a librdkafka property"},
        {"kafka.sasl.password.file = /nonexistent/pw\n", ":1: cannot read \"/nonexistent/pw\""},
    };
    config cfg;
    char err[512];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_conf(cases[i].text);
        err[0] = '\0';
        assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--config", conf_path), CONFIG_USAGE);
        if (strncmp(err, conf_path, strlen(conf_path)) != 0 || !strstr(err, cases[i].want))
            fail_msg("case %zu: got \"%s\", want \"%s%s...\"", i, err, conf_path, cases[i].want);
        assert_null(strstr(err, "hunter2"));
        config_free(&cfg);
        clear_env(NULL);
    }
    assert_int_equal(PARSE(&cfg, err, "-b", "x:1", "--config", "/nonexistent.conf"), CONFIG_USAGE);
    assert_non_null(strstr(err, "cannot read --config \"/nonexistent.conf\""));
    config_free(&cfg);
}

/* Secrets: from a .file in the file, or the environment. */
static void test_secret_sources(void **state)
{
    (void)state;
    config cfg;
    char err[512] = "", pw[] = "/tmp/obx-pw-XXXXXX", text[256];
    int fd = mkstemp(pw);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "s3cret\r\nignored\n", 16), 16);
    close(fd);
    snprintf(text, sizeof(text),
             "brokers = a:1\nkafka.security.protocol = sasl_plaintext\nkafka.sasl.mechanism = "
             "PLAIN\nkafka.sasl.username = u\nkafka.sasl.password.file = %s\n",
             pw);
    write_conf(text);
    assert_int_equal(PARSE(&cfg, err, "--config", conf_path), CONFIG_OK);
    bool found = false;
    for (size_t i = 0; i < cfg.nprops; i++)
        if (strcmp(cfg.props[i].name, "sasl.password") == 0) {
            assert_string_equal(cfg.props[i].value, "s3cret");
            found = true;
        }
    assert_true(found);
    config_free(&cfg);
    unlink(pw);
    clear_env(NULL);
    assert_true(config_secret_prop("sasl.password"));
    assert_true(config_secret_prop("ssl.keystore.password"));
    assert_true(config_secret_prop("sasl.oauthbearer.client.secret"));
    assert_false(config_secret_prop("sasl.username"));
    assert_false(config_secret_prop("linger.ms"));
}

/* SIGHUP: the file read again; what changed, and a broken file refused. */
static void test_reload(void **state)
{
    (void)state;
    config cfg, next;
    char err[512] = "", keys[16][64];
    char *argv[] = {"outbox-relay", "--config", NULL, "--dlq-topic", "cli.dlq", NULL};

    write_conf("brokers = f:1\nslot = one\nlog-level = info\nkafka.linger.ms = 5\n");
    argv[2] = conf_path;
    assert_int_equal(config_parse(5, argv, &cfg, err, sizeof(err)), CONFIG_OK);
    /* unchanged: nothing differs */
    assert_int_equal(config_reload(&cfg, &next, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(config_changed_keys(&cfg, &next, keys, 16), 0);
    config_free(&next);

    FILE *f = fopen(conf_path, "w");
    assert_non_null(f);
    fputs("brokers = f:1\nslot = two\nlog-level = debug\nlog-format = json\n"
          "kafka.linger.ms = 7\ndlq-topic = file.dlq\n",
          f);
    fclose(f);
    assert_int_equal(config_reload(&cfg, &next, err, sizeof(err)), CONFIG_OK);
    assert_int_equal(next.log_level, LOG_LEVEL_DEBUG);
    assert_true(next.log_json);
    assert_string_equal(next.slot, "two");
    assert_string_equal(next.dlq_topic, "cli.dlq"); /* the command line still wins */
    int n = config_changed_keys(&cfg, &next, keys, 16);
    bool slot = false, level = false, format = false, linger = false;
    for (int i = 0; i < n; i++) {
        slot = slot || strcmp(keys[i], "slot") == 0;
        level = level || strcmp(keys[i], "log-level") == 0;
        format = format || strcmp(keys[i], "log-format") == 0;
        linger = linger || strcmp(keys[i], "kafka.linger.ms") == 0;
        assert_string_not_equal(keys[i], "dlq-topic"); /* a new source, the same value */
    }
    assert_true(slot && level && format && linger);
    assert_int_equal(n, 4);
    config_free(&next);

    f = fopen(conf_path, "w");
    assert_non_null(f);
    fputs("brokers = f:1\nslot = Bad\n", f);
    fclose(f);
    assert_int_equal(config_reload(&cfg, &next, err, sizeof(err)), CONFIG_USAGE);
    assert_non_null(strstr(err, ":2: invalid --slot"));
    config_free(&next);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_nasty_inputs),
        cmocka_unit_test(test_read_file),
        cmocka_unit_test(test_env_names),
        cmocka_unit_test_teardown(test_precedence, clear_env),
        cmocka_unit_test_teardown(test_bad_values_located, clear_env),
        cmocka_unit_test_teardown(test_file_refusals, clear_env),
        cmocka_unit_test_teardown(test_secret_sources, clear_env),
        cmocka_unit_test_teardown(test_reload, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
