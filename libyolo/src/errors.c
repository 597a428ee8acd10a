/*
 * Status codes and error messages.
 *
 * yolo_status_str() is generated from the X-macro in yolo.h. The detailed
 * message of a failure lives in a thread-local buffer, so threads sharing a
 * model never see each other's errors and no global state is mutated.
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

/* Long enough for a path plus a sentence about a layer or tensor. */
#define ERROR_BUF_SIZE 1536

static _Thread_local char last_error[ERROR_BUF_SIZE];

static const char *const status_text[] = {
#define YOLO_STATUS_TEXT(name, text) text,
    YOLO_STATUS_LIST(YOLO_STATUS_TEXT)
#undef YOLO_STATUS_TEXT
};

const char *yolo_status_str(yolo_status s)
{
    if ((int)s < 0 || (int)s >= (int)YOLO_STATUS_COUNT)
        return "unknown status";
    return status_text[s];
}

const char *yolo_last_error(void)
{
    return last_error;
}

yolo_status yolo_fail(yolo_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

void yolo_clear_error(void)
{
    last_error[0] = '\0';
}

const char *yolo_version(void)
{
    return YOLO_VERSION_STRING;
}
