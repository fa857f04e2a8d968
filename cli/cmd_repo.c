/* cmd_repo.c - commands about the repository itself: init, key, cat and version. */
#include <ctype.h>
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "cli/cli.h"
#include "cli/format.h"
#include "cli/options.h"
#include "cli/password.h"
#include "backend/backend.h"
#include "repo/config.h"
#include "repo/index.h"
#include "repo/keyfile.h"
#include "repo/pack.h"
#include "repo/repo.h"
#include "repo/tree.h"

/* ---- init --------------------------------------------------------------------------------- */

/* The password's Argon2id cost, for the key file that init, key add and key passwd write. */
#define KDF_USAGE                                                                                  \
    "  --kdf-memory SIZE   Argon2id memory for the new password (default 7M; it is the least\n"    \
    "                      memory every command that opens the repository with it needs)\n"        \
    "  --kdf-passes N      Argon2id passes (default 40)\n"

enum { O_KDF_MEMORY = 100, O_KDF_PASSES };

#define KDF_LONGOPTS                                                                               \
    {"kdf-memory", required_argument, NULL, O_KDF_MEMORY},                                         \
    {                                                                                              \
        "kdf-passes", required_argument, NULL, O_KDF_PASSES                                        \
    }

/* Handles --kdf-memory and --kdf-passes; the key file's creation checks the bounds. */
static int parse_kdf(struct cli *g, int opt, const char *arg, struct keyfile_params *kdf)
{
    if (opt == O_KDF_MEMORY && opt_parse_size(arg, &kdf->memlimit)) return 0;
    if (opt == O_KDF_PASSES && opt_parse_uint(arg, 1, UINT32_MAX, &kdf->opslimit)) return 0;
    return cli_usage_error(g, "--kdf-%s: not a %s: '%s'", opt == O_KDF_MEMORY ? "memory" : "passes",
                           opt == O_KDF_MEMORY ? "size" : "number", arg);
}

static const char init_usage[] =
    "usage: podvault init [options]\n"
    "\n"
    "Creates a repository at the location given with -r (which must not hold one yet), protected\n"
    "by a password (asked twice on the terminal unless given by file or environment).\n"
    "\n"
    "Options (sizes take K, M, G suffixes; these settings are fixed for the repository's life):\n"
    "  --chunk-min N       smallest chunk (default 256K)\n"
    "  --chunk-avg N       average chunk, a power of two (default 1M)\n"
    "  --chunk-max N       largest chunk (default 4M)\n"
    "  --pack-size N       target size of pack files, 1M..1G (default 16M)\n"
    "  --compression L     zstd level 1..19, or 0 / off for none (default 3)\n"
    "  --object-lock DAYS  S3 Object Lock: every object but lock objects is written with a\n"
    "                      retention of DAYS (or a duration with s, m, h or d: 90m, 2h) ahead;\n"
    "                      the bucket must have Object Lock enabled\n"
    "  --object-lock-mode M  governance (default) or compliance\n" KDF_USAGE;

enum {
    O_CHUNK_MIN = 1,
    O_CHUNK_AVG,
    O_CHUNK_MAX,
    O_PACK_SIZE,
    O_COMPRESSION,
    O_OBJECT_LOCK,
    O_OBJECT_LOCK_MODE
};

/* --object-lock: days, or a number with s, m, h or d; within the config's bounds. */
static int parse_lock_duration(struct cli *g, const char *arg, uint64_t *seconds)
{
    static const struct {
        const char *suffix;
        uint64_t mul;
    } units[] = {{"", 86400}, {"d", 86400}, {"h", 3600}, {"m", 60}, {"s", 1}};
    size_t digits = strspn(arg, "0123456789");
    uint64_t v;
    char num[24];
    if (digits == 0 || digits >= sizeof num) goto bad;
    memcpy(num, arg, digits);
    num[digits] = '\0';
    if (!opt_parse_uint(num, 1, CONFIG_LOCK_SECONDS_MAX, &v)) goto bad;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(arg + digits, units[i].suffix) != 0) continue;
        if (v > CONFIG_LOCK_SECONDS_MAX / units[i].mul) goto bad;
        *seconds = v * units[i].mul;
        if (*seconds < CONFIG_LOCK_SECONDS_MIN) goto bad;
        return 0;
    }
bad:
    return cli_usage_error(g,
                           "--object-lock: want days (e.g. 30) or a duration with s, m, h or d "
                           "from 60s to 100 years, not '%s'",
                           arg);
}

static int parse_u32_size(struct cli *g, const char *opt, const char *arg, uint32_t *out)
{
    uint64_t v;
    if (!opt_parse_size(arg, &v) || v > UINT32_MAX)
        return cli_usage_error(g, "--%s: not a size: '%s'", opt, arg);
    *out = (uint32_t)v;
    return 0;
}

static int parse_lock_mode(struct cli *g, const char *arg, enum backend_lock_mode *m)
{
    if (backend_lock_mode_parse(arg, m)) return 0;
    return cli_usage_error(g, "--object-lock-mode: want governance or compliance, not '%s'", arg);
}

/* Says what init created: an "initialized" JSON line, or text unless -q. */
static void init_report(const struct cli *g, const struct config *cfg)
{
    char hex[OID_HEX_LEN + 1], sid[9];
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_INITIALIZED));
        fmt_json_set(o, "id", json_string(oid_hex(&cfg->repo_id, hex)));
        fmt_json_set(o, "repository", fmt_json_str(g->repo));
        if (cfg->object_lock.mode != BACKEND_LOCK_OFF) {
            fmt_json_set(o, "object_lock_mode",
                         json_string(backend_lock_mode_str(cfg->object_lock.mode)));
            fmt_json_set(o, "object_lock_seconds",
                         json_integer((json_int_t)cfg->object_lock.seconds));
        }
        fmt_json_print(o, false);
    } else if (g->verbosity > 0) {
        printf("created podvault repository %s at %s\n", fmt_short_id(&cfg->repo_id, sid), g->repo);
        printf("chunks %u..%u bytes (average %u), packs of %u bytes, zstd level %d\n",
               cfg->chunker.min_size, cfg->chunker.max_size, cfg->chunker.avg_size, cfg->pack_size,
               cfg->zstd_level);
        if (cfg->object_lock.mode != BACKEND_LOCK_OFF)
            printf("object lock: %s, objects retained %llu seconds after they are written\n",
                   backend_lock_mode_str(cfg->object_lock.mode),
                   (unsigned long long)cfg->object_lock.seconds);
        printf("keep the password safe: without it the data cannot be read.\n");
    }
}

/* Asks for the password, creates the repository, opens it again (which proves that it reads
 * back, and gives its ID to print) and reports. Returns the exit code. */
static int init_create(struct cli *g, const struct repo_create_params *params)
{
    struct err e;
    err_clear(&e);
    char *pw = NULL;
    struct password_source src = {g->password_file, "PODVAULT_PASSWORD",
                                  "enter a password for the new repository: ", true, g->cancel};
    if (password_get(&src, &pw, &e)) return cli_fail(g, &e);
    struct repo *r = NULL;
    int rc = cli_repo_create(g, pw, params, &e);
    if (!rc) rc = cli_repo_open(g, pw, &r, &e);
    password_free(pw);
    if (rc) return cli_fail(g, &e);
    init_report(g, repo_config(r));
    repo_close(r);
    return PV_EXIT_OK;
}

int cmd_init(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"chunk-min", required_argument, NULL, O_CHUNK_MIN},
        {"chunk-avg", required_argument, NULL, O_CHUNK_AVG},
        {"chunk-max", required_argument, NULL, O_CHUNK_MAX},
        {"pack-size", required_argument, NULL, O_PACK_SIZE},
        {"compression", required_argument, NULL, O_COMPRESSION},
        {"object-lock", required_argument, NULL, O_OBJECT_LOCK},
        {"object-lock-mode", required_argument, NULL, O_OBJECT_LOCK_MODE},
        KDF_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    struct repo_create_params params;
    memset(&params, 0, sizeof params);
    config_default(&params.config);
    keyfile_params_default(&params.kdf);
    struct config *c = &params.config;

    struct cli_parser p;
    cli_parser_init(&p, init_usage, "", longopts);
    int opt, rc;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        uint64_t v;
        switch (opt) {
        case O_CHUNK_MIN:
            rc = parse_u32_size(g, "chunk-min", optarg, &c->chunker.min_size);
            break;
        case O_CHUNK_AVG:
            rc = parse_u32_size(g, "chunk-avg", optarg, &c->chunker.avg_size);
            break;
        case O_CHUNK_MAX:
            rc = parse_u32_size(g, "chunk-max", optarg, &c->chunker.max_size);
            break;
        case O_PACK_SIZE:
            rc = parse_u32_size(g, "pack-size", optarg, &c->pack_size);
            if (!rc && (c->pack_size < (1u << 20) || c->pack_size > (1u << 30)))
                rc = cli_usage_error(g, "--pack-size must be between 1M and 1G");
            break;
        case O_COMPRESSION:
            rc = 0;
            if (strcasecmp(optarg, "off") == 0 || strcasecmp(optarg, "none") == 0)
                c->zstd_level = 0;
            else if (opt_parse_uint(optarg, 0, 19, &v))
                c->zstd_level = (int)v;
            else
                rc = cli_usage_error(g, "--compression: want 0..19 or off, not '%s'", optarg);
            break;
        case O_KDF_MEMORY:
        case O_KDF_PASSES:
            rc = parse_kdf(g, opt, optarg, &params.kdf);
            break;
        case O_OBJECT_LOCK:
            rc = parse_lock_duration(g, optarg, &c->object_lock.seconds);
            break;
        case O_OBJECT_LOCK_MODE:
            rc = parse_lock_mode(g, optarg, &c->object_lock.mode);
            break;
        default:
            return cli_parse_exit(opt);
        }
        if (rc) return rc;
    }
    if (c->object_lock.mode != BACKEND_LOCK_OFF && !c->object_lock.seconds)
        return cli_usage_error(g, "--object-lock-mode needs --object-lock DAYS");
    if (c->object_lock.seconds && c->object_lock.mode == BACKEND_LOCK_OFF)
        c->object_lock.mode = BACKEND_LOCK_GOVERNANCE;
    if (optind < argc) return cli_usage_error(g, "unexpected argument '%s'", argv[optind]);
    if (!g->repo || !*g->repo)
        return cli_usage_error(g, "no repository given: use -r or PODVAULT_REPOSITORY");

    struct err e;
    err_clear(&e);
    if (chunker_params_check(&c->chunker, &e)) return cli_usage_error(g, "%s", e.msg);

    return init_create(g, &params);
}

/* ---- ID prefixes -------------------------------------------------------------------------- */

/* Picks the one ID in ids[] that `spec` names in full or by a unique prefix. */
static int match_prefix(const struct oid *ids, size_t n, const char *spec, const char *what,
                        struct oid *out, struct err *e)
{
    size_t len = strlen(spec), found = 0;
    char hex[OID_HEX_LEN + 1], first[OID_HEX_LEN + 1] = "";
    if (len == 0 || len > OID_HEX_LEN) return err_set(e, ERR_FAIL, "'%s' is not an ID", spec);
    for (size_t i = 0; i < len; i++)
        if (!isxdigit((unsigned char)spec[i]))
            return err_set(e, ERR_FAIL, "'%s' is not an ID (hex digits only)", spec);
    for (size_t i = 0; i < n; i++) {
        oid_hex(&ids[i], hex);
        if (strncasecmp(hex, spec, len) != 0) continue;
        if (found++ == 0) {
            *out = ids[i];
            memcpy(first, hex, sizeof first);
        } else if (found == 2)
            return err_set(e, ERR_FAIL, "%s prefix '%s' is ambiguous: it matches %s, %s, ...", what,
                           spec, first, hex);
    }
    if (!found) return err_set(e, ERR_NOT_FOUND, "no %s matches '%s'", what, spec);
    return 0;
}

static int resolve_in_dir(struct repo *r, const char *dir, const char *spec, const char *what,
                          struct oid *out, struct err *e)
{
    if (oid_parse(spec, out)) return 0;
    struct oid *ids = NULL;
    size_t n = 0;
    if (repo_list_ids(r, dir, &ids, &n, e)) return err_wrap(e, "listing %s/", dir);
    int rc = match_prefix(ids, n, spec, what, out, e);
    free(ids);
    return rc;
}

struct id_list {
    struct oid *v;
    size_t n, cap;
};

static int id_list_add(struct id_list *l, const struct oid *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct oid *v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = *id;
    return 0;
}

/* Packs are named "data/xx/<hex>": two levels that repo_list_ids does not walk. */
static int collect_pack(void *ctx, const char *name, uint64_t size)
{
    struct oid id;
    const char *slash = strrchr(name, '/');
    if (slash && oid_parse(slash + 1, &id)) return id_list_add(ctx, &id) ? 1 : 0;
    return 0;
}

static int resolve_pack(struct repo *r, const char *spec, struct oid *out, struct err *e)
{
    if (oid_parse(spec, out)) return 0;
    struct id_list l = {0};
    int rc = backend_list(repo_backend(r), "data/", collect_pack, &l, e);
    if (rc > 0) rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) rc = match_prefix(l.v, l.n, spec, "pack", out, e);
    free(l.v);
    return rc;
}

static int collect_tree(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    if (loc->type == BLOB_TREE && id_list_add(ctx, blob)) return 1;
    return 0;
}

static int resolve_tree(struct repo *r, const char *spec, struct oid *out, struct err *e)
{
    if (oid_parse(spec, out)) return 0;
    struct id_list l = {0};
    int rc = idx_foreach(repo_index(r), collect_tree, &l);
    if (rc) rc = err_set(e, ERR_FAIL, "out of memory");
    if (rc == 0) rc = match_prefix(l.v, l.n, spec, "tree", out, e);
    free(l.v);
    return rc;
}

/* ---- cat ---------------------------------------------------------------------------------- */

static const char cat_usage[] =
    "usage: podvault cat config | snapshot ID | index ID | tree ID | key ID | pack ID\n"
    "\n"
    "Prints a repository object, decrypted, as JSON (indented; one line with --json).\n"
    "IDs may be shortened to a unique prefix; a snapshot may also be \"latest\".\n"
    "  config       the repository config\n"
    "  snapshot ID  a snapshot as stored\n"
    "  index ID     an index file: its packs and their blobs\n"
    "  tree ID      a tree blob: its nodes, with content and extended attributes\n"
    "  key ID       a key file (stored unencrypted; the master key inside is wrapped)\n"
    "  pack ID      a pack's header: its blobs, offsets and lengths\n";

static int print_json_text(struct cli *g, const struct buf *b, const char *what, struct err *e)
{
    json_error_t je;
    json_t *v = json_loadb(b->data ? (const char *)b->data : "", b->len, 0, &je);
    if (!v) return err_set(e, ERR_FAIL, "%s is not valid JSON: %s", what, je.text);
    if (fmt_json_print(v, !g->json)) return err_set(e, ERR_FAIL, "writing the output failed");
    return 0;
}

static json_t *pack_entry_json(const struct pack_entry *pe)
{
    json_t *o = json_object();
    fmt_json_set(o, "id", fmt_json_oid(&pe->id));
    fmt_json_set(o, "type", json_string(pe->type == BLOB_TREE ? "tree" : "data"));
    fmt_json_set(o, "offset", json_integer(pe->offset));
    fmt_json_set(o, "length", json_integer(pe->stored_len));
    fmt_json_set(o, "uncompressed_length", json_integer(pe->raw_len));
    return o;
}

static int cat_pack(struct cli *g, struct repo *r, const char *spec, struct err *e)
{
    struct oid id;
    struct pack_entry *entries = NULL;
    size_t n = 0;
    if (resolve_pack(r, spec, &id, e)) return e->code;
    if (pack_read_header(repo_backend(r), repo_keys(r), &id, &entries, &n, e)) return e->code;
    json_t *o = json_object(), *blobs = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(blobs, pack_entry_json(&entries[i]));
    free(entries);
    fmt_json_set(o, "id", fmt_json_oid(&id));
    fmt_json_set(o, "blobs", blobs);
    if (fmt_json_print(o, !g->json)) return err_set(e, ERR_FAIL, "writing the output failed");
    return 0;
}

struct loc_row {
    struct oid blob;
    struct idx_loc loc;
};
struct loc_rows {
    struct loc_row *v;
    size_t n, cap;
};

static int collect_loc(void *ctx, const struct oid *blob, const struct idx_loc *loc)
{
    struct loc_rows *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct loc_row *v = realloc(l->v, cap * sizeof *v);
        if (!v) return 1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].blob = *blob;
    l->v[l->n++].loc = *loc;
    return 0;
}

static int by_pack_offset(const void *a, const void *b)
{
    const struct idx_loc *x = &((const struct loc_row *)a)->loc;
    const struct idx_loc *y = &((const struct loc_row *)b)->loc;
    if (x->pack != y->pack) return x->pack < y->pack ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cat_index(struct cli *g, struct repo *r, const char *spec, struct err *e)
{
    struct oid id, *sup = NULL;
    size_t n_sup = 0;
    struct buf b = BUF_INIT;
    struct idx *x = NULL;
    struct loc_rows rows = {0};
    char hex[OID_HEX_LEN + 1];
    int rc = resolve_in_dir(r, "index", spec, "index file", &id, e);
    if (!rc) rc = repo_load_file(r, "index", "index", &id, &b, e);
    if (!rc) rc = idx_new(&x, e);
    if (!rc && (rc = idx_file_decode(x, b.data, b.len, &sup, &n_sup, e)))
        err_wrap(e, "index %s", oid_hex(&id, hex));
    if (!rc && idx_foreach(x, collect_loc, &rows)) rc = err_set(e, ERR_FAIL, "out of memory");
    if (!rc) {
        qsort(rows.v, rows.n, sizeof *rows.v, by_pack_offset);
        json_t *o = json_object(), *packs = json_array(), *blobs = NULL;
        fmt_json_set(o, "id", fmt_json_oid(&id));
        json_t *s = json_array();
        for (size_t i = 0; i < n_sup; i++)
            json_array_append_new(s, fmt_json_oid(&sup[i]));
        fmt_json_set(o, "supersedes", s);
        for (size_t i = 0; i < rows.n; i++) {
            const struct idx_loc *l = &rows.v[i].loc;
            if (i == 0 || l->pack != rows.v[i - 1].loc.pack) {
                json_t *pk = json_object();
                blobs = json_array();
                fmt_json_set(pk, "id", fmt_json_oid(idx_pack_id(x, l->pack)));
                fmt_json_set(pk, "blobs", blobs);
                json_array_append_new(packs, pk);
            }
            struct pack_entry pe = {rows.v[i].blob, l->type, l->offset, l->stored_len, l->raw_len};
            json_array_append_new(blobs, pack_entry_json(&pe));
        }
        fmt_json_set(o, "packs", packs);
        if (fmt_json_print(o, !g->json)) rc = err_set(e, ERR_FAIL, "writing the output failed");
    }
    free(rows.v);
    free(sup);
    idx_free(x);
    buf_free(&b);
    return rc;
}

static int cat_tree(struct cli *g, struct repo *r, const char *spec, struct err *e)
{
    struct oid id;
    struct buf b = BUF_INIT;
    struct tree t = TREE_INIT;
    char hex[OID_HEX_LEN + 1];
    int rc = repo_load_index(r, e);
    if (!rc) rc = resolve_tree(r, spec, &id, e);
    if (!rc && (rc = repo_load_blob(r, BLOB_TREE, &id, &b, e)))
        err_wrap(e, "tree %s", oid_hex(&id, hex));
    if (!rc && (rc = tree_decode(b.data, b.len, &t, e))) err_wrap(e, "tree %s", oid_hex(&id, hex));
    if (!rc) {
        json_t *o = json_object(), *nodes = json_array();
        for (size_t i = 0; i < t.n; i++)
            json_array_append_new(nodes, fmt_json_node(&t.nodes[i], true));
        fmt_json_set(o, "id", fmt_json_oid(&id));
        fmt_json_set(o, "nodes", nodes);
        if (fmt_json_print(o, !g->json)) rc = err_set(e, ERR_FAIL, "writing the output failed");
    }
    tree_free(&t);
    buf_free(&b);
    return rc;
}

static int cat_object(struct cli *g, struct repo *r, const char *what, const char *spec,
                      struct err *e)
{
    struct buf b = BUF_INIT;
    struct oid id;
    char hex[OID_HEX_LEN + 1], name[16 + OID_HEX_LEN];
    int rc;
    if (strcmp(what, "config") == 0) {
        struct buf raw = BUF_INIT;
        rc = backend_load(repo_backend(r), "config", 0, 0, &raw, e);
        if (!rc) rc = crypt_file_open(repo_keys(r), "config", raw.data, raw.len, &b, e);
        if (rc) err_wrap(e, "config");
        buf_free(&raw);
    } else if (strcmp(what, "snapshot") == 0) {
        struct snapshot s;
        struct cli_filter none = {0};
        memset(&s, 0, sizeof s);
        if ((rc = cli_find_snapshot(g, r, spec, &none, &s))) return rc; /* already printed */
        id = s.id;
        snap_free(&s);
        if ((rc = repo_load_file(r, "snapshots", "snapshot", &id, &b, e)))
            err_wrap(e, "snapshot %s", oid_hex(&id, hex));
    } else if (strcmp(what, "key") == 0) {
        rc = resolve_in_dir(r, "keys", spec, "key", &id, e);
        snprintf(name, sizeof name, "keys/%s", oid_hex(&id, hex));
        if (!rc && (rc = backend_load(repo_backend(r), name, 0, 0, &b, e))) err_wrap(e, "%s", name);
    } else if (strcmp(what, "index") == 0)
        return cat_index(g, r, spec, e) ? cli_fail(g, e) : 0;
    else if (strcmp(what, "tree") == 0)
        return cat_tree(g, r, spec, e) ? cli_fail(g, e) : 0;
    else
        return cat_pack(g, r, spec, e) ? cli_fail(g, e) : 0;
    if (!rc) rc = print_json_text(g, &b, what, e);
    buf_free(&b);
    return rc ? cli_fail(g, e) : 0;
}

int cmd_cat(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {{NULL, 0, NULL, 0}};
    struct cli_parser p;
    cli_parser_init(&p, cat_usage, "", longopts);
    int opt = cli_next(g, &p, argc, argv);
    if (opt != CLI_OPT_END) return opt < 0 ? cli_parse_exit(opt) : PV_EXIT_USAGE;
    static const char *const kinds[] = {"config", "snapshot", "index", "tree", "key", "pack"};
    if (optind >= argc) return cli_usage_error(g, "what should be printed?");
    const char *what = argv[optind], *spec = argv[optind + 1 < argc ? optind + 1 : optind];
    size_t k = 0;
    while (k < 6 && strcmp(kinds[k], what) != 0)
        k++;
    if (k == 6) return cli_usage_error(g, "unknown object kind '%s'", what);
    int want = k == 0 ? 1 : 2;
    if (argc - optind != want)
        return cli_usage_error(g, k == 0 ? "'config' takes no ID" : "'%s' needs one ID", what);
    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    struct err e;
    err_clear(&e);
    rc = cat_object(g, r, what, spec, &e);
    repo_close(r);
    return rc;
}

/* ---- key ---------------------------------------------------------------------------------- */

static const char key_usage[] =
    "usage: podvault key list | add | remove ID | passwd  [options]\n"
    "\n"
    "Manages the passwords that open the repository (one key file each).\n"
    "  list        list the key files; '*' marks the one that opened the repository\n"
    "  add         add a password\n"
    "  remove ID   remove a key file (not the last one, nor the one in use)\n"
    "  passwd      change the password in use (adds a key file and removes the old one)\n"
    "\n"
    "Options:\n"
    "  --new-password-file F   read the new password from F (else $PODVAULT_NEW_PASSWORD,\n"
    "                          else ask twice on the terminal)\n" KDF_USAGE;

enum { O_NEW_PASSWORD_FILE = 1 };

struct key_row {
    struct oid id;
    struct keyfile_info info;
};

static int by_created(const void *a, const void *b)
{
    return strcmp(((const struct key_row *)a)->info.created,
                  ((const struct key_row *)b)->info.created);
}

/* Writes a column of a table: the text escaped, then spaces up to `width` and two more. */
static void put_padded(const char *text, size_t width)
{
    size_t len = strlen(text);
    fmt_put_escaped(stdout, text, len);
    printf("%*s", (int)(len < width ? width - len + 2 : 2), "");
}

static int key_list(struct cli *g, struct repo *r, struct err *e)
{
    struct oid *ids = NULL;
    size_t n = 0;
    if (repo_list_ids(r, "keys", &ids, &n, e)) return err_wrap(e, "listing keys/");
    struct key_row *rows = calloc(n ? n : 1, sizeof *rows);
    int rc = rows ? 0 : err_set(e, ERR_FAIL, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        struct buf b = BUF_INIT;
        char hex[OID_HEX_LEN + 1], name[8 + OID_HEX_LEN];
        snprintf(name, sizeof name, "keys/%s", oid_hex(&ids[i], hex));
        rows[i].id = ids[i];
        rc = backend_load(repo_backend(r), name, 0, 0, &b, e);
        if (!rc) rc = keyfile_info(b.data, b.len, &rows[i].info, e);
        if (rc) err_wrap(e, "%s", name);
        buf_free(&b);
    }
    if (!rc) {
        qsort(rows, n, sizeof *rows, by_created);
        json_t *a = g->json ? json_array() : NULL;
        if (!g->json) printf(" %-8s  %-16s  %-20s  %s\n", "ID", "user", "host", "created");
        for (size_t i = 0; i < n; i++) {
            bool current = oid_eq(&rows[i].id, repo_key_id(r));
            const struct keyfile_info *k = &rows[i].info;
            char sid[9];
            if (g->json) {
                json_t *o = json_object();
                fmt_json_set(o, "id", fmt_json_oid(&rows[i].id));
                fmt_json_set(o, "current", json_boolean(current));
                fmt_json_set(o, "username", fmt_json_str(k->username));
                fmt_json_set(o, "hostname", fmt_json_str(k->hostname));
                fmt_json_set(o, "created", fmt_json_str(k->created));
                fmt_json_set(o, "opslimit", json_integer((json_int_t)k->opslimit));
                fmt_json_set(o, "memlimit", json_integer((json_int_t)k->memlimit));
                json_array_append_new(a, o);
                continue;
            }
            printf("%c%-8s  ", current ? '*' : ' ', fmt_short_id(&rows[i].id, sid));
            put_padded(k->username, 16);
            put_padded(k->hostname, 20);
            fmt_put_escaped(stdout, k->created, strlen(k->created));
            putchar('\n');
        }
        if (a && fmt_json_print(a, false)) rc = err_set(e, ERR_FAIL, "writing the output failed");
    }
    free(rows);
    free(ids);
    return rc;
}

static void print_key_done(struct cli *g, const char *what, const struct oid *id)
{
    char sid[9];
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(what));
        fmt_json_set(o, "id", fmt_json_oid(id));
        fmt_json_print(o, false);
    } else if (g->verbosity > 0)
        printf("%s key %s\n", what, fmt_short_id(id, sid));
}

int cmd_key(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"new-password-file", required_argument, NULL, O_NEW_PASSWORD_FILE},
        KDF_LONGOPTS,
        {NULL, 0, NULL, 0},
    };
    const char *new_file = NULL;
    struct keyfile_params kdf;
    keyfile_params_default(&kdf);
    struct cli_parser p;
    cli_parser_init(&p, key_usage, "", longopts);
    int opt;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == O_NEW_PASSWORD_FILE) {
            new_file = optarg;
        } else if (opt == O_KDF_MEMORY || opt == O_KDF_PASSES) {
            int rc = parse_kdf(g, opt, optarg, &kdf);
            if (rc) return rc;
        } else {
            return cli_parse_exit(opt);
        }
    }
    if (optind >= argc) return cli_usage_error(g, "list, add, remove or passwd?");
    const char *action = argv[optind];
    int nargs = argc - optind - 1;
    bool is_remove = strcmp(action, "remove") == 0;
    if (!is_remove && strcmp(action, "list") != 0 && strcmp(action, "add") != 0 &&
        strcmp(action, "passwd") != 0)
        return cli_usage_error(g, "unknown key action '%s'", action);
    if (nargs != (is_remove ? 1 : 0))
        return cli_usage_error(
            g, is_remove ? "'remove' needs one key ID" : "'%s' takes no arguments", action);

    struct repo *r;
    int rc = cli_open_repo(g, &r);
    if (rc) return rc;
    struct err e;
    err_clear(&e);
    struct oid id, old;
    char *pw = NULL;
    struct password_source src = {new_file, "PODVAULT_NEW_PASSWORD",
                                  "enter the new password: ", true, g->cancel};

    if (strcmp(action, "list") == 0) {
        if (key_list(g, r, &e)) rc = cli_fail(g, &e);
    } else if (is_remove) {
        if (resolve_in_dir(r, "keys", argv[optind + 1], "key", &id, &e) ||
            repo_key_remove(r, &id, &e))
            rc = cli_fail(g, &e);
        else
            print_key_done(g, "removed", &id);
    } else if (password_get(&src, &pw, &e) || repo_key_add(r, pw, &kdf, &id, &e)) {
        rc = cli_fail(g, &e);
    } else if (strcmp(action, "add") == 0) {
        print_key_done(g, "added", &id);
    } else {
        /* passwd: the key in use cannot remove itself, so reopen with the new password. */
        old = *repo_key_id(r);
        repo_close(r);
        r = NULL;
        if (cli_repo_open(g, pw, &r, &e)) {
            rc = cli_fail(g, &e);
        } else if (oid_eq(repo_key_id(r), &old)) {
            char sid[9];
            cli_msg("the new password is the same as the old one; key %s was added and "
                    "nothing removed",
                    fmt_short_id(&id, sid));
            rc = PV_EXIT_ERROR;
        } else if (repo_key_remove(r, &old, &e)) {
            rc = cli_fail(g, &e);
        } else {
            print_key_done(g, "added", &id);
            print_key_done(g, "removed", &old);
        }
    }
    password_free(pw);
    if (r) repo_close(r);
    return rc;
}

/* ---- version ------------------------------------------------------------------------------ */

static const char version_usage[] = "usage: podvault version\n\nPrints the version of podvault "
                                    "and of the libraries it was built with.\n";

int cmd_version(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {{NULL, 0, NULL, 0}};
    struct cli_parser p;
    cli_parser_init(&p, version_usage, "", longopts);
    int opt = cli_next(g, &p, argc, argv);
    if (opt != CLI_OPT_END) return opt < 0 ? cli_parse_exit(opt) : PV_EXIT_USAGE;
    if (optind < argc) return cli_usage_error(g, "unexpected argument '%s'", argv[optind]);
    const char *curl = curl_version_info(CURLVERSION_NOW)->version;
    if (g->json) {
        json_t *o = json_object();
        fmt_json_set(o, "version", json_string(PV_VERSION));
        fmt_json_set(o, "libsodium", json_string(sodium_version_string()));
        fmt_json_set(o, "zstd", json_string(ZSTD_versionString()));
        fmt_json_set(o, "libcurl", json_string(curl));
        fmt_json_set(o, "jansson", json_string(JANSSON_VERSION));
        return fmt_json_print(o, false) ? PV_EXIT_ERROR : PV_EXIT_OK;
    }
    printf("podvault %s (libsodium %s, zstd %s, libcurl %s, jansson %s)\n", PV_VERSION,
           sodium_version_string(), ZSTD_versionString(), curl, JANSSON_VERSION);
    return PV_EXIT_OK;
}
