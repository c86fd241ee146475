#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode/relcache.h"

/* A Relation message's worth of names in writable buffers, so a test can
 * scribble over them after relcache_put() and prove the cache copied. */
typedef struct relbuf {
    char nsp[64];
    char rel[64];
    char names[8][64];
    pgo_attr atts[8];
    pgo_relation r;
} relbuf;

static void relbuf_init(relbuf *b, uint32_t oid, const char *nsp, const char *rel, int natts,
                        const char *const *names, const uint32_t *types)
{
    memset(b, 0, sizeof *b);
    snprintf(b->nsp, sizeof b->nsp, "%s", nsp);
    snprintf(b->rel, sizeof b->rel, "%s", rel);
    for (int i = 0; i < natts; i++) {
        snprintf(b->names[i], sizeof b->names[i], "%s", names[i]);
        b->atts[i].name = b->names[i];
        b->atts[i].type_oid = types[i];
        b->atts[i].typmod = -1;
        b->atts[i].flags = i == 0;
    }
    b->r.oid = oid;
    b->r.nspname = b->nsp;
    b->r.relname = b->rel;
    b->r.replident = 'd';
    b->r.natts = (uint16_t)natts;
    b->r.atts = b->atts;
}

static const char *const cols3[] = {"id", "aggregatetype", "payload"};
static const uint32_t types3[] = {2950, 25, 3802};

static void test_new_free_empty(void **state)
{
    relcache *rc = relcache_new();

    (void)state;
    assert_non_null(rc);
    assert_null(relcache_get(rc, 0));
    assert_null(relcache_get(rc, 16384));
    assert_null(relcache_get(NULL, 1));
    relcache_clear(rc);
    relcache_clear(NULL);
    relcache_free(rc);
    relcache_free(NULL);
}

static void test_put_deep_copy(void **state)
{
    relcache *rc = relcache_new();
    relbuf b;
    relcache_entry *e;

    (void)state;
    relbuf_init(&b, 16384, "public", "outbox", 3, cols3, types3);
    e = relcache_put(rc, &b.r);
    assert_non_null(e);
    /* Overwrite every source byte: the entry must not change. */
    memset(b.nsp, 'X', sizeof b.nsp - 1);
    memset(b.rel, 'Y', sizeof b.rel - 1);
    for (int i = 0; i < 3; i++)
        memset(b.names[i], 'Z', 10);
    b.atts[1].type_oid = 1;
    assert_ptr_equal(relcache_get(rc, 16384), e);
    assert_int_equal(e->oid, 16384);
    assert_string_equal(e->nspname, "public");
    assert_string_equal(e->relname, "outbox");
    assert_string_equal(e->qualname, "public.outbox");
    assert_int_equal(e->natts, 3);
    assert_string_equal(e->atts[0].name, "id");
    assert_string_equal(e->atts[1].name, "aggregatetype");
    assert_string_equal(e->atts[2].name, "payload");
    assert_int_equal(e->atts[0].type_oid, 2950);
    assert_int_equal(e->atts[1].type_oid, 25);
    assert_int_equal(e->atts[2].type_oid, 3802);
    assert_int_equal(e->atts[0].typmod, -1);
    assert_int_equal(e->atts[0].flags, 1);
    assert_int_equal(e->atts[1].flags, 0);
    assert_null(e->user);
    assert_null(relcache_get(rc, 16385));
    relcache_free(rc);
}

/* Replacement frees the old entry and its user pointer (LeakSanitizer and
 * ASan in the sanitizer build catch a leak or a double free). */
static void test_replace(void **state)
{
    static const char *const cols4[] = {"id", "aggregatetype", "payload", "extra"};
    static const uint32_t types4[] = {2950, 25, 3802, 25};
    relcache *rc = relcache_new();
    relbuf b1, b2;
    relcache_entry *e1, *e2;

    (void)state;
    relbuf_init(&b1, 16384, "public", "outbox", 3, cols3, types3);
    relbuf_init(&b2, 16384, "app", "outbox2", 4, cols4, types4);
    e1 = relcache_put(rc, &b1.r);
    assert_non_null(e1);
    e1->user = malloc(100);
    assert_non_null(e1->user);
    e2 = relcache_put(rc, &b2.r);
    assert_non_null(e2);
    assert_ptr_equal(relcache_get(rc, 16384), e2);
    assert_null(e2->user); /* the binding of the old version is gone */
    assert_int_equal(e2->natts, 4);
    assert_string_equal(e2->qualname, "app.outbox2");
    assert_string_equal(e2->atts[3].name, "extra");
    /* Replace again with the same content, with a user pointer set. */
    e2->user = strdup("binding");
    e1 = relcache_put(rc, &b2.r);
    assert_non_null(e1);
    assert_null(e1->user);
    assert_int_equal(e1->natts, 4);
    relcache_free(rc);
}

static void test_zero_columns_and_empty_names(void **state)
{
    relcache *rc = relcache_new();
    relbuf b;
    relcache_entry *e;

    (void)state;
    relbuf_init(&b, 1, "", "t", 0, NULL, NULL);
    b.r.atts = NULL;
    e = relcache_put(rc, &b.r);
    assert_non_null(e);
    assert_int_equal(e->natts, 0);
    assert_string_equal(e->qualname, ".t");
    /* Names absent altogether are stored as empty strings. */
    b.r.oid = 2;
    b.r.nspname = NULL;
    b.r.relname = NULL;
    e = relcache_put(rc, &b.r);
    assert_non_null(e);
    assert_string_equal(e->qualname, ".");
    /* Columns claimed but no array: refused, and the old version of that
     * OID is dropped rather than left stale. */
    b.r.oid = 2;
    b.r.natts = 2;
    assert_null(relcache_put(rc, &b.r));
    assert_null(relcache_get(rc, 2));
    assert_non_null(relcache_get(rc, 1));
    assert_null(relcache_put(NULL, &b.r));
    assert_null(relcache_put(rc, NULL));
    relcache_free(rc);
}

static uint32_t oid_at(int i)
{
    /* Mix of consecutive OIDs, the extremes, and strides that collide in a
     * naive power-of-two table. */
    if (i == 0)
        return 0;
    if (i == 1)
        return UINT32_MAX;
    if (i % 3 == 0)
        return (uint32_t)i * 65536u;
    if (i % 3 == 1)
        return 16384u + (uint32_t)i;
    return (uint32_t)i * 1024u + 7u;
}

static void test_many_oids(void **state)
{
    enum { N = 20000 };
    relcache *rc = relcache_new();
    relcache_entry *first;
    relbuf b;
    char name[64];

    (void)state;
    relbuf_init(&b, 0, "public", "t", 3, cols3, types3);
    first = NULL;
    for (int i = 0; i < N; i++) {
        relcache_entry *e;

        b.r.oid = oid_at(i);
        snprintf(b.rel, sizeof b.rel, "t%d", i);
        e = relcache_put(rc, &b.r);
        assert_non_null(e);
        if (i == 0)
            first = e;
    }
    /* Growth must not move entries: the first pointer is still valid. */
    assert_ptr_equal(relcache_get(rc, 0), first);
    assert_string_equal(first->relname, "t0");
    for (int i = 0; i < N; i++) {
        relcache_entry *e = relcache_get(rc, oid_at(i));

        assert_non_null(e);
        assert_int_equal(e->oid, oid_at(i));
        snprintf(name, sizeof name, "t%d", i);
        assert_string_equal(e->relname, name);
    }
    assert_null(relcache_get(rc, 1));
    assert_null(relcache_get(rc, 16384));
    assert_null(relcache_get(rc, UINT32_MAX - 1));
    /* Replace every other one; all still found, with the new content. */
    for (int i = 0; i < N; i += 2) {
        relcache_entry *e;

        b.r.oid = oid_at(i);
        snprintf(b.rel, sizeof b.rel, "r%d", i);
        e = relcache_put(rc, &b.r);
        assert_non_null(e);
        e->user = malloc(8);
    }
    for (int i = 0; i < N; i++) {
        relcache_entry *e = relcache_get(rc, oid_at(i));

        assert_non_null(e);
        snprintf(name, sizeof name, "%c%d", i % 2 ? 't' : 'r', i);
        assert_string_equal(e->relname, name);
    }
    /* A failed put drops that OID; the probe runs around it must still
     * lead to every other entry. */
    b.r.atts = NULL;
    for (int i = 0; i < N; i += 5) {
        b.r.oid = oid_at(i);
        assert_null(relcache_put(rc, &b.r));
    }
    b.r.atts = b.atts;
    for (int i = 0; i < N; i++) {
        relcache_entry *e = relcache_get(rc, oid_at(i));

        if (i % 5 == 0) {
            assert_null(e);
            continue;
        }
        assert_non_null(e);
        assert_int_equal(e->oid, oid_at(i));
    }
    relcache_clear(rc);
    for (int i = 0; i < N; i++)
        assert_null(relcache_get(rc, oid_at(i)));
    /* Usable after clear. */
    b.r.oid = 42;
    assert_non_null(relcache_put(rc, &b.r));
    assert_non_null(relcache_get(rc, 42));
    relcache_free(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_free_empty), cmocka_unit_test(test_put_deep_copy),
        cmocka_unit_test(test_replace),        cmocka_unit_test(test_zero_columns_and_empty_names),
        cmocka_unit_test(test_many_oids),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
