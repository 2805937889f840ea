/* plenum server: open the data directory, start the listeners, serve until
 * SIGTERM/SIGINT, then stop accepting, let in-flight requests end, sync, exit. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cli.h"
#include "proto/admin/admin.h"
#include "proto/s3/s3.h"
#include "proto/kafka/kafka.h"
#include "proto/nbd/nbd.h"
#include "proto/nfs/nfs.h"
#include "proto/resp/resp.h"

struct listener {
    const char *name;
    const char *def;
    int available;
    char addr[256];
};

static struct listener listeners[] = {
    {"s3", "127.0.0.1:9000", 1, ""},      {"nfs", "127.0.0.1:2049", 1, ""},
    {"mountd", "127.0.0.1:20048", 1, ""}, {"portmap", "127.0.0.1:111", 1, ""},
    {"nbd", "127.0.0.1:10809", 1, ""},
    {"kafka", "127.0.0.1:9092", 1, ""},  {"pg", "127.0.0.1:5433", 0, ""},
    {"resp", "127.0.0.1:6380", 1, ""},   {"admin", "127.0.0.1:9001", 1, ""},
};

void usage_server(void)
{
    printf("usage: plenum server [--data DIR] [--config FILE] [--LISTENER HOST:PORT|off]...\n"
           "\n"
           "Run the Plenum server on a data directory (created on first start with a\n"
           "mirrored write buffer and K+M capacity devices, 4+2 unless --ec says).\n"
           "\n"
           "options:\n"
           "  --data DIR        data directory (default ./plenum-data)\n"
           "  --config FILE     INI file: [server] data=DIR, [listen] admin=HOST:PORT ...,\n"
           "                    [store] zstd_level=N, ec=K+M, buffer_copies=2|3,\n"
           "                    similarity=on|off, gc_live_pct=N,\n"
           "                    scrub_interval_s=N, scrub_rate_mb=N, buffer_max_mb=N\n"
           "                    (writers wait while destage is that far behind),\n"
           "                    hot_cache_mb=N (decoded delta references and chunks\n"
           "                    read in parts, kept in memory; default 256, 0 keeps\n"
           "                    none);\n"
           "                    [export] /PATH = CLIENTS [OPTIONS] (see plenum export --help);\n"
           "                    [kafka] auto_create=on|off (default off),\n"
           "                    default_partitions=N (for auto-created topics),\n"
           "                    sasl=required|optional (default optional: PLAIN and\n"
           "                    SCRAM-SHA-256 with an access key and its secret);\n"
           "                    [events] enabled=on|off (default on: element events on\n"
           "                    $events.BUCKET);\n"
           "                    [kv] dram_mb=N (default 1024), flash_mb=N (default 16384),\n"
           "                    ns_max_mb=N (what one user/db may hold; default no bound),\n"
           "                    compress=NS... (namespaces whose flash values are compressed:\n"
           "                    USER/DB, USER/* or *; default none, tensors do not compress);\n"
           "                    [nbd] write_cache_mb=N (writes answered from memory before\n"
           "                    they are stored, all volumes together; default 1024; a\n"
           "                    FLUSH or FUA write makes them durable);\n"
           "                    [resp] requirepass=SECRET (the default user's password;\n"
           "                    unset: no AUTH needed), loops=N (event loop threads serving\n"
           "                    small requests; default 1, large values move to worker\n"
           "                    threads);\n"
           "                    command-line flags win\n"
           "  --buffer-copies N  mirrors of the write buffer of a new data directory (2, 3)\n"
           "  --ec K+M          stripe layout of a new data directory (K<=64, M<=4;\n"
           "                    default 4+2); an existing one keeps its own\n"
           "  --s3 ADDR         S3 API            (default 127.0.0.1:9000)\n"
           "  --nfs ADDR        NFSv3             (default 127.0.0.1:2049)\n"
           "  --mountd ADDR     MOUNT3            (default 127.0.0.1:20048)\n"
           "  --portmap ADDR    PORTMAP v2 and RPCBIND v3/v4, for NFS clients and\n"
           "                    showmount/rpcinfo that ask it for the ports\n"
           "                    (default 127.0.0.1:111; skipped with a warning when that\n"
           "                    port cannot be had)\n"
           "  --nbd ADDR        NBD               (default 127.0.0.1:10809)\n"
           "  --kafka ADDR      Kafka protocol    (default 127.0.0.1:9092)\n"
           "  --pg ADDR         PostgreSQL proto  (default 127.0.0.1:5433)\n"
           "  --resp ADDR       Redis protocol    (default 127.0.0.1:6380)\n"
           "  --resp-unix PATH  Redis protocol on a Unix socket too (same-host engines)\n"
           "  --admin ADDR      admin JSON API, /health, /metrics (default 127.0.0.1:9001)\n"
           "  Each ADDR is HOST:PORT or 'off'.\n"
           "  --s3-domain DOMAIN  also accept virtual-host style requests (BUCKET.DOMAIN)\n"
           "  --s3-region NAME    region reported to S3 clients (default us-east-1)\n"
           "\n"
           "Root credentials come from PLENUM_ROOT_ACCESS_KEY and PLENUM_ROOT_SECRET_KEY;\n"
           "without them a key pair is generated on first start, printed once and kept in\n"
           "DIR/root.credentials (mode 0600).\n"
           "\n"
           "example:\n"
           "  plenum server --data /srv/plenum --admin 127.0.0.1:9101 --s3 off\n");
}

static struct broker_opts cfg_broker; /* [kafka] in the config file */
static struct kv_opts cfg_kv;         /* [kv] */
static char cfg_kv_compress[512];     /* [kv] compress */
static char cfg_requirepass[256];     /* [resp] */
static int cfg_resp_loops = 1;        /* [resp] */
static size_t cfg_nbd_write_cache;    /* [nbd] write_cache_mb; 0: the default */
static const char *resp_unix;
static int cfg_kafka_sasl;

/* export rules from the config file, added to the store at start */
static struct pl_export cfg_exports[64];
static int ncfg_exports;

static struct listener *listener_find(const char *name)
{
    for (size_t i = 0; i < PL_ARRAY_LEN(listeners); i++)
        if (!strcmp(listeners[i].name, name))
            return &listeners[i];
    return NULL;
}

static int parse_hostport(const char *s, char *host, size_t hn, int *port)
{
    const char *c = strrchr(s, ':');
    if (!c || c == s || (size_t)(c - s) >= hn)
        return PL_EINVAL;
    char *end;
    long p = strtol(c + 1, &end, 10);
    if (*end || p < 0 || p > 65535 || end == c + 1)
        return PL_EINVAL;
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    *port = (int)p;
    return 0;
}

/* "K+M" -> k, m within the limits of the stripe code. */
static int parse_ec(const char *v, int *k, int *m)
{
    char *e1, *e2;
    if (!v)
        return -1;
    long a = strtol(v, &e1, 10);
    if (*e1 != '+')
        return -1;
    long b = strtol(e1 + 1, &e2, 10);
    if (*e2 || a < 1 || a > 64 || b < 1 || b > 4)
        return -1;
    *k = (int)a;
    *m = (int)b;
    return 0;
}

/* Minimal INI reader: [section] and key = value lines, '#' or ';' comments. */
static int config_load(const char *path, const char **data, struct pl_store_opts *so)
{
    static char data_buf[PL_PATH_MAX];
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "plenum server: cannot read config %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[1024], section[64] = "";
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        s[strcspn(s, "\r\n")] = 0;
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *e = strchr(s, ']');
            if (!e || (size_t)(e - s - 1) >= sizeof(section)) {
                rc = -1;
                break;
            }
            memcpy(section, s + 1, (size_t)(e - s - 1));
            section[e - s - 1] = 0;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        char *k = s, *v = eq + 1;
        *eq = 0;
        for (char *t = eq - 1; t >= k && (*t == ' ' || *t == '\t'); t--)
            *t = 0;
        while (*v == ' ' || *v == '\t')
            v++;
        struct listener *l;
        if (!strcmp(section, "export")) {
            /* /PATH = CLIENTS [OPTIONS] */
            struct pl_export *e = &cfg_exports[ncfg_exports];
            char clients[64] = "", options[256] = "";
            char *hash = strchr(v, '#');
            if (hash)
                *hash = 0;
            memset(e, 0, sizeof(*e));
            e->squash = PL_SQUASH_ROOT;
            e->anon_uid = e->anon_gid = 65534;
            if (ncfg_exports == (int)PL_ARRAY_LEN(cfg_exports) || strlen(k) >= sizeof(e->path) ||
                sscanf(v, "%63s %255s", clients, options) < 1 ||
                pl_export_clients_parse(clients, &e->net, &e->mask) ||
                (options[0] && pl_export_options_parse(options, e))) {
                fprintf(stderr, "plenum server: %s:%d: an export is /PATH = CLIENTS [OPTIONS], "
                                "e.g. /datasets = 10.0.0.0/8 ro,root_squash\n",
                        path, lineno);
                rc = -1;
                break;
            }
            snprintf(e->path, sizeof(e->path), "%s", k);
            ncfg_exports++;
        } else if (!strcmp(section, "server") && !strcmp(k, "data")) {
            snprintf(data_buf, sizeof(data_buf), "%s", v);
            *data = data_buf;
        } else if (!strcmp(section, "listen") && (l = listener_find(k))) {
            snprintf(l->addr, sizeof(l->addr), "%s", v);
        } else if (!strcmp(section, "store") && !strcmp(k, "zstd_level")) {
            so->zstd_level = atoi(v);
        } else if (!strcmp(section, "store") && !strcmp(k, "ec")) {
            if (parse_ec(v, &so->ec_k, &so->ec_m)) {
                fprintf(stderr, "plenum server: %s:%d: ec wants K+M with K 1..64, M 1..4\n",
                        path, lineno);
                rc = -1;
                break;
            }
        } else if (!strcmp(section, "store") && !strcmp(k, "buffer_copies")) {
            so->buffer_copies = atoi(v);
        } else if (!strcmp(section, "store") && !strcmp(k, "similarity")) {
            so->similarity_off = !strcmp(v, "off");
        } else if (!strcmp(section, "store") && !strcmp(k, "gc_live_pct")) {
            so->gc_live_pct = atoi(v);
        } else if (!strcmp(section, "store") && !strcmp(k, "scrub_interval_s")) {
            so->scrub_interval_s = strtoull(v, NULL, 10);
        } else if (!strcmp(section, "store") && !strcmp(k, "scrub_rate_mb")) {
            so->scrub_rate = strtoull(v, NULL, 10) << 20;
        } else if (!strcmp(section, "store") && !strcmp(k, "buffer_max_mb")) {
            so->buffer_max = strtoull(v, NULL, 10) << 20;
        } else if (!strcmp(section, "store") && !strcmp(k, "hot_cache_mb")) {
            uint64_t mb = strtoull(v, NULL, 10);
            so->hot_cache = mb ? mb << 20 : PL_HOT_CACHE_NONE;
        } else if (!strcmp(section, "kafka") && !strcmp(k, "auto_create")) {
            cfg_broker.auto_create = !strcmp(v, "on") || !strcmp(v, "true");
        } else if (!strcmp(section, "kafka") && !strcmp(k, "sasl")) {
            if (strcmp(v, "required") && strcmp(v, "optional")) {
                fprintf(stderr, "plenum server: %s:%d: [kafka] sasl is required or optional\n",
                        path, lineno);
                rc = -1;
                break;
            }
            cfg_kafka_sasl = !strcmp(v, "required");
        } else if (!strcmp(section, "kv") && !strcmp(k, "dram_mb")) {
            cfg_kv.dram_max = strtoull(v, NULL, 10) << 20;
        } else if (!strcmp(section, "kv") && !strcmp(k, "ns_max_mb")) {
            cfg_kv.ns_max = strtoull(v, NULL, 10) << 20;
        } else if (!strcmp(section, "kv") && !strcmp(k, "compress")) {
            snprintf(cfg_kv_compress, sizeof(cfg_kv_compress), "%s", v);
            cfg_kv.compress = cfg_kv_compress;
        } else if (!strcmp(section, "kv") && !strcmp(k, "flash_mb")) {
            cfg_kv.flash_max = strtoull(v, NULL, 10) << 20;
        } else if (!strcmp(section, "nbd") && !strcmp(k, "write_cache_mb")) {
            char *e;
            unsigned long long mb = strtoull(v, &e, 10);
            e += strspn(e, " \t");
            if ((*e && *e != '#') || !mb || mb > (1ull << 20)) {
                fprintf(stderr, "plenum server: %s:%d: [nbd] write_cache_mb is a size in MiB "
                                "(at least 1)\n", path, lineno);
                rc = -1;
                break;
            }
            cfg_nbd_write_cache = (size_t)mb << 20;
        } else if (!strcmp(section, "resp") && !strcmp(k, "loops")) {
            cfg_resp_loops = atoi(v);
            if (cfg_resp_loops < 1 || cfg_resp_loops > 64) {
                fprintf(stderr, "plenum server: %s:%d: [resp] loops must be 1..64\n", path, lineno);
                rc = -1;
                break;
            }
        } else if (!strcmp(section, "resp") && !strcmp(k, "requirepass")) {
            snprintf(cfg_requirepass, sizeof(cfg_requirepass), "%s", v);
        } else if (!strcmp(section, "events") && !strcmp(k, "enabled")) {
            so->events_off = !strcmp(v, "off") || !strcmp(v, "false");
        } else if (!strcmp(section, "kafka") && !strcmp(k, "default_partitions")) {
            cfg_broker.default_partitions = atoi(v);
        } else {
            fprintf(stderr, "plenum server: %s:%d: unknown setting [%s] %s\n", path, lineno,
                    section, k);
            rc = -1;
            break;
        }
    }
    if (rc && !ferror(f))
        fprintf(stderr, "plenum server: %s:%d: cannot parse this line\n", path, lineno);
    fclose(f);
    return rc;
}

static int write_file_atomic(const char *dir, const char *name, const char *text, mode_t mode)
{
    char p[PL_PATH_MAX], tmp[PL_PATH_MAX + 8];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", p);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    int rc = pl_write_all(fd, text, strlen(text));
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (!rc && rename(tmp, p) < 0)
        rc = -errno;
    return rc ? rc : pl_fsync_dir(dir);
}

/* Make sure the root user and its key exist; print a generated pair once. */
static int root_credentials(struct pl_store *st, const char *dir)
{
    char ak[32] = "", sk[48] = "", p[PL_PATH_MAX], u[64], cur[48];
    const char *eak = getenv("PLENUM_ROOT_ACCESS_KEY"), *esk = getenv("PLENUM_ROOT_SECRET_KEY");
    int rc = pl_user_create(st, "root");
    if (rc && rc != PL_EEXIST)
        return rc;
    if (eak && esk && *eak && *esk) {
        if (strlen(eak) >= sizeof(ak) || strlen(esk) >= sizeof(sk))
            return PL_EINVAL;
        snprintf(ak, sizeof(ak), "%s", eak);
        snprintf(sk, sizeof(sk), "%s", esk);
        if (pl_key_secret(st, ak, cur, u) == 0 && !strcmp(cur, sk))
            return 0;
        return pl_key_create(st, "root", ak, sk);
    }
    snprintf(p, sizeof(p), "%s/root.credentials", dir);
    if (access(p, F_OK) == 0)
        return 0;
    rc = pl_key_create(st, "root", ak, sk);
    if (rc)
        return rc;
    char text[256];
    snprintf(text, sizeof(text), "access_key=%s\nsecret_key=%s\n", ak, sk);
    rc = write_file_atomic(dir, "root.credentials", text, 0600);
    if (rc)
        return rc;
    printf("root credentials (shown once, also in %s):\n  access key: %s\n  secret key: %s\n", p,
           ak, sk);
    return 0;
}

static volatile int gc_stop;
static pthread_mutex_t gc_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gc_cond = PTHREAD_COND_INITIALIZER;

static void *gc_main(void *arg)
{
    struct pl_store *st = arg;
    pthread_mutex_lock(&gc_lock);
    while (!gc_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 60;
        pthread_cond_timedwait(&gc_cond, &gc_lock, &ts);
        if (gc_stop)
            break;
        pthread_mutex_unlock(&gc_lock);
        uint64_t freed = 0;
        int rc = pl_store_gc(st, &freed);
        if (rc)
            pl_log(PL_LOG_WARN, "gc", "background gc failed err=%s", pl_errname(rc));
        else if (freed)
            pl_log(PL_LOG_INFO, "gc", "freed bytes=%llu", (unsigned long long)freed);
        pthread_mutex_lock(&gc_lock);
    }
    pthread_mutex_unlock(&gc_lock);
    return NULL;
}

int cmd_server(int argc, char **argv)
{
    const char *data = NULL, *config = NULL, *s3_domain = NULL, *s3_region = NULL;
    struct pl_store_opts o = {.zstd_level = -1, .create = 1, .background = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_server();
            return 0;
        }
        if (!strcmp(a, "--config") && i + 1 < argc)
            config = argv[++i];
    }
    if (config && config_load(config, &data, &o))
        return 2;
    for (int i = 0; i < argc && argv[i]; i++) {
        const char *a = argv[i];
        struct listener *l;
        if (!strcmp(a, "--config")) {
            i++;
        } else if (!strcmp(a, "--data") && i + 1 < argc) {
            data = argv[++i];
        } else if (!strcmp(a, "--s3-domain") && i + 1 < argc) {
            s3_domain = argv[++i];
        } else if (!strcmp(a, "--resp-unix") && i + 1 < argc) {
            resp_unix = argv[++i];
        } else if (!strcmp(a, "--s3-region") && i + 1 < argc) {
            s3_region = argv[++i];
        } else if (!strcmp(a, "--buffer-copies") && i + 1 < argc) {
            const char *v = argv[++i];
            o.buffer_copies = v ? atoi(v) : 0;
            if (o.buffer_copies < 2 || o.buffer_copies > 3) {
                fprintf(stderr, "plenum server: --buffer-copies wants 2 or 3\n");
                return 2;
            }
        } else if (!strcmp(a, "--ec") && i + 1 < argc) {
            if (parse_ec(argv[++i], &o.ec_k, &o.ec_m)) {
                fprintf(stderr, "plenum server: --ec wants K+M with K 1..64 and M 1..4, not "
                                "'%s'\n",
                        argv[i]);
                return 2;
            }
        } else if (!strncmp(a, "--", 2) && (l = listener_find(a + 2)) && i + 1 < argc) {
            snprintf(l->addr, sizeof(l->addr), "%s", argv[++i]);
        } else {
            fprintf(stderr, "plenum server: unknown or incomplete option '%s' (see plenum server "
                            "--help)\n",
                    a);
            return 2;
        }
    }
    if (!data)
        data = CLI_DEFAULT_DATA;
    for (size_t i = 0; i < PL_ARRAY_LEN(listeners); i++) {
        struct listener *l = &listeners[i];
        char host[200];
        int port;
        if (!l->addr[0])
            snprintf(l->addr, sizeof(l->addr), "%s", l->def);
        if (strcmp(l->addr, "off") && parse_hostport(l->addr, host, sizeof(host), &port)) {
            fprintf(stderr, "plenum server: --%s wants HOST:PORT or off, not '%s'\n", l->name,
                    l->addr);
            return 2;
        }
    }
    /* every connection is a descriptor: allow as many as the hard limit does */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* the S3 head's store work runs on libuv's pool: size it before first use.
     * Two per core: enough to overlap commits that wait for a sync, few enough
     * that small requests do not drown in context switches. */
    char pool[16];
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(pool, sizeof(pool), "%ld", cores > 0 ? PL_MAX(4, 2 * cores) : 4);
    setenv("UV_THREADPOOL_SIZE", pool, 0);
    /* signals are taken by sigwait below; every thread inherits the mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct pl_store *st = NULL;
    struct admin_server *admin = NULL;
    struct s3_server *s3 = NULL;
    struct nbd_server *nbd = NULL;
    struct broker *broker = NULL;
    struct kafka_server *kafka = NULL;
    struct kv *kv = NULL;
    struct resp_server *resp = NULL;
    struct nfs_server *nfs = NULL;
    pthread_t gc_thr;
    int gc_started = 0, rc = pl_store_open(data, &o, &st);
    if (rc == PL_ELOCKED) {
        char p[PL_PATH_MAX];
        snprintf(p, sizeof(p), "%s/server.json", data);
        json_error_t je;
        json_t *j = json_load_file(p, 0, &je);
        fprintf(stderr,
                "plenum server: data directory %s is already in use (pid %lld, admin %s); stop "
                "that server first or pass another --data\n",
                data, j ? (long long)json_integer_value(json_object_get(j, "pid")) : -1LL,
                j && json_string_value(json_object_get(j, "admin"))
                    ? json_string_value(json_object_get(j, "admin"))
                    : "off");
        json_decref(j);
        return 1;
    }
    if (rc) {
        if (rc == PL_ENOTPLENUM)
            fprintf(stderr, "plenum server: %s is not a plenum data directory and not empty; "
                            "pass --data with an empty or new directory\n",
                    data);
        else
            fprintf(stderr, "plenum server: cannot open data directory %s: %s\n", data,
                    pl_strerror(rc));
        return 1;
    }
    rc = root_credentials(st, data);
    if (rc) {
        fprintf(stderr, "plenum server: cannot set up root credentials: %s\n", pl_strerror(rc));
        goto out;
    }
    /* the broker runs with or without the Kafka head: it publishes element events */
    cfg_broker.events = !o.events_off;
    rc = broker_open(st, &cfg_broker, &broker);
    if (rc) {
        fprintf(stderr, "plenum server: cannot open the broker: %s\n", pl_strerror(rc));
        goto out;
    }
    topics_set_broker(broker);
    struct listener *al = listener_find("admin");
    if (strcmp(al->addr, "off")) {
        char host[200];
        int port;
        if (parse_hostport(al->addr, host, sizeof(host), &port))
            goto out;
        struct admin_opts ao = {host, port, 0, 0};
        rc = mounts_register();
        if (!rc)
            rc = topics_register();
        if (!rc)
            rc = kvcmd_register();
        if (!rc)
            rc = admin_start(st, &ao, &admin);
        if (rc) {
            fprintf(stderr, "plenum server: cannot listen on %s for admin: %s%s\n", al->addr,
                    pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has it; pass --admin HOST:PORT or off)"
                                      : "");
            goto out;
        }
        /* report the bound port (the flag may have said :0) */
        snprintf(al->addr, sizeof(al->addr), "%s:%d", host, admin_port(admin));
    }
    struct listener *sl = listener_find("s3");
    if (strcmp(sl->addr, "off")) {
        char host[200];
        int port;
        if (parse_hostport(sl->addr, host, sizeof(host), &port))
            goto out;
        struct s3_opts so = {host, port, s3_domain, s3_region, 0, broker};
        rc = s3_start(st, &so, &s3);
        if (rc) {
            fprintf(stderr, "plenum server: cannot listen on %s for s3: %s%s\n", sl->addr,
                    pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has it; pass --s3 HOST:PORT or off)"
                                      : "");
            goto out;
        }
        snprintf(sl->addr, sizeof(sl->addr), "%s:%d", host, s3_port(s3));
    }
    struct listener *nl = listener_find("nbd");
    if (strcmp(nl->addr, "off")) {
        char host[200];
        int port;
        if (parse_hostport(nl->addr, host, sizeof(host), &port))
            goto out;
        struct nbd_opts no = {host, port, cfg_nbd_write_cache};
        rc = nbd_start(st, &no, &nbd);
        if (rc) {
            fprintf(stderr, "plenum server: cannot listen on %s for nbd: %s%s\n", nl->addr,
                    pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has it; pass --nbd HOST:PORT or off)"
                                      : "");
            goto out;
        }
        snprintf(nl->addr, sizeof(nl->addr), "%s:%d", host, nbd_port(nbd));
    }
    struct listener *kl = listener_find("kafka");
    if (strcmp(kl->addr, "off")) {
        char host[200];
        int port;
        if (parse_hostport(kl->addr, host, sizeof(host), &port))
            goto out;
        rc = kafka_start(broker, &(struct kafka_opts){host, port, cfg_kafka_sasl}, &kafka);
        if (rc) {
            fprintf(stderr, "plenum server: cannot listen for kafka: %s%s\n", pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has it; pass --kafka HOST:PORT or off)"
                                      : "");
            goto out;
        }
        snprintf(kl->addr, sizeof(kl->addr), "%s:%d", host, kafka_port(kafka));
    }
    struct listener *rsl = listener_find("resp");
    if (strcmp(rsl->addr, "off") || resp_unix) {
        char host[200] = "";
        int port = 0;
        if (strcmp(rsl->addr, "off") && parse_hostport(rsl->addr, host, sizeof(host), &port))
            goto out;
        rc = kv_open(st, &cfg_kv, &kv);
        if (!rc) {
            struct resp_opts ro = {host[0] ? host : NULL, port, resp_unix, cfg_requirepass,
                                  cfg_resp_loops};
            rc = resp_start(st, kv, &ro, &resp);
        }
        if (rc) {
            fprintf(stderr, "plenum server: cannot %s for resp: %s%s\n",
                    kv ? "listen" : "open the KV cache", pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has it; pass --resp HOST:PORT or off)"
                                      : "");
            goto out;
        }
        if (host[0])
            snprintf(rsl->addr, sizeof(rsl->addr), "%s:%d", host, resp_port(resp));
        kvcmd_set(kv);
    }
    for (int i = 0; i < ncfg_exports; i++) {
        rc = pl_export_set(st, &cfg_exports[i]);
        if (rc) {
            fprintf(stderr, "plenum server: export %s from the config: %s%s\n",
                    cfg_exports[i].path, pl_strerror(rc),
                    rc == PL_ENOBUCKET ? " (create the bucket first: plenum mb pl://BUCKET)" : "");
            goto out;
        }
    }
    struct listener *fl = listener_find("nfs"), *ml = listener_find("mountd"),
                    *pl = listener_find("portmap");
    if (strcmp(fl->addr, "off")) {
        char host[200], mhost[200], phost[200];
        int port, mport = 0, pport = 0;
        if (parse_hostport(fl->addr, host, sizeof(host), &port) ||
            (strcmp(ml->addr, "off") && parse_hostport(ml->addr, mhost, sizeof(mhost), &mport)) ||
            (strcmp(pl->addr, "off") && parse_hostport(pl->addr, phost, sizeof(phost), &pport)))
            goto out;
        struct nfs_opts no = {host, port, strcmp(ml->addr, "off") ? mhost : NULL, mport,
                              strcmp(pl->addr, "off") ? phost : NULL, pport};
        rc = nfs_start(st, &no, &nfs);
        if (rc && no.portmap_host && pport == 111 && (rc == -EACCES || rc == -EADDRINUSE)) {
            /* the default portmap port is a privilege: serve NFS without it */
            pl_log(PL_LOG_WARN, "nfs", "cannot listen on %s for portmap (%s); clients must pass "
                   "nfsport= and mountport=", pl->addr, pl_strerror(rc));
            snprintf(pl->addr, sizeof(pl->addr), "off");
            no.portmap_host = NULL;
            rc = nfs_start(st, &no, &nfs);
        }
        if (rc) {
            fprintf(stderr, "plenum server: cannot listen on %s / %s / %s for nfs, mountd, "
                            "portmap: %s%s\n",
                    fl->addr, ml->addr, pl->addr, pl_strerror(rc),
                    rc == -EADDRINUSE ? " (another process has one; pass --nfs, --mountd, "
                                        "--portmap HOST:PORT or off)"
                                      : "");
            goto out;
        }
        snprintf(fl->addr, sizeof(fl->addr), "%s:%d", host, nfs_port(nfs, 0));
        if (no.mount_host)
            snprintf(ml->addr, sizeof(ml->addr), "%s:%d", mhost, nfs_port(nfs, 1));
        if (no.portmap_host)
            snprintf(pl->addr, sizeof(pl->addr), "%s:%d", phost, nfs_port(nfs, 2));
    } else {
        snprintf(ml->addr, sizeof(ml->addr), "off");
        snprintf(pl->addr, sizeof(pl->addr), "off");
    }
    char info[512];
    snprintf(info, sizeof(info), "{\"pid\": %d, \"admin\": %s%s%s}\n", (int)getpid(),
             admin ? "\"" : "", admin ? al->addr : "null", admin ? "\"" : "");
    rc = write_file_atomic(data, "server.json", info, 0644);
    if (rc) {
        fprintf(stderr, "plenum server: cannot write %s/server.json: %s\n", data, pl_strerror(rc));
        goto out;
    }
    printf("plenum server: data directory %s\n", data);
    for (size_t i = 0; i < PL_ARRAY_LEN(listeners); i++) {
        struct listener *l = &listeners[i];
        if (!strcmp(l->addr, "off"))
            printf("  %-7s off\n", l->name);
        else if (l->available)
            printf("  %-7s %s://%s\n", l->name,
                   !strcmp(l->name, "nbd")                                 ? "nbd"
                   : !strcmp(l->name, "s3") || !strcmp(l->name, "admin") ? "http"
                                                                           : "tcp",
                   l->addr);
        else
            printf("  %-7s %s: not available in this build\n", l->name, l->addr);
    }
    if (resp_unix)
        printf("  %-7s unix://%s\n", "resp", resp_unix);
    fflush(stdout);
    if (pthread_create(&gc_thr, NULL, gc_main, st) == 0)
        gc_started = 1;
    int sig = 0;
    sigwait(&sigs, &sig);
    pl_log(PL_LOG_INFO, "server", "signal=%d stopping", sig);
    rc = 0;
out:
    if (gc_started) {
        pthread_mutex_lock(&gc_lock);
        gc_stop = 1;
        pthread_cond_signal(&gc_cond);
        pthread_mutex_unlock(&gc_lock);
        pthread_join(gc_thr, NULL);
    }
    mounts_stop_all(); /* before the store closes: they write back into it */
    s3_stop(s3); /* in-flight S3 requests finish first */
    nfs_stop(nfs);
    nbd_stop(nbd);
    kafka_stop(kafka); /* connections first: they use the broker */
    resp_stop(resp);
    kvcmd_set(NULL);
    kv_close(kv); /* DRAM-only values go to flash first */
    admin_stop(admin); /* so do topic and group ops */
    topics_set_broker(NULL);
    broker_close(broker);
    if (st) {
        char p[PL_PATH_MAX];
        snprintf(p, sizeof(p), "%s/server.json", data);
        unlink(p);
    }
    pl_store_close(st); /* every acknowledged write is already synced */
    if (!rc)
        pl_log(PL_LOG_INFO, "server", "stopped");
    return rc ? 1 : 0;
}
