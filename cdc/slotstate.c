#include "cdc/slotstate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bsd/string.h>
#include <unistd.h>

int slotstate_load(const char *path, const char *slot, slot_history *h, char *err, size_t errlen)
{
    char line[512], name[256], sys[32];
    int tli;
    FILE *f;

    memset(h, 0, sizeof(*h));
    f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot read state file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    if (!fgets(line, sizeof(line), f) ||
        sscanf(line, "slot=%255s system=%31s timeline=%d", name, sys, &tli) != 3 || tli < 1) {
        fclose(f);
        snprintf(err, errlen,
                 "state file \"%s\" is malformed (want \"slot=NAME system=ID timeline=N\"): fix "
                 "or remove it",
                 path);
        return -1;
    }
    fclose(f);
    if (strcmp(name, slot) != 0)
        return 0;
    h->known = true;
    strlcpy(h->systemid, sys, sizeof(h->systemid));
    h->timeline = tli;
    return 0;
}

int slotstate_save(const char *path, const char *slot, const slot_history *h, char *err,
                   size_t errlen)
{
    char tmp[4096];
    int fd = -1, n;
    char buf[512];

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        snprintf(err, errlen, "state file path too long");
        return -1;
    }
    n = snprintf(buf, sizeof(buf), "slot=%s system=%s timeline=%d\n", slot, h->systemid,
                 h->timeline);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, buf, (size_t)n) != n || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write state file \"%s\": %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot write state file \"%s\": %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot replace state file \"%s\": %s", path, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}
