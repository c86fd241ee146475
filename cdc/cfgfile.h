/*
 * cfgfile — the configuration file (--config FILE) and the OUTBOX_RELAY_*
 * environment, read into (key, value, where) entries that config_parse()
 * layers under the command line.  Syntax only: which keys exist, and what
 * their values mean, is cdc/config's business.
 *
 * File syntax: one "key = value" a line.  Blank lines and lines whose first
 * non-blank character is '#' are ignored; after a value, blanks followed by
 * '#' start a comment.  A value in double quotes keeps blanks and '#'
 * (\" and \\ are its only escapes).  Keys are lower-case letters, digits,
 * '-', '.' and '_'.  Lines end in LF or CRLF; a UTF-8 byte order mark at the
 * start is skipped; NUL bytes, lines over CFGFILE_MAX_LINE and files over
 * CFGFILE_MAX_SIZE are refused.
 *
 * Environment: OUTBOX_RELAY_NAME=value gives key "name" (lower case, '_'
 * -> '-'); OUTBOX_RELAY_KAFKA_PROP=value gives "kafka.prop" (lower case,
 * '_' -> '.'), librdkafka's property names having no '_'.
 * OUTBOX_RELAY_CONFIG is the file's path, not an entry.
 *
 * An entry list owns its strings; cfgfile_entries_free() releases them
 * (wiping values: they may be secrets).
 */
#ifndef CDC_CFGFILE_H
#define CDC_CFGFILE_H

#include <stddef.h>

#include "decode/compiler.h"

#define CFGFILE_MAX_LINE 8192
#define CFGFILE_MAX_SIZE (1 << 20)
#define CFGFILE_ENV_PREFIX "OUTBOX_RELAY_"

typedef struct cfgfile_entry {
    char *key;   /* owned */
    char *value; /* owned */
    char *where; /* owned: "FILE:LINE" or "env OUTBOX_RELAY_NAME" */
    int line;    /* file line, 0 for the environment */
} cfgfile_entry;

typedef struct cfgfile_entries {
    cfgfile_entry *v;
    size_t n, cap;
} cfgfile_entries;

/*
 * Pure: parse text[0..len) read from a file named name and append its
 * entries to out.  Returns 0, or -1 with err "NAME:LINE: message" (out then
 * holds the entries before that line).
 */
int cfgfile_parse(const char *name, const char *text, size_t len, cfgfile_entries *out, char *err,
                  size_t errlen) OBX_WUR;

/* Read path and parse it.  0, or -1 with err naming the file. */
int cfgfile_read(const char *path, cfgfile_entries *out, char *err, size_t errlen) OBX_WUR;

/*
 * Append an entry for each OUTBOX_RELAY_* variable of envp (NULL-terminated,
 * e.g. environ), in envp's order, OUTBOX_RELAY_CONFIG excepted.  0, or -1
 * with err when out of memory or a name is empty after the prefix.
 */
int cfgfile_from_env(char *const *envp, cfgfile_entries *out, char *err, size_t errlen) OBX_WUR;

/* The environment variable for key ("kafka.sasl.password" ->
 * "OUTBOX_RELAY_KAFKA_SASL_PASSWORD"), into buf. */
void cfgfile_env_name(const char *key, char *buf, size_t len);

/* Wipe and free every entry; out is empty and reusable afterwards.  NULL ok. */
void cfgfile_entries_free(cfgfile_entries *e);

#endif
