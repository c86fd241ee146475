/* scrub: the one password scrubber (ps, /status, --print-config, the
 * config file check), with the stricter of the two rules it replaced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cdc/scrub.h"

static void scrub_case(const char *in, const char *want, int count)
{
    char buf[256];

    strcpy(buf, in);
    assert_int_equal(scrub_passwords(buf), count);
    assert_string_equal(buf, want);
}

static void test_keywords(void **state)
{
    (void)state;
    scrub_case("host=db password=secret user=u", "host=db password=*** user=u", 1);
    scrub_case("password = 'a b\\'c' host=x", "password = *** host=x", 1);
    scrub_case("PASSWORD=s3", "PASSWORD=**", 1);
    scrub_case("host=db user=password_owner", "host=db user=password_owner", 0);
    scrub_case("password=", "password=", 0);
    scrub_case("", "", 0);
    assert_int_equal(scrub_passwords(NULL), 0);
}

static void test_uris(void **state)
{
    (void)state;
    scrub_case("postgresql://u:pw@h:5/db", "postgresql://u:**@h:5/db", 1);
    scrub_case("postgres://u:p@ss@h/db?sslmode=require&password=x2",
               "postgres://u:***@h/db?sslmode=require&password=**", 2);
    scrub_case("postgresql://u@h/db", "postgresql://u@h/db", 0);
    scrub_case("postgresql://u:@h/db", "postgresql://u:@h/db", 0);
}

/* What the old command-line scrubber let through and the /status one did
 * not: a password as a suffix, a second URI, and the length of a value. */
static void test_stricter_rule(void **state)
{
    (void)state;
    scrub_case("sasl.password=hunter22", "sasl.password=***", 1);
    scrub_case("nopassword=1 passwordx=2", "nopassword=* passwordx=2", 1);
    scrub_case("from postgres://a:one1@h to postgres://b:two22@k",
               "from postgres://a:***@h to postgres://b:***@k", 2);
    scrub_case("password=averyveryverylongsecret host=x", "password=*** host=x", 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keywords),
        cmocka_unit_test(test_uris),
        cmocka_unit_test(test_stricter_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
