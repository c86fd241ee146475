#include "cdc/scrub.h"

#include <ctype.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* Length of a conninfo value at s: a quoted value up to its closing quote
 * (backslash escapes), else up to white space. */
static size_t value_len(const char *s)
{
    size_t n = 0;

    if (s[0] == '\'') {
        for (n = 1; s[n] && s[n] != '\''; n++)
            if (s[n] == '\\' && s[n + 1])
                n++;
        return s[n] ? n + 1 : n;
    }
    while (s[n] && !isspace((unsigned char)s[n]))
        n++;
    return n;
}

/* At s (just past "://"), the offset and length of a "user:password@"
 * userinfo's password, when there is one. */
static bool uri_password(const char *s, size_t *off, size_t *len)
{
    size_t end = strcspn(s, "/?# \t\r\n");
    const char *at = NULL, *colon;

    for (size_t i = 0; i < end; i++)
        if (s[i] == '@')
            at = s + i;
    if (!at)
        return false;
    colon = memchr(s, ':', (size_t)(at - s));
    if (!colon)
        return false;
    *off = (size_t)(colon + 1 - s);
    *len = (size_t)(at - colon - 1);
    return true;
}

/* Mask the len bytes at p; returns the position right after the mask. */
static char *mask(char *p, size_t len)
{
    size_t n = len < 3 ? len : 3;

    memset(p, '*', n);
    if (len > n)
        memmove(p + n, p + len, strlen(p + len) + 1);
    return p + n;
}

int scrub_passwords(char *s)
{
    int count = 0;
    char *p = s;

    if (!s)
        return 0;
    while (*p) {
        size_t off, len;

        if (strncmp(p, "://", 3) == 0 && uri_password(p + 3, &off, &len) && len > 0) {
            p = mask(p + 3 + off, len);
            count++;
            continue;
        }
        if (strncasecmp(p, "password", 8) == 0) {
            char *v = p + 8;
            while (*v == ' ' || *v == '\t')
                v++;
            if (*v == '=') {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                len = value_len(v);
                if (len > 0) {
                    p = mask(v, len);
                    count++;
                    continue;
                }
            }
        }
        p++;
    }
    return count;
}
