#include "publish/sink.h"

#include "publish/kafka.h"

enum sink_verdict sink_classify(bool acknowledged, int64_t offset, bool permanent)
{
    if (acknowledged)
        return offset >= 0 ? SINK_DELIVERED : SINK_RETRY;
    return permanent ? SINK_REFUSED : SINK_RETRY;
}

int sink_config_check(const char *brokers, const sink_prop *props, size_t nprops, char *err,
                      size_t errlen)
{
    return kafka_config_check(brokers, props, nprops, err, errlen);
}

sink *sink_open(const char *brokers, const sink_prop *props, size_t nprops, char *err,
                size_t errlen)
{
    kafka_producer *kp = kafka_producer_new(brokers, props, nprops, err, errlen);

    return kp ? kafka_producer_sink(kp) : NULL;
}

void sink_free(sink *sk)
{
    if (sk)
        sk->ops->free(sk);
}

enum sink_produce_result sink_produce(sink *sk, const sink_msg *m, uint64_t ticket, char *err,
                                      size_t errlen)
{
    return sk->ops->produce(sk, m, ticket, err, errlen);
}

int sink_poll(sink *sk, sink_report_fn fn, void *arg, char *err, size_t errlen)
{
    return sk->ops->poll(sk, fn, arg, err, errlen);
}

int sink_flush(sink *sk, int timeout_ms, sink_report_fn fn, void *arg)
{
    return sk->ops->flush(sk, timeout_ms, fn, arg);
}

int sink_purge(sink *sk)
{
    return sk->ops->purge(sk);
}

int sink_event_fd(const sink *sk)
{
    return sk->ops->event_fd(sk);
}

int sink_queue_len(const sink *sk)
{
    return sk->ops->queue_len(sk);
}

bool sink_healthy(const sink *sk)
{
    return sk->ops->healthy(sk);
}

const char *sink_fault(const sink *sk)
{
    return sk->ops->fault ? sk->ops->fault(sk) : NULL;
}

int sink_report_header(const sink_report *rep, const char *name, const void **value, size_t *len)
{
    if (!rep->from || !rep->from->ops->report_header)
        return -1;
    return rep->from->ops->report_header(rep, name, value, len);
}

int sink_begin(sink *sk, char *err, size_t errlen)
{
    return sk->ops->begin ? sk->ops->begin(sk, err, errlen) : 0;
}

int sink_commit(sink *sk, char *err, size_t errlen)
{
    return sk->ops->commit ? sk->ops->commit(sk, err, errlen) : 0;
}

void sink_list_properties(FILE *out)
{
    kafka_list_properties(out);
}

void sink_set_logger(sink_log_fn fn)
{
    kafka_set_logger(fn);
}
