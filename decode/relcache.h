/*
 * relcache — relation metadata from pgoutput Relation messages, by OID.
 *
 * The cache owns deep copies of everything it stores.  relcache_put()
 * replaces an existing entry for the same OID completely (pgoutput re-sends
 * a Relation after any invalidation: ALTER TABLE, publication change), so
 * pointers returned by relcache_get() for that OID become invalid.
 */
#ifndef DECODE_RELCACHE_H
#define DECODE_RELCACHE_H

#include "decode/pgoutput.h"

typedef struct relcache_attr {
    char *name;
    uint32_t type_oid;
    int32_t typmod;
    uint8_t flags;
} relcache_attr;

typedef struct relcache_entry {
    uint32_t oid;
    char *nspname;
    char *relname;
    char *qualname; /* "nspname.relname", unquoted */
    uint16_t natts;
    relcache_attr *atts;
    /* The caller's data about the relation (e.g. its outbox binding):
     * malloc'd by the caller, owned by the cache from then on, and freed
     * with free() when the entry is replaced, cleared or the cache freed. */
    void *user;
} relcache_entry;

typedef struct relcache relcache;

relcache *relcache_new(void);
/* Frees every entry (and each entry's user pointer). NULL is a no-op. */
void relcache_free(relcache *rc);

/*
 * Store a deep copy of rel, replacing any entry with the same OID.  Returns
 * the new entry (owned by the cache), or NULL when out of memory (or rel
 * claims columns but has no array); on NULL any older entry for that OID is
 * dropped too, so stale column positions can never be used.
 */
relcache_entry *relcache_put(relcache *rc, const pgo_relation *rel) OBX_WUR;

/* The entry for oid, or NULL.  Borrowed, valid until the next put of oid. */
relcache_entry *relcache_get(const relcache *rc, uint32_t oid);

/* Drop every entry (on reconnect: the server re-sends Relation messages). */
void relcache_clear(relcache *rc);

#endif
