#include "proto/s3/s3xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdlib.h>

static xmlNode *child(xmlNode *n, const char *name)
{
    for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, name))
            return c;
    return NULL;
}

static char *text_of(xmlNode *n)
{
    xmlChar *v = n ? xmlNodeGetContent(n) : NULL;
    char *s = v ? strdup((const char *)v) : NULL;
    xmlFree(v);
    return s;
}

/* Parse body and call item() for every element named what under a root named
 * root. */
static int parse(const char *body, size_t n, const char *root_name, const char *what,
                 size_t max, struct s3_xml_list *out,
                 int (*item)(xmlNode *node, struct s3_xml_item *it))
{
    memset(out, 0, sizeof(*out));
    if (n > INT32_MAX)
        return PL_EINVAL;
    xmlDoc *doc = xmlReadMemory(body, (int)n, "body.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                                    XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int rc = 0;
    if (!root || strcmp((const char *)root->name, root_name)) {
        rc = PL_EINVAL;
        goto out;
    }
    xmlNode *q = child(root, "Quiet");
    char *qv = text_of(q);
    out->quiet = qv && !strcmp(qv, "true");
    free(qv);
    size_t count = 0;
    for (xmlNode *c = root->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE && !strcmp((const char *)c->name, what))
            count++;
    if (count > max) {
        rc = PL_EINVAL;
        goto out;
    }
    out->items = calloc(count + 1, sizeof(*out->items));
    if (!out->items) {
        rc = PL_ENOMEM;
        goto out;
    }
    for (xmlNode *c = root->children; c && !rc; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, what))
            continue;
        rc = item(c, &out->items[out->n]);
        if (!rc)
            out->n++;
    }
out:
    xmlFreeDoc(doc);
    if (rc)
        s3_xml_list_release(out);
    return rc;
}

static int delete_item(xmlNode *node, struct s3_xml_item *it)
{
    it->key = text_of(child(node, "Key"));
    it->version = text_of(child(node, "VersionId")); /* optional */
    return it->key ? 0 : PL_EINVAL;
}

static int complete_item(xmlNode *node, struct s3_xml_item *it)
{
    char *num = text_of(child(node, "PartNumber")), *end;
    it->etag = text_of(child(node, "ETag"));
    long v = num ? strtol(num, &end, 10) : -1;
    int ok = num && *num && !*end && v >= 1 && v <= 100000 && it->etag;
    free(num);
    if (!ok) {
        free(it->etag);
        it->etag = NULL;
        return PL_EINVAL;
    }
    it->number = (int)v;
    return 0;
}

int s3_xml_parse_delete(const char *body, size_t n, size_t max, struct s3_xml_list *out)
{
    return parse(body, n, "Delete", "Object", max, out, delete_item);
}

int s3_xml_parse_complete(const char *body, size_t n, size_t max, struct s3_xml_list *out)
{
    return parse(body, n, "CompleteMultipartUpload", "Part", max, out, complete_item);
}

int s3_xml_parse_tagging(const char *body, size_t n, size_t max, struct s3_xml_list *out)
{
    memset(out, 0, sizeof(*out));
    if (n > INT32_MAX)
        return PL_EINVAL;
    xmlDoc *doc = xmlReadMemory(body, (int)n, "tagging.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                                    XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *set = root && !strcmp((const char *)root->name, "Tagging") ? child(root, "TagSet")
                                                                         : NULL;
    int rc = set ? 0 : PL_EINVAL;
    if (!rc) {
        out->items = calloc(max + 1, sizeof(*out->items));
        rc = out->items ? 0 : PL_ENOMEM;
    }
    for (xmlNode *t = set ? set->children : NULL; t && !rc; t = t->next) {
        if (t->type != XML_ELEMENT_NODE || strcmp((const char *)t->name, "Tag"))
            continue;
        if (out->n == max) {
            rc = PL_EINVAL;
            break;
        }
        struct s3_xml_item *it = &out->items[out->n];
        it->key = text_of(child(t, "Key"));
        it->value = text_of(child(t, "Value"));
        out->n++;
        if (!it->key || !it->value || !*it->key || strlen(it->key) > 128 ||
            strlen(it->value) > 256)
            rc = PL_EINVAL;
        for (size_t j = 0; !rc && j + 1 < out->n; j++)
            if (!strcmp(out->items[j].key, it->key))
                rc = PL_EINVAL;
    }
    xmlFreeDoc(doc);
    if (rc)
        s3_xml_list_release(out);
    return rc;
}

int s3_xml_parse_versioning(const char *body, size_t n, int *ret_enabled, int *ret_mfa)
{
    if (n > INT32_MAX)
        return PL_EINVAL;
    xmlDoc *doc = xmlReadMemory(body, (int)n, "versioning.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                                    XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int rc = PL_EINVAL;
    if (root && !strcmp((const char *)root->name, "VersioningConfiguration")) {
        char *st = text_of(child(root, "Status")), *mfa = text_of(child(root, "MfaDelete"));
        if (st && (!strcmp(st, "Enabled") || !strcmp(st, "Suspended")) &&
            (!mfa || !strcmp(mfa, "Enabled") || !strcmp(mfa, "Disabled"))) {
            *ret_enabled = !strcmp(st, "Enabled");
            *ret_mfa = mfa && !strcmp(mfa, "Enabled");
            rc = 0;
        }
        free(st);
        free(mfa);
    }
    xmlFreeDoc(doc);
    return rc;
}

void s3_xml_list_release(struct s3_xml_list *l)
{
    for (size_t i = 0; l->items && i < l->n; i++) {
        free(l->items[i].version);
        free(l->items[i].key);
        free(l->items[i].value);
        free(l->items[i].etag);
    }
    free(l->items);
    memset(l, 0, sizeof(*l));
}

void s3_xml_init(void)
{
    xmlInitParser();
}

static int copy_text(xmlNode *n, char *out, size_t cap)
{
    char *v = text_of(n);
    int rc = v && strlen(v) < cap ? 0 : PL_EINVAL;
    if (!rc)
        memcpy(out, v, strlen(v) + 1);
    free(v);
    return rc;
}

static int parse_topic_config(xmlNode *tc, struct broker_notify_rule *r)
{
    xmlNode *id = child(tc, "Id"), *topic = child(tc, "Topic");
    int rc = topic ? copy_text(topic, r->arn, sizeof(r->arn)) : PL_EINVAL;
    if (!rc && id)
        rc = copy_text(id, r->id, sizeof(r->id));
    if (rc)
        return rc;
    /* an ARN ("arn:aws:sns:REGION:ACCOUNT:NAME") or a bare name: the topic is its last part */
    const char *name = strrchr(r->arn, ':') ? strrchr(r->arn, ':') + 1 : r->arn;
    if (!*name || strlen(name) >= sizeof(r->topic))
        return PL_EINVAL;
    memcpy(r->topic, name, strlen(name) + 1);
    for (xmlNode *c = tc->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, "Event"))
            continue;
        if (r->nevents == BROKER_NOTIFY_EVENTS)
            return PL_EINVAL;
        if (copy_text(c, r->events[r->nevents], sizeof(r->events[0])))
            return PL_EINVAL;
        r->nevents++;
    }
    if (!r->nevents)
        return PL_EINVAL;
    xmlNode *key = child(child(tc, "Filter"), "S3Key");
    for (xmlNode *c = key ? key->children : NULL; c; c = c->next) {
        char name_[16];
        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, "FilterRule"))
            continue;
        if (copy_text(child(c, "Name"), name_, sizeof(name_)))
            return PL_EINVAL;
        /* S3 allows each of prefix and suffix once; names are case-insensitive */
        char *dst = !strcasecmp(name_, "prefix") ? r->prefix
                    : !strcasecmp(name_, "suffix") ? r->suffix
                                                   : NULL;
        if (!dst || *dst || copy_text(child(c, "Value"), dst, sizeof(r->prefix)) || !*dst)
            return PL_EINVAL;
    }
    return 0;
}

int s3_xml_parse_notification(const char *body, size_t n, struct broker_notify *out)
{
    memset(out, 0, sizeof(*out));
    if (n > INT32_MAX)
        return PL_EINVAL;
    xmlDoc *doc = xmlReadMemory(body, (int)n, "notification.xml", NULL,
                                XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                                    XML_PARSE_NOWARNING);
    xmlNode *root = doc ? xmlDocGetRootElement(doc) : NULL;
    int rc = root && !strcmp((const char *)root->name, "NotificationConfiguration") ? 0
                                                                                   : PL_EINVAL;
    for (xmlNode *c = root ? root->children : NULL; c && !rc; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (!strcmp((const char *)c->name, "TopicConfiguration")) {
            if (out->n == BROKER_NOTIFY_MAX)
                rc = PL_ERANGE;
            else
                rc = parse_topic_config(c, &out->rules[out->n++]);
        } else if (strcmp((const char *)c->name, "EventBridgeConfiguration")) {
            rc = PL_EPERM; /* queues and functions: no such destinations here */
        }
    }
    xmlFreeDoc(doc);
    return rc;
}
