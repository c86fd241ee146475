#include "decode/lsn.h"

#include <stdbool.h>
#include <string.h>

#define US_PER_SEC INT64_C(1000000)
#define US_PER_DAY (INT64_C(86400) * US_PER_SEC)

/* PostgreSQL never displays a zone offset of 16 hours or more. */
#define MAX_OFFSET_HOUR 15

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1-8 hex digits from *sp; advances *sp past them. */
static int parse_half(const char **sp, uint32_t *out)
{
    const char *s = *sp;
    uint32_t v = 0;
    int n = 0;
    int d;

    while ((d = hexval(s[n])) >= 0) {
        if (n == 8)
            return -1;
        v = (v << 4) | (uint32_t)d;
        n++;
    }
    if (n == 0)
        return -1;
    *sp = s + n;
    *out = v;
    return 0;
}

int lsn_parse(const char *s, uint64_t *out)
{
    uint32_t hi, lo;

    if (s == NULL || out == NULL)
        return -1;
    if (parse_half(&s, &hi) != 0 || *s != '/')
        return -1;
    s++;
    if (parse_half(&s, &lo) != 0 || *s != '\0')
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* v in upper-case hex without leading zeros ("0" for 0) at p; returns the end. */
static char *put_hex32(char *p, uint32_t v)
{
    static const char hex[] = "0123456789ABCDEF";
    int shift = v == 0 ? 0 : (31 - __builtin_clz(v)) / 4 * 4;

    for (; shift >= 0; shift -= 4)
        *p++ = hex[(v >> shift) & 0xF];
    return p;
}

/* By hand: this runs for every event, and snprintf costs ~1,000 instructions. */
size_t lsn_format_len(uint64_t lsn, char *buf)
{
    char *p = put_hex32(buf, (uint32_t)(lsn >> 32));

    *p++ = '/';
    p = put_hex32(p, (uint32_t)lsn);
    *p = '\0';
    return (size_t)(p - buf);
}

char *lsn_format(uint64_t lsn, char *buf)
{
    (void)lsn_format_len(lsn, buf);
    return buf;
}

int64_t pgtime_to_unix_us(int64_t pg_us)
{
    int64_t r;

    /* PostgreSQL encodes +/-infinity as INT64_MAX/MIN: saturate, never wrap. */
    if (__builtin_add_overflow(pg_us, PGTIME_UNIX_OFFSET_US, &r))
        return pg_us > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

size_t pgtime_format_len(int64_t pg_us, char *buf)
{
    return unixtime_format_len(pgtime_to_unix_us(pg_us), buf);
}

char *pgtime_format(int64_t pg_us, char *buf)
{
    (void)pgtime_format_len(pg_us, buf);
    return buf;
}

/*
 * Calendar arithmetic on the proleptic Gregorian calendar in 400-year eras
 * (146097 days each), with March as the first month of the computational
 * year so the leap day is the last day of a year.  No libc time functions:
 * they depend on TZ, and time_t ranges vary.
 */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    if (m <= 2)
        y--;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* v as exactly two decimal digits at p (v < 100). */
static char *put_2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

/*
 * RFC 3339 by hand, as "%s%04lld-%02d-%02dT%02u:%02u:%02u.%06uZ" would
 * print it (test_lsn compares the two): this runs for every event.
 */
size_t unixtime_format_len(int64_t unix_us, char *buf)
{
    int64_t days = floor_div(unix_us, US_PER_DAY);
    int64_t rem = unix_us % US_PER_DAY; /* days * US_PER_DAY may overflow */
    unsigned secs, us;
    uint64_t ay;
    char digits_rev[20];
    int nd = 0;
    char *p = buf;
    int64_t y;
    int m, d;

    if (rem < 0)
        rem += US_PER_DAY;
    secs = (unsigned)(rem / US_PER_SEC);
    us = (unsigned)(rem % US_PER_SEC);
    civil_from_days(days, &y, &m, &d);
    /* |year| is at most 294247 for any int64 input: at most 6 digits, at
     * least 4 (zero-padded), so the result is at most 30 bytes. */
    if (y < 0)
        *p++ = '-';
    ay = y < 0 ? (uint64_t)0 - (uint64_t)y : (uint64_t)y;
    do {
        digits_rev[nd++] = (char)('0' + ay % 10);
        ay /= 10;
    } while (ay > 0);
    while (nd < 4)
        digits_rev[nd++] = '0';
    while (nd > 0)
        *p++ = digits_rev[--nd];
    *p++ = '-';
    p = put_2(p, (unsigned)m);
    *p++ = '-';
    p = put_2(p, (unsigned)d);
    *p++ = 'T';
    p = put_2(p, secs / 3600);
    *p++ = ':';
    p = put_2(p, secs / 60 % 60);
    *p++ = ':';
    p = put_2(p, secs % 60);
    *p++ = '.';
    p = put_2(p, us / 10000);
    p = put_2(p, us / 100 % 100);
    p = put_2(p, us % 100);
    *p++ = 'Z';
    *p = '\0';
    return (size_t)(p - buf);
}

char *unixtime_format(int64_t unix_us, char *buf)
{
    (void)unixtime_format_len(unix_us, buf);
    return buf;
}

/* Exactly n decimal digits at s[*pos]; advances *pos. */
static int digits(const char *s, size_t len, size_t *pos, int n, int *out)
{
    int v = 0;

    if (len - *pos < (size_t)n)
        return -1;
    for (int i = 0; i < n; i++) {
        char c = s[*pos + (size_t)i];

        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *pos += (size_t)n;
    *out = v;
    return 0;
}

/*
 * Zone suffix: "Z", or a sign with HH, HH:MM or HH:MM:SS (PostgreSQL prints
 * only as much as is non-zero).  Returns the offset east of UTC in seconds.
 */
static int parse_offset(const char *s, size_t len, size_t *pos, int64_t *off_s)
{
    int sign, hh, mm = 0, ss = 0;

    if (*pos >= len)
        return -1;
    if (s[*pos] == 'Z') {
        (*pos)++;
        *off_s = 0;
        return 0;
    }
    if (s[*pos] != '+' && s[*pos] != '-')
        return -1;
    sign = s[*pos] == '-' ? -1 : 1;
    (*pos)++;
    if (digits(s, len, pos, 2, &hh) != 0 || hh > MAX_OFFSET_HOUR)
        return -1;
    if (*pos < len && s[*pos] == ':') {
        (*pos)++;
        if (digits(s, len, pos, 2, &mm) != 0 || mm > 59)
            return -1;
        if (*pos < len && s[*pos] == ':') {
            (*pos)++;
            if (digits(s, len, pos, 2, &ss) != 0 || ss > 59)
                return -1;
        }
    }
    *off_s = sign * ((int64_t)hh * 3600 + mm * 60 + ss);
    return 0;
}

static int parse_timestamp(const char *s, size_t len, bool naive, int64_t *unix_us)
{
    size_t pos = 0;
    int64_t year = 0;
    int mon, day, hh, mi, ss, frac = 0, ndig = 0;
    int64_t off_s, days, secs, us;

    if (s == NULL || unix_us == NULL)
        return -1;
    /* Years past 9999 print with more digits; six is past the int64 range. */
    while (pos < len && s[pos] >= '0' && s[pos] <= '9' && pos < 6) {
        year = year * 10 + (s[pos] - '0');
        pos++;
    }
    /* Year 0 does not exist in PostgreSQL's output (1 BC is "0001 ... BC"). */
    if (pos < 4 || year == 0 || pos >= len || s[pos] != '-')
        return -1;
    pos++;
    if (digits(s, len, &pos, 2, &mon) != 0 || pos >= len || s[pos++] != '-')
        return -1;
    if (digits(s, len, &pos, 2, &day) != 0 || pos >= len || (s[pos] != ' ' && s[pos] != 'T'))
        return -1;
    pos++;
    if (digits(s, len, &pos, 2, &hh) != 0 || pos >= len || s[pos++] != ':')
        return -1;
    if (digits(s, len, &pos, 2, &mi) != 0 || pos >= len || s[pos++] != ':')
        return -1;
    if (digits(s, len, &pos, 2, &ss) != 0)
        return -1;
    if (pos < len && s[pos] == '.') {
        pos++;
        while (pos < len && s[pos] >= '0' && s[pos] <= '9') {
            if (ndig == 6)
                return -1;
            frac = frac * 10 + (s[pos] - '0');
            ndig++;
            pos++;
        }
        if (ndig == 0)
            return -1;
        for (int i = ndig; i < 6; i++)
            frac *= 10;
    }
    /* A timestamptz always carries its zone; without one the instant is
     * ambiguous, so refuse rather than guess (a naive timestamp has none). */
    off_s = 0;
    if (naive ? pos != len : parse_offset(s, len, &pos, &off_s) != 0 || pos != len)
        return -1;
    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon))
        return -1;
    if (hh > 23 || mi > 59 || ss > 59)
        return -1;
    days = days_from_civil(year, mon, day);
    secs = days * 86400 + hh * 3600 + mi * 60 + ss - off_s;
    if (__builtin_mul_overflow(secs, US_PER_SEC, &us) || __builtin_add_overflow(us, frac, &us))
        return -1;
    *unix_us = us;
    return 0;
}

int pgtime_parse_text(const char *s, size_t len, int64_t *unix_us)
{
    return parse_timestamp(s, len, false, unix_us);
}

int pgtime_parse_naive(const char *s, size_t len, int64_t *unix_us)
{
    return parse_timestamp(s, len, true, unix_us);
}
