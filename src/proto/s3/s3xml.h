/* Parsers for S3 XML request bodies (libxml2 underneath). Pure: bytes in,
 * a list out, so they can be fuzzed. */
#ifndef PL_S3XML_H
#define PL_S3XML_H

#include <stddef.h>

#include "base/base.h"
#include "broker/broker.h"

struct s3_xml_item {
    char *key;    /* DeleteObjects: Object/Key; Tagging: Tag/Key */
    char *version; /* DeleteObjects: Object/VersionId, or NULL */
    char *value;  /* Tagging: Tag/Value */
    int number;   /* CompleteMultipartUpload: Part/PartNumber */
    char *etag;   /* CompleteMultipartUpload: Part/ETag */
};

struct s3_xml_list {
    struct s3_xml_item *items;
    size_t n;
    int quiet;
};

/* <Delete><Quiet/>?<Object><Key/></Object>*</Delete>, at most max objects.
 * PL_EINVAL when malformed. */
int s3_xml_parse_delete(const char *body, size_t n, size_t max, struct s3_xml_list *out) PL_WUR;
/* <CompleteMultipartUpload><Part><PartNumber/><ETag/></Part>*</...> */
int s3_xml_parse_complete(const char *body, size_t n, size_t max, struct s3_xml_list *out) PL_WUR;
/* <Tagging><TagSet><Tag><Key/><Value/></Tag>*</TagSet></Tagging>; at most max
 * tags, keys 1..128 and values 0..256 bytes, no duplicate keys. */
int s3_xml_parse_tagging(const char *body, size_t n, size_t max, struct s3_xml_list *out) PL_WUR;
/* <VersioningConfiguration><Status>Enabled|Suspended</Status>
 * <MfaDelete>Enabled|Disabled</MfaDelete>?</...> */
int s3_xml_parse_versioning(const char *body, size_t n, int *ret_enabled, int *ret_mfa) PL_WUR;
/* <NotificationConfiguration><TopicConfiguration><Id/>?<Topic/><Event/>+
 * <Filter><S3Key><FilterRule><Name/><Value/></FilterRule>*</S3Key></Filter>?
 * </TopicConfiguration>*</...>. PL_EPERM for queue or function
 * configurations, PL_EINVAL when malformed. */
int s3_xml_parse_notification(const char *body, size_t n, struct broker_notify *out) PL_WUR;
void s3_xml_list_release(struct s3_xml_list *l);
/* Initialize libxml2 once, before threads use it. */
void s3_xml_init(void);

#endif
