/*
 * config — the command line (the contract README.md documents) parsed into one
 * struct, validated without touching the database or the broker.
 *
 * Strings in a config point into argv or into storage the config owns;
 * config_free() releases the latter.
 */
#ifndef CDC_CONFIG_H
#define CDC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cdc/log.h"
#include "decode/outbox.h"
#include "publish/sink.h"
#include "schema/envelope.h"

#define CONFIG_MAX_TABLES 64
#define CONFIG_MAX_PROPS 256
#define CONFIG_MAX_COLUMNS 128

typedef struct config_table {
    char schema[64];
    char name[64];
    char qualname[130];   /* "schema.name" */
    outbox_colmap colmap; /* defaults, then unprefixed --column, then this table's own */
} config_table;

typedef struct config {
    const char *conninfo; /* "" = libpq defaults and PG* variables */
    char *password;       /* from --password-file (owned); NULL = libpq's own ways */
    const char *slot;
    const char *publication;
    config_table tables[CONFIG_MAX_TABLES];
    size_t ntables;
    bool create_slot;
    bool allow_new_slot;    /* --allow-new-slot: a missing slot may start afresh */
    const char *state_file; /* --state-file: where the slot was last seen */
    const char *brokers;
    sink_prop props[CONFIG_MAX_PROPS];
    size_t nprops;
    const char *topic;
    enum envelope_format format;
    envelope_field fields[ENVELOPE_MAX_FIELDS]; /* --field */
    size_t nfields;
    bool tombstone_on_empty;                     /* --tombstone-on-empty-payload */
    bool dbz_json_converter;                     /* --debezium-converter json */
    bool dbz_expand;                             /* --expand-json-payload */
    char dbz_context[256];                       /* --debezium-context */
    char dbz_run_id[37];                         /* a UUIDv7 made at start for it */
    enum envelope_timestamp msg_timestamp;       /* --message-timestamp */
    envelope_opts envelope;                      /* all of the above, for envelope_build_opts */
    const char *column_args[CONFIG_MAX_COLUMNS]; /* --column in order (argv) */
    size_t ncolumn_args;
    const char *messages_prefix; /* --messages: NULL = off */
    const char *http_addr;       /* --http ADDR:PORT: NULL = no endpoint */
    const char *dlq_topic;
    bool has_start_lsn;
    uint64_t start_lsn;
    bool has_end_lsn;
    uint64_t end_lsn;
    int status_interval_ms;
    uint64_t max_inflight_events;
    uint64_t max_inflight_bytes;
    int shutdown_timeout_ms;
    int give_up_after_ms; /* 0: ride out every transient fault for ever */
    bool log_json;
    enum log_level log_level;
    char *prop_storage[CONFIG_MAX_PROPS]; /* owned copies of -X name parts */
    const char *config_file;              /* --config or OUTBOX_RELAY_CONFIG: NULL = none */
    struct config_layers *layers; /* owned: the file's and the environment's entries (config.c) */
} config;

enum config_result {
    CONFIG_OK = 0,    /* run the relay */
    CONFIG_EXIT = 1,  /* --help, --version, -X list: done, exit 0 */
    CONFIG_USAGE = 2, /* bad usage or configuration: err says the fix, exit 2 */
};

/*
 * Parse argv (the optional leading "run" sub-command included) into cfg and
 * validate everything that can be checked offline, librdkafka properties
 * included.  Help and version text go to stdout.
 *
 * Under the command line lie the OUTBOX_RELAY_* environment and the file of
 * --config (or OUTBOX_RELAY_CONFIG), see cdc/cfgfile.h: a single value from
 * a higher source wins; --table, --column and --field from a higher source
 * replace the lower ones' lists; -X properties (kafka.PROP) merge, property
 * by property.  A secret written in the file is refused (a *.file key or
 * the environment carries it).  A problem in the file is reported as
 * "FILE:LINE: message".  --print-config prints the effective configuration
 * with each value's source, secrets masked, and returns CONFIG_EXIT.
 */
enum config_result config_parse(int argc, char **argv, config *cfg, char *err, size_t errlen);

/* config_parse() with flags: CONFIG_NO_BROKERS_OK accepts a configuration
 * without brokers (`check` reports it instead). */
#define CONFIG_NO_BROKERS_OK 1u
enum config_result config_parse_flags(int argc, char **argv, config *cfg, unsigned flags, char *err,
                                      size_t errlen);

void config_free(config *cfg);

/*
 * SIGHUP: parse again, into next, the command line cur was parsed from,
 * with the file read again (the environment is the process's own, so it
 * does not change).  Returns config_parse()'s result; next needs
 * config_free() whatever it is.
 */
enum config_result config_reload(const config *cur, config *next, char *err, size_t errlen);

/* --print-config's text for cfg (the effective values, sources, secrets
 * masked). */
void config_print(const config *cfg, FILE *out);

/*
 * The keys ("slot", "kafka.linger.ms", ...) whose effective value differs
 * between a and b, as --print-config shows them (a change of source alone
 * is no change; secrets are compared masked), at most max of them.
 * Returns how many.
 */
int config_changed_keys(const config *a, const config *b, char keys[][64], int max);

/*
 * --password-file: the first line of path, without its newline, replaces
 * *password (the old one wiped and freed).  Returns 0, or -1 with err
 * naming the fix (unreadable or empty file).
 */
int config_read_password_file(const char *path, char **password, char *err, size_t errlen);

/* Parse a size with an optional k/M/G suffix (powers of 1024). 0 or -1. */
int config_parse_size(const char *s, uint64_t *out) OBX_WUR;

/* Whether a librdkafka property holds a secret (a password, a private key,
 * a client secret): masked when printed, refused as a literal in a file. */
bool config_secret_prop(const char *name);

#endif
