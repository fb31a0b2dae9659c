/*
 * Error values: a code and a message for the user, filled once where the failure is known and
 * passed up unchanged (STYLE 10).
 */
#include "core.h"

#include <stdio.h>

int err_set(struct err *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
    return code;
}

void err_clear(struct err *e)
{
    e->code = E_OK;
    e->msg[0] = '\0';
}
