/*
 * scrub — the one password scrubber: every place that shows a conninfo,
 * a command line or an error message (ps, /status, --print-config, the
 * config file check) masks passwords with it.
 */
#ifndef CDC_SCRUB_H
#define CDC_SCRUB_H

/*
 * Mask, in place, every password s carries: the value after any
 * "password" followed by "=" (case-insensitive, spaces allowed around "=",
 * also as a suffix such as "sasl.password=" or in a URI query; a quoted
 * value up to its closing quote, else up to white space) and the password
 * of every URI's "user:PASSWORD@".  A value of three bytes or more becomes
 * "***" (the rest of s moves left, so its length is not told); a shorter
 * one becomes as many '*'.  s never grows.  Returns how many were masked;
 * NULL is 0.
 */
int scrub_passwords(char *s);

#endif
