/*
 * Partitioning: the same key lands on the same partition as with the Java
 * client's default partitioner, so consumers that co-partition with Java
 * producers (or Kafka Streams joins) see our events where they expect them.
 *
 * Java's partitioner is toPositive(murmur2(key)) % numPartitions, with
 * murmur2 seeded 0x9747b28c and toPositive(h) = h & 0x7fffffff.  Checked
 * three ways: an independent implementation here against the vectors in
 * Kafka's own UtilsTest.testMurmur2; a key -> partition table for 1, 3, 12
 * and 100 partitions computed from the published algorithm (by a separate
 * Python implementation, then written down here); and librdkafka's
 * rd_kafka_msg_partitioner_murmur2, the function behind the relay's
 * partitioner = murmur2_random, against both.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

/* Kafka's org.apache.kafka.common.utils.Utils.murmur2, re-derived. */
static int32_t java_murmur2(const void *key, size_t len)
{
    const unsigned char *d = key;
    const uint32_t m = 0x5bd1e995;
    const int r = 24;
    uint32_t h = 0x9747b28cu ^ (uint32_t)len;
    size_t tail = len & ~(size_t)3;

    for (size_t i = 0; i < tail; i += 4) {
        uint32_t k = (uint32_t)d[i] | (uint32_t)d[i + 1] << 8 | (uint32_t)d[i + 2] << 16 |
                     (uint32_t)d[i + 3] << 24;

        k *= m;
        k ^= k >> r; /* Java's >>> on an int: logical */
        k *= m;
        h *= m;
        h ^= k;
    }
    switch (len & 3) {
    case 3:
        h ^= (uint32_t)d[tail + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)d[tail + 1] << 8;
        /* fall through */
    case 1:
        h ^= d[tail];
        h *= m;
        break;
    default:
        break;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return (int32_t)h;
}

static int32_t java_partition(const char *key, int32_t n)
{
    return (int32_t)(((uint32_t)java_murmur2(key, strlen(key)) & 0x7fffffffu) % (uint32_t)n);
}

/* Kafka's UtilsTest.testMurmur2 (and the empty key, a common extra vector). */
static const struct {
    const char *key;
    int32_t hash;
} kafka_vectors[] = {
    {"21", -973932308},
    {"foobar", -790332482},
    {"a-little-bit-long-string", -985981536},
    {"a-little-bit-longer-string", -1486304829},
    {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971},
    {"abc", 479470107},
    {"", 275646681},
};

/* key -> murmur2, partition for 3, 12 and 100 partitions (1 is always 0). */
static const struct {
    const char *key;
    int32_t hash;
    int32_t p3, p12, p100;
} partition_vectors[] = {
    {"", 275646681, 0, 9, 81},
    {"0", 971027396, 2, 8, 96},
    {"1", -1993445489, 0, 3, 59},
    {"21", -973932308, 0, 0, 40},
    {"42", 417700972, 1, 4, 72},
    {"abc", 479470107, 0, 3, 7},
    {"foobar", -790332482, 0, 6, 66},
    {"order-42", 501153024, 0, 0, 24},
    {"customer-1001", 2073265393, 1, 1, 93},
    {"6a1c0b5e-1f2a-4b3c-9d8e-0f1e2d3c4b5a", 887219194, 1, 10, 94},
    {"caf\xc3\xa9", -1358007374, 0, 6, 74},
    {"a-little-bit-long-string", -985981536, 2, 8, 12},
    {"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 2, 5, 77},
};

#define NPV (sizeof partition_vectors / sizeof partition_vectors[0])

static void test_kafka_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof kafka_vectors / sizeof kafka_vectors[0]; i++) {
        int32_t h = java_murmur2(kafka_vectors[i].key, strlen(kafka_vectors[i].key));

        if (h != kafka_vectors[i].hash)
            fail_msg("murmur2(\"%s\") = %d, Kafka says %d", kafka_vectors[i].key, h,
                     kafka_vectors[i].hash);
    }
    /* toPositive(murmur2("foobar")) % 50, a value published with other ports */
    assert_int_equal(java_partition("foobar", 50), 16);
}

static void test_partition_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < NPV; i++) {
        const char *k = partition_vectors[i].key;

        assert_int_equal(java_murmur2(k, strlen(k)), partition_vectors[i].hash);
        assert_int_equal(java_partition(k, 1), 0);
        assert_int_equal(java_partition(k, 3), partition_vectors[i].p3);
        assert_int_equal(java_partition(k, 12), partition_vectors[i].p12);
        assert_int_equal(java_partition(k, 100), partition_vectors[i].p100);
    }
}

typedef struct rk_fixture {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
} rk_fixture;

/* A producer handle with no brokers: enough for a topic handle, connects to nothing. */
static int rk_setup(void **state)
{
    static rk_fixture f;
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    if (rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    f.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (f.rk == NULL) {
        fprintf(stderr, "rd_kafka_new: %s\n", errstr);
        return -1;
    }
    f.rkt = rd_kafka_topic_new(f.rk, "murmur2-vectors", NULL);
    if (f.rkt == NULL) {
        rd_kafka_destroy(f.rk);
        return -1;
    }
    *state = &f;
    return 0;
}

static int rk_teardown(void **state)
{
    rk_fixture *f = *state;

    rd_kafka_topic_destroy(f->rkt);
    rd_kafka_destroy(f->rk);
    return 0;
}

static void test_librdkafka_matches_java(void **state)
{
    rk_fixture *f = *state;
    static const int32_t counts[] = {1, 2, 3, 7, 12, 50, 100, 1000};

    for (size_t i = 0; i < NPV; i++) {
        const char *k = partition_vectors[i].key;
        size_t len = strlen(k);
        const int32_t want[] = {0, partition_vectors[i].p3, partition_vectors[i].p12,
                                partition_vectors[i].p100};
        const int32_t n[] = {1, 3, 12, 100};

        for (size_t j = 0; j < 4; j++) {
            int32_t got = rd_kafka_msg_partitioner_murmur2(f->rkt, k, len, n[j], NULL, NULL);

            if (got != want[j])
                fail_msg("librdkafka puts \"%s\" on %d of %d partitions, Java on %d", k, got, n[j],
                         want[j]);
            /* murmur2_random is murmur2 for every key that is present */
            assert_int_equal(
                rd_kafka_msg_partitioner_murmur2_random(f->rkt, k, len, n[j], NULL, NULL), want[j]);
        }
    }
    /* and beyond the table: many keys, many partition counts */
    for (int i = 0; i < 5000; i++) {
        char key[32];

        snprintf(key, sizeof key, "aggregate-%d", i * 7919);
        for (size_t j = 0; j < sizeof counts / sizeof counts[0]; j++)
            assert_int_equal(
                rd_kafka_msg_partitioner_murmur2(f->rkt, key, strlen(key), counts[j], NULL, NULL),
                java_partition(key, counts[j]));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kafka_vectors),
        cmocka_unit_test(test_partition_table),
        cmocka_unit_test_setup_teardown(test_librdkafka_matches_java, rk_setup, rk_teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
