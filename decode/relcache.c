#include "decode/relcache.h"

#include <stdlib.h>
#include <string.h>

/*
 * Open addressing with linear probing over entry pointers.  Entries are
 * allocated one by one so a pointer handed out stays valid while other OIDs
 * come and go; only a put of the same OID (or clear/free) invalidates it.
 * The one single-entry delete (a failed put drops the old entry) re-seats
 * the rest of its probe run instead of leaving a tombstone.
 */
struct relcache {
    relcache_entry **slots;
    size_t cap; /* power of two, or 0 before the first put */
    size_t count;
};

static void entry_free(relcache_entry *e)
{
    if (e == NULL)
        return;
    for (uint16_t i = 0; i < e->natts; i++)
        free(e->atts[i].name);
    free(e->atts);
    free(e->nspname);
    free(e->relname);
    free(e->qualname);
    free(e->user);
    free(e);
}

static size_t hash_oid(uint32_t oid)
{
    /* OIDs are often consecutive: scramble so they spread over the table. */
    uint32_t h = oid * UINT32_C(2654435761);

    return (size_t)(h ^ (h >> 16));
}

/* Slot holding oid, or the empty slot where it would go. */
static size_t find_slot(const relcache *rc, uint32_t oid)
{
    size_t mask = rc->cap - 1;
    size_t i = hash_oid(oid) & mask;

    while (rc->slots[i] != NULL && rc->slots[i]->oid != oid)
        i = (i + 1) & mask;
    return i;
}

static int grow(relcache *rc)
{
    size_t ncap = rc->cap ? rc->cap * 2 : 16;
    relcache_entry **nslots = calloc(ncap, sizeof *nslots);
    relcache_entry **old = rc->slots;
    size_t ocap = rc->cap;

    if (nslots == NULL)
        return -1;
    rc->slots = nslots;
    rc->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i] != NULL)
            rc->slots[find_slot(rc, old[i]->oid)] = old[i];
    free(old);
    return 0;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s != NULL ? s : "");
}

static relcache_entry *entry_copy(const pgo_relation *rel)
{
    relcache_entry *e = calloc(1, sizeof *e);
    size_t qlen;

    if (e == NULL)
        return NULL;
    e->oid = rel->oid;
    e->nspname = dup_or_empty(rel->nspname);
    e->relname = dup_or_empty(rel->relname);
    if (e->nspname == NULL || e->relname == NULL)
        goto fail;
    qlen = strlen(e->nspname) + 1 + strlen(e->relname) + 1;
    e->qualname = malloc(qlen);
    if (e->qualname == NULL)
        goto fail;
    strcpy(e->qualname, e->nspname);
    strcat(e->qualname, ".");
    strcat(e->qualname, e->relname);
    if (rel->natts > 0) {
        e->atts = calloc(rel->natts, sizeof *e->atts);
        if (e->atts == NULL)
            goto fail;
        e->natts = rel->natts; /* names still NULL are fine for entry_free */
    }
    for (uint16_t i = 0; i < rel->natts; i++) {
        e->atts[i].name = dup_or_empty(rel->atts[i].name);
        if (e->atts[i].name == NULL)
            goto fail;
        e->atts[i].type_oid = rel->atts[i].type_oid;
        e->atts[i].typmod = rel->atts[i].typmod;
        e->atts[i].flags = rel->atts[i].flags;
    }
    return e;
fail:
    entry_free(e);
    return NULL;
}

relcache *relcache_new(void)
{
    return calloc(1, sizeof(relcache));
}

void relcache_clear(relcache *rc)
{
    if (rc == NULL)
        return;
    for (size_t i = 0; i < rc->cap; i++) {
        entry_free(rc->slots[i]);
        rc->slots[i] = NULL;
    }
    rc->count = 0;
}

void relcache_free(relcache *rc)
{
    if (rc == NULL)
        return;
    relcache_clear(rc);
    free(rc->slots);
    free(rc);
}

relcache_entry *relcache_put(relcache *rc, const pgo_relation *rel)
{
    relcache_entry *e;
    size_t i;

    if (rc == NULL || rel == NULL)
        return NULL;
    e = rel->natts > 0 && rel->atts == NULL ? NULL : entry_copy(rel);
    if (e == NULL)
        goto drop_old;
    /* Keep the load factor at or below 1/2 so probes stay short. */
    if ((rc->count + 1) * 2 > rc->cap && grow(rc) != 0) {
        entry_free(e);
        goto drop_old;
    }
    i = find_slot(rc, rel->oid);
    if (rc->slots[i] != NULL)
        entry_free(rc->slots[i]);
    else
        rc->count++;
    rc->slots[i] = e;
    return e;

drop_old:
    /*
     * The old version describes columns that may no longer exist: keeping
     * it would let a caller map a tuple by stale positions.  Forget it; the
     * caller sees NULL now and "unknown relation" later.
     */
    if (rc->cap > 0) {
        i = find_slot(rc, rel->oid);
        if (rc->slots[i] != NULL) {
            entry_free(rc->slots[i]);
            rc->slots[i] = NULL;
            rc->count--;
            /* Re-seat the rest of the probe run so lookups still find it. */
            for (size_t j = (i + 1) & (rc->cap - 1); rc->slots[j] != NULL;
                 j = (j + 1) & (rc->cap - 1)) {
                relcache_entry *moved = rc->slots[j];

                rc->slots[j] = NULL;
                rc->slots[find_slot(rc, moved->oid)] = moved;
            }
        }
    }
    return NULL;
}

relcache_entry *relcache_get(const relcache *rc, uint32_t oid)
{
    if (rc == NULL || rc->cap == 0)
        return NULL;
    return rc->slots[find_slot(rc, oid)];
}
