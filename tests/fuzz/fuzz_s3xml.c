/* libFuzzer: S3 XML request bodies (DeleteObjects, CompleteMultipartUpload,
 * Tagging, VersioningConfiguration, NotificationConfiguration). */
#include <stdint.h>
#include <stdlib.h>

#include "proto/s3/s3xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static int init;
    struct s3_xml_list l;
    if (!init) {
        s3_xml_init();
        init = 1;
    }
    if (s3_xml_parse_delete((const char *)data, n, 1000, &l) == 0)
        s3_xml_list_release(&l);
    if (s3_xml_parse_complete((const char *)data, n, 10000, &l) == 0)
        s3_xml_list_release(&l);
    if (s3_xml_parse_tagging((const char *)data, n, 50, &l) == 0)
        s3_xml_list_release(&l);
    int en, mfa;
    (void)s3_xml_parse_versioning((const char *)data, n, &en, &mfa);
    static struct broker_notify cfg;
    (void)s3_xml_parse_notification((const char *)data, n, &cfg);
    return 0;
}
