/* plenum: one binary, like git. "plenum server" runs everything; every other
 * subcommand is a tool that acts on a data directory, in-process when nothing
 * else holds it, else through the running server's admin API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"

static int cmd_version(struct opts *o)
{
    (void)o;
    printf("plenum %s\n", PL_VERSION);
    return 0;
}

static int cmd_help(struct opts *o);

static const struct cmd cmds[] = {
    {"server", NULL, "[--data DIR] [--LISTENER HOST:PORT|off]...", "run the server", NULL},
    {"mb", cmd_mb, "pl://BUCKET", "make a bucket",
     "Bucket names: 3-63 lowercase letters, digits, '-' and '.'.\n"
     "example: plenum mb pl://datasets"},
    {"rb", cmd_mb, "pl://BUCKET", "remove an empty bucket", "example: plenum rb pl://datasets"},
    {"cp", cmd_cp, "[-r] [-j N] [--content-type T] SRC DST",
     "copy files and objects (either side local or pl://, '-' is stdin/stdout)",
     "A DST ending in '/' keeps the source's name. -r copies a directory tree or every\n"
     "object under a prefix, -j N files at once (--jobs, default 4; 1 shows a progress\n"
     "bar per file). Downloads land in DST only when complete.\n"
     "examples:\n  plenum cp train.csv pl://datasets/raw/\n  plenum cp -r ./images "
     "pl://datasets/images\n  plenum cp -r pl://datasets/images ./restore\n"
     "  plenum cp --snapshot nightly pl://datasets/raw/train.csv old.csv"},
    {"cat", cmd_cat, "[--snapshot NAME] pl://BUCKET/KEY...", "write objects to stdout",
     "example: plenum cat pl://datasets/raw/train.csv | head"},
    {"ls", cmd_ls, "[-r] [--json] [--snapshot NAME] [pl://BUCKET[/PREFIX]]",
     "list buckets, or keys under a prefix",
     "Without -r, keys below the next '/' are shown once as PRE lines.\n"
     "examples:\n  plenum ls\n  plenum ls -r pl://datasets/raw/"},
    {"rm", cmd_rm, "[-r] pl://BUCKET/KEY", "remove an object, or every object under a prefix",
     "example: plenum rm -r pl://datasets/tmp/"},
    {"stat", cmd_stat, "[--json] [--snapshot NAME] pl://BUCKET[/KEY]",
     "show an object's or bucket's metadata", "example: plenum stat pl://datasets/raw/train.csv"},
    {"stats", cmd_stats, "[--json] [pl://BUCKET]",
     "logical vs stored vs physical bytes; dedup, compression and similarity savings",
     "With a bucket: what its live objects take, their chunks counted once in the bucket.\n"
     "Also: erasure coding layout, degraded reads, repairs and scrub counts.\n"
     "examples:\n  plenum stats\n  plenum stats --json pl://datasets"},
    {"fsck", cmd_fsck, "[--json]", "verify every element and chunk (exit 0 only when clean)",
     "Checks reference counts and reads every stored chunk against its checksum.\n"
     "example: plenum fsck --data /srv/plenum"},
    {"gc", cmd_gc, "[--json]", "reclaim space no object or snapshot uses",
     "The server also runs this every minute. example: plenum gc"},
    {"flush", cmd_flush, "[--json]", "destage everything buffered now onto erasure-coded stripes",
     "New data lands in the mirrored buffer; full buffer segments move to k+m stripes on the\n"
     "capacity devices in the background. flush moves everything now and returns when it is\n"
     "on stripes. example: plenum flush"},
    {"scrub", cmd_scrub, "--now [--json]",
     "verify every strip and buffer copy now, repairing from parity or mirror",
     "The server also scrubs in the background (scrub_interval_s, scrub_rate_mb in the config).\n"
     "Exit status 1 when something could not be repaired. example: plenum scrub --now"},
    {"device", cmd_device, "list | status | fail ID | add PATH | replace ID PATH | remove ID",
     "the buffer and capacity devices, and their repair",
     "list: every device with its role, state, strips and path (--json: id, role, path, state).\n"
     "status: the same, with rebuild progress, rate and time left, and repair counters.\n"
     "fail ID: stop using a capacity device (reads use parity).\n"
     "add PATH: a new capacity device for new stripes.\n"
     "replace ID PATH: rebuild the device's strips onto PATH (an empty directory, or the old\n"
     "  path after a disk swap); the server rebuilds in the background.\n"
     "remove ID: move the device's strips to other devices, then forget it.\n"
     "examples:\n  plenum device list\n  plenum device replace 3 /mnt/ssd7/plenum"},
    {"export", cmd_export,
     "add /BUCKET[/PATH] [--clients CIDR] [--options OPTS] | list | remove /BUCKET[/PATH] "
     "[--clients CIDR]",
     "NFS export rules",
     "With no rule, every bucket is exported as /BUCKET to loopback clients, read-write.\n"
     "With rules, only what they name is exported, to the clients they name:\n"
     "  --clients   *, A.B.C.D or A.B.C.D/N (default *); one rule per path and network\n"
     "  --options   rw|ro, root_squash|all_squash|no_root_squash, anonuid=N, anongid=N\n"
     "              (default rw,root_squash,anonuid=65534,anongid=65534)\n"
     "A running server picks changes up within a second. The config file can hold rules\n"
     "too ([export] /PATH = CLIENTS OPTIONS), added when the server starts.\n"
     "examples:\n  plenum export add /datasets --clients 10.0.0.0/8 --options ro,all_squash\n"
     "  plenum export add /datasets --clients 127.0.0.1 --options rw,no_root_squash\n"
     "  plenum export list\n  plenum export remove /datasets --clients 10.0.0.0/8"},
    {"mount", cmd_mount, "[--server HOST:PORT] [--read-only] BUCKET[/PATH] MOUNTPOINT",
     "mount a bucket (or a directory in one) as a local file system (FUSE)",
     "Files, directories, symlinks, hard links, xattrs: what you write there is the object\n"
     "S3 and NFS see, and their changes show in the mount at once. The command stays in the\n"
     "foreground until the mount ends: Ctrl-C, SIGTERM or fusermount3 -u MOUNTPOINT.\n"
     "When a server holds the data directory (or --server names its admin address), the\n"
     "server serves the mount; otherwise this command opens the data directory itself.\n"
     "examples:\n  mkdir -p /mnt/datasets && plenum mount datasets /mnt/datasets\n"
     "  plenum mount --server 127.0.0.1:9001 datasets/raw /mnt/raw"},
    {"topic", cmd_topic,
     "create NAME [--partitions N] [--config K=V]... | list | describe NAME | delete NAME",
     "Kafka topics: partitions, retention and offsets",
     "configs: retention.ms (-1 keeps forever; default 7 days), retention.bytes (per\n"
     "partition, -1 no limit), segment.bytes (default 256 MiB), cleanup.policy=delete.\n"
     "describe shows each partition's first and next offset, bytes and segments.\n"
     "examples:\n  plenum topic create events --partitions 6 --config retention.ms=86400000\n"
     "  kcat -b 127.0.0.1:9092 -P -t events <<< hello\n  plenum topic describe events"},
    {"group", cmd_group, "list | describe GROUP | reset-offsets GROUP TOPIC --to WHERE",
     "Kafka consumer groups: members, committed offsets and lag",
     "reset-offsets sets the group's committed offset on every partition of TOPIC to\n"
     "earliest, latest or a given offset; the group must have no active members.\n"
     "examples:\n  plenum group list\n  plenum group describe loaders\n"
     "  plenum group reset-offsets loaders events --to earliest"},
    {"kv", cmd_kv, "stats | flush [NAMESPACE] | config DRAM_MB FLASH_MB",
     "the KV cache behind the Redis protocol: tiers, hits, evictions",
     "stats shows keys, bytes and bounds per tier, hits per tier, misses, demotions to\n"
     "flash, promotions back to DRAM, evictions and expiries. flush drops every key (or\n"
     "a namespace's: USER/DB, e.g. default/0) from both tiers. config sets the tier\n"
     "bounds of the running server until it restarts (0 keeps one).\n"
     "examples:\n  plenum kv stats\n  plenum kv config 2048 0\n  plenum kv flush alice/0"},
    {"volume", cmd_volume,
     "create NAME --size N | create NAME --object pl://BUCKET/KEY [--size N] | list | "
     "resize NAME --size N | delete NAME | snapshot NAME SNAP | clone SOURCE NAME",
     "block volumes, served over NBD as nbd://HOST:PORT/NAME",
     "Volumes are thin: only written blocks take space, deduplicated like all data.\n"
     "A snapshot is the read-only volume NAME@SNAP; a clone is a writable volume sharing\n"
     "its source's data. Sizes take K, M, G or T.\n"
     "With --object the volume is that object, not a copy: NBD reads and writes its bytes,\n"
     "S3, NFS and FUSE see the same ones (NBD writes once flushed, or after a second).\n"
     "The key is looked up at each NBD connection, so a newer PUT is what the next one\n"
     "sees. --size makes the object (thin) if the key has none; delete leaves the object.\n"
     "examples:\n  plenum volume create vm1 --size 10G\n  nbdinfo nbd://127.0.0.1:10809/vm1\n"
     "  plenum volume snapshot vm1 before-upgrade\n  plenum volume clone vm1@before-upgrade vm2\n"
     "  plenum volume create img --object pl://images/debian.raw"},
    {"snapshot", cmd_snapshot, "create NAME | list | delete NAME",
     "point-in-time snapshots of the whole namespace (O(1) to take)",
     "Read from one with --snapshot NAME on cat, cp, ls and stat.\n"
     "example: plenum snapshot create before-cleanup"},
    {"user", cmd_user, "create NAME | list | delete NAME", "manage users",
     "example: plenum user create alice"},
    {"key", cmd_key, "create USER | list [USER] | revoke ACCESS_KEY",
     "manage S3 access keys (the secret is shown once)", "example: plenum key create alice"},
    {"version", cmd_version, "", "print the version", NULL},
    {"help", cmd_help, "[COMMAND]", "show help for a command", NULL},
};

static void usage_main(FILE *f)
{
    fprintf(f, "usage: plenum [--data DIR] COMMAND [ARGS]\n\n"
               "Plenum: one server for objects (S3), files (NFS, FUSE), blocks (NBD), streams\n"
               "(Kafka), tables (PostgreSQL) and a KV cache (Redis) on the same stored bytes.\n\n"
               "commands:\n");
    for (size_t i = 0; i < PL_ARRAY_LEN(cmds); i++)
        fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\ncommon options:\n"
               "  --data DIR   data directory (default ./plenum-data); when a server holds it,\n"
               "               commands go through that server\n"
               "  --json       machine-readable output\n"
               "  -h, --help   help for a command\n\n"
               "Plenum paths are written pl://BUCKET/KEY.\n"
               "exit status: 0 success, 1 the operation failed, 2 usage error\n");
}

static void usage_cmd(const struct cmd *c)
{
    if (!strcmp(c->name, "server")) {
        usage_server();
        return;
    }
    printf("usage: plenum %s %s\n\n%s.\n", c->name, c->args, c->summary);
    if (c->help)
        printf("\n%s\n", c->help);
    printf("\noptions: --data DIR (default ./plenum-data)%s\n",
           strstr(c->args, "--json") ? ", --json" : "");
}

static int cmd_help(struct opts *o)
{
    if (o->npos == 0) {
        usage_main(stdout);
        return 0;
    }
    for (size_t i = 0; i < PL_ARRAY_LEN(cmds); i++)
        if (!strcmp(cmds[i].name, o->pos[0])) {
            usage_cmd(&cmds[i]);
            return 0;
        }
    fprintf(stderr, "plenum help: no command '%s'\n", o->pos[0]);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    struct opts o = {.data = CLI_DEFAULT_DATA};
    int i = 1;
    /* global options before the command */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            o.data = argv[++i];
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage_main(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            return cmd_version(&o);
        } else {
            fprintf(stderr, "plenum: unknown option '%s'\n", argv[i]);
            usage_main(stderr);
            return EXIT_USAGE;
        }
    }
    if (i >= argc) {
        usage_main(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[i++];
    for (size_t c = 0; c < PL_ARRAY_LEN(cmds); c++)
        if (!strcmp(cmds[c].name, name))
            cli_cmd = &cmds[c];
    if (!cli_cmd) {
        fprintf(stderr, "plenum: '%s' is not a plenum command (see plenum --help)\n", name);
        return EXIT_USAGE;
    }
    if (!cli_cmd->fn) {
        /* server parses its own flags; pass the global --data along */
        char **sargv = calloc((size_t)argc - (size_t)i + 3, sizeof(char *));
        int sn = 0;
        if (!sargv)
            return EXIT_FAIL;
        if (strcmp(o.data, CLI_DEFAULT_DATA)) {
            sargv[sn++] = "--data";
            sargv[sn++] = (char *)o.data;
        }
        for (; i < argc; i++)
            sargv[sn++] = argv[i];
        int r = cmd_server(sn, sargv);
        free(sargv);
        return r;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            o.help = 1;
        else if (!strcmp(a, "--json"))
            o.json = 1;
        else if (!strcmp(a, "-r") || !strcmp(a, "--recursive"))
            o.recursive = 1;
        else if (!strcmp(a, "--now"))
            o.now = 1;
        else if ((!strcmp(a, "-j") || !strcmp(a, "--jobs")) && i + 1 < argc) {
            char *end;
            long j = strtol(argv[++i], &end, 10);
            if (*end || j < 1 || j > CLI_JOBS_MAX)
                return cli_usage_error("--jobs takes a number from 1 to 64, not '%s'", argv[i]);
            o.jobs = (int)j;
        }
        else if (!strcmp(a, "--data") && i + 1 < argc)
            o.data = argv[++i];
        else if (!strcmp(a, "--snapshot") && i + 1 < argc)
            o.snapshot = argv[++i];
        else if (!strcmp(a, "--content-type") && i + 1 < argc)
            o.content_type = argv[++i];
        else if (!strcmp(a, "--size") && i + 1 < argc)
            o.size = argv[++i];
        else if (!strcmp(a, "--object") && i + 1 < argc)
            o.object = argv[++i];
        else if (!strcmp(a, "--clients") && i + 1 < argc)
            o.clients = argv[++i];
        else if (!strcmp(a, "--options") && i + 1 < argc)
            o.options = argv[++i];
        else if (!strcmp(a, "--server") && i + 1 < argc)
            o.server = argv[++i];
        else if (!strcmp(a, "--read-only"))
            o.readonly = 1;
        else if (!strcmp(a, "--partitions") && i + 1 < argc)
            o.partitions = argv[++i];
        else if (!strcmp(a, "--to") && i + 1 < argc)
            o.to = argv[++i];
        else if (!strcmp(a, "--config") && i + 1 < argc && o.nconfigs < 16)
            o.configs[o.nconfigs++] = argv[++i];
        else if (a[0] == '-' && a[1])
            return cli_usage_error("unknown option '%s'", a);
        else if (o.npos < (int)PL_ARRAY_LEN(o.pos))
            o.pos[o.npos++] = a;
        else
            return cli_usage_error("%s", "too many arguments");
    }
    if (o.help) {
        usage_cmd(cli_cmd);
        return 0;
    }
    return cli_cmd->fn(&o);
}

