/* Error reporting and write helpers shared by every stage. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "rpmcow.h"

int rc_fail(rc_error *err, int code, const char *fmt, ...)
{
    /* keep the first error: it names the cause, later ones are fallout */
    if (err && err->code == RC_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        /* one line, whatever a name from the input holds */
        for (char *c = err->msg; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f)
                *c = '?';
        err->code = code;
    }
    return code;
}

int rc_write_all(int fd, const void *p, size_t n, rc_error *err)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return rc_fail(err, RC_E_IO, "write failed: %s", strerror(errno));
        }
        b += w;
        n -= (size_t)w;
    }
    return RC_OK;
}
