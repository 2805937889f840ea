#include "plenum/err.h"

#include <string.h>

struct err_entry {
    int code;
    const char *name;
    const char *msg;
};

static const struct err_entry err_table[] = {
#define PL_ERR_ROW(name, value, msg) {(value), #name, (msg)},
    PL_ERRORS(PL_ERR_ROW)
#undef PL_ERR_ROW
};

static const struct err_entry *err_find(int err)
{
    for (size_t i = 0; i < sizeof(err_table) / sizeof(err_table[0]); i++)
        if (err_table[i].code == err)
            return &err_table[i];
    return NULL;
}

const char *pl_strerror(int err)
{
    const struct err_entry *e = err_find(err);
    if (e)
        return e->msg;
    if (err < 0 && err > -1000)
        return strerror(-err); /* errno we have no row for */
    return "unknown error";
}

const char *pl_errname(int err)
{
    const struct err_entry *e = err_find(err);
    return e ? e->name : "PL_EUNKNOWN";
}
