/* Committed offsets: one service record per group, topic and partition,
 * "kafka/og/LEN:GROUP/TOPIC/PART" -> offset (8 bytes, big-endian) and the
 * client's metadata string. The group's length keeps one group's prefix
 * from matching another's. */
#include <stdio.h>
#include <string.h>

#include "base/base.h"
#include "broker/broker_int.h"

#define META_MAX 4096

static int off_key(char *k, size_t n, const char *group, const char *topic, int part)
{
    int w = snprintf(k, n, "kafka/og/%zu:%s/%s/%d", strlen(group), group, topic, part);
    return w < 0 || (size_t)w >= n ? PL_ENAMETOOLONG : 0;
}

int broker_commit(struct broker *b, const char *group, const char *topic, int part, int64_t offset,
                  const char *meta)
{
    char k[PL_SVC_KEY_MAX + 1];
    uint8_t v[8 + META_MAX];
    size_t ml = meta ? strlen(meta) : 0;
    if (!*group || strlen(group) > BROKER_GROUP_MAX)
        return PL_EINVAL;
    if (ml > META_MAX)
        return PL_EFBIG;
    int rc = off_key(k, sizeof(k), group, topic, part);
    if (rc)
        return rc;
    pl_put_be64(v, (uint64_t)offset);
    memcpy(v + 8, meta ? meta : "", ml);
    struct pl_svc_rec r = {k, v, 8 + ml};
    return pl_svc_write(b->st, &r, 1);
}

int broker_committed(struct broker *b, const char *group, const char *topic, int part,
                     int64_t *ret_off, char *meta, size_t mn)
{
    char k[PL_SVC_KEY_MAX + 1];
    uint8_t v[8 + META_MAX];
    size_t n = 0;
    int rc = off_key(k, sizeof(k), group, topic, part);
    if (!rc)
        rc = pl_svc_get(b->st, k, v, sizeof(v), &n);
    if (!rc && n < 8)
        rc = PL_ECORRUPT;
    if (rc)
        return rc;
    *ret_off = (int64_t)pl_get_be64(v);
    if (meta && mn) {
        size_t ml = PL_MIN(n - 8, mn - 1);
        memcpy(meta, v + 8, ml);
        meta[ml] = 0;
    }
    return 0;
}
