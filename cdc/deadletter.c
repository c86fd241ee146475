#include "cdc/deadletter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/pgtypes.h"
#include "decode/lsn.h"
#include "decode/pgoutput.h"
#include "decode/relcache.h"

enum sink_verdict deadletter_classify(const sink_report *rep)
{
    if (rep->verdict == SINK_REFUSED && (rep->ticket & DEADLETTER_TICKET))
        return SINK_RETRY;
    return rep->verdict;
}

/* len bytes of p and a NUL, or NULL when out of memory. */
static char *copy_bytes(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    if (len)
        memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

deadletter_refused *deadletter_refused_new(const sink_report *rep, const void *lsn, size_t lsnlen,
                                           const void *table, size_t tablelen, uint64_t epoch)
{
    deadletter_refused *f = calloc(1, sizeof(*f));
    char lsntext[LSN_BUFSZ];

    if (!f)
        return NULL;
    f->ticket = rep->ticket & ~DEADLETTER_TICKET;
    f->epoch = epoch;
    snprintf(f->reason, sizeof(f->reason), "the broker refused the record: %s",
             rep->errstr ? rep->errstr : "unknown error");
    f->topic = copy_bytes(rep->topic ? rep->topic : "", rep->topic ? strlen(rep->topic) : 0);
    if (!f->topic)
        goto fail;
    if (rep->key) {
        if (!(f->key = copy_bytes(rep->key, rep->keylen)))
            goto fail;
        f->keylen = rep->keylen;
    }
    f->valuelen = rep->valuelen;
    if (rep->value && rep->valuelen > DEADLETTER_VALUE_MAX)
        f->value_omitted = true;
    else if (rep->value && !(f->value = copy_bytes(rep->value, rep->valuelen)))
        goto fail;
    if (lsn && lsnlen < sizeof(lsntext)) {
        memcpy(lsntext, lsn, lsnlen);
        lsntext[lsnlen] = '\0';
        if (lsn_parse(lsntext, &f->lsn) != 0)
            f->lsn = 0;
    }
    if (table && tablelen < sizeof(f->table)) {
        memcpy(f->table, table, tablelen);
        f->table[tablelen] = '\0';
    }
    return f;
fail:
    deadletter_refused_free(f);
    return NULL;
}

void deadletter_refused_free(deadletter_refused *f)
{
    if (!f)
        return;
    free(f->value);
    free(f->key);
    free(f->topic);
    free(f);
}

int deadletter_build(const deadletter_refused *f, const char *dlq_topic,
                     const envelope_source *base, envelope_msg *out, char *err, size_t errlen)
{
    relcache_attr atts[3] = {{.name = "topic", .type_oid = PG_OID_TEXT},
                             {.name = "key", .type_oid = PG_OID_TEXT},
                             {.name = "value", .type_oid = PG_OID_TEXT}};
    relcache_entry pseudo = {.qualname = "delivery", .natts = 3, .atts = atts};
    pgo_value cols[3] = {
        {.kind = 't', .len = (uint32_t)strlen(f->topic), .data = f->topic},
        {.kind = f->key ? 't' : 'n', .len = f->key ? (uint32_t)f->keylen : 0, .data = f->key},
        {.kind = f->value ? 't' : 'n',
         .len = f->value ? (uint32_t)f->valuelen : 0,
         .data = f->value},
    };
    pgo_tuple tuple = {.ncols = 3, .cols = cols};
    envelope_source src = *base;
    char reason[400];

    src.lsn = f->lsn;
    src.table = "delivery";
    snprintf(reason, sizeof(reason), "%s%s", f->reason,
             f->value_omitted ? " (value omitted: too large for a dead-letter record)" : "");
    return envelope_build_dead_letter(dlq_topic, &pseudo, &tuple, NULL, reason, &src, f->topic, out,
                                      err, errlen);
}

int deadletter_queue_report(deadletter_queue *q, const sink_report *rep, uint64_t epoch)
{
    const void *lsn = NULL, *table = NULL;
    size_t lsnlen = 0, tablelen = 0;
    deadletter_refused *f;

    if (sink_report_header(rep, "lsn", &lsn, &lsnlen) != 0)
        lsn = NULL;
    if (sink_report_header(rep, "table", &table, &tablelen) != 0)
        table = NULL;
    f = deadletter_refused_new(rep, lsn, lsnlen, table, tablelen, epoch);
    if (!f)
        return -1;
    deadletter_queue_push(q, f);
    return 0;
}

void deadletter_queue_push(deadletter_queue *q, deadletter_refused *f)
{
    f->next = NULL;
    if (q->tail)
        q->tail->next = f;
    else
        q->head = f;
    q->tail = f;
    q->n++;
}

deadletter_refused *deadletter_queue_pop(deadletter_queue *q)
{
    deadletter_refused *f = q->head;

    if (!f)
        return NULL;
    q->head = f->next;
    if (!q->head)
        q->tail = NULL;
    q->n--;
    f->next = NULL;
    return f;
}

bool deadletter_queue_empty(const deadletter_queue *q)
{
    return q->head == NULL;
}

void deadletter_queue_clear(deadletter_queue *q)
{
    deadletter_refused *f;

    while ((f = deadletter_queue_pop(q)))
        deadletter_refused_free(f);
}
