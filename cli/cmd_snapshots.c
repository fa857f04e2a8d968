/* cmd_snapshots.c - listing what a repository holds: `snapshots` and `ls`. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/format.h"
#include "repo/repo.h"
#include "repo/tree.h"

/* ---- snapshots ---------------------------------------------------------------------------- */

static const char snapshots_usage[] =
    "usage: podvault snapshots [--host H] [--path P]... [--tag T]...\n"
    "\n"
    "Lists the snapshots, oldest first. With --json: one array of objects (id, short_id, time,\n"
    "hostname, username, paths, tags, labels, parent, tree, incomplete, summary).\n"
    "\n"
    "Options:\n"
    "  --host H     only snapshots made on host H\n"
    "  --path P     only snapshots of exactly these paths (repeatable)\n"
    "  --tag T      only snapshots carrying tag T (repeatable; \"a,b\" means both)\n";

static void print_list(char *const *v, size_t n, size_t width)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', stdout);
        fmt_put_escaped(stdout, v[i], strlen(v[i]));
        len += strlen(v[i]) + (i > 0);
    }
    printf("%*s", (int)(len < width ? width - len + 2 : 2), "");
}

static void print_table(const struct snapshot *list, size_t n, const struct snap_filter *f)
{
    size_t shown = 0;
    printf("%-8s  %-19s  %-16s  %-16s  %s\n", "ID", "Time", "Host", "Tags", "Paths");
    printf("--------------------------------------------------------------------------------\n");
    for (size_t i = 0; i < n; i++) {
        const struct snapshot *s = &list[i];
        if (!snap_matches(s, f)) continue;
        char sid[9], when[32];
        const char *host = s->hostname ? s->hostname : "";
        printf("%s  %s  ", fmt_short_id(&s->id, sid), fmt_time_local(s->time_sec, when));
        char *h = (char *)host;
        print_list(&h, 1, 16);
        print_list(s->tags, s->n_tags, 16);
        for (size_t p = 0; p < s->n_paths; p++) {
            if (p) fputc(' ', stdout);
            fmt_put_escaped(stdout, s->paths[p], strlen(s->paths[p]));
        }
        if (s->incomplete) fputs("  (incomplete)", stdout);
        fputc('\n', stdout);
        shown++;
    }
    printf("--------------------------------------------------------------------------------\n");
    printf("%zu snapshot%s\n", shown, shown == 1 ? "" : "s");
}

int cmd_snapshots(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {CLI_FILTER_OPTIONS, {NULL, 0, NULL, 0}};
    struct cli_filter filter;
    memset(&filter, 0, sizeof filter);
    struct cli_parser p;
    cli_parser_init(&p, snapshots_usage, "", longopts);
    int opt, rc = 0;
    while ((opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt < 0) {
            cli_filter_free(&filter);
            return cli_parse_exit(opt);
        }
        if (cli_filter_add(&filter, opt, optarg)) {
            cli_msg("out of memory");
            rc = PV_EXIT_ERROR;
            break;
        }
    }
    if (!rc && optind < argc) rc = cli_usage_error(g, "unexpected argument '%s'", argv[optind]);
    struct repo *r = NULL;
    if (!rc) rc = cli_open_repo(g, &r);
    if (rc) {
        cli_filter_free(&filter);
        return rc;
    }

    struct err e;
    err_clear(&e);
    struct snapshot *list = NULL;
    size_t n = 0;
    struct snap_filter sf;
    cli_filter_make(&filter, &sf);
    if (snap_list(r, &list, &n, &e)) {
        rc = cli_fail(g, &e);
    } else if (g->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            if (snap_matches(&list[i], &sf)) json_array_append_new(a, fmt_json_snapshot(&list[i]));
        if (fmt_json_print(a, false)) rc = PV_EXIT_ERROR;
    } else {
        print_table(list, n, &sf);
    }
    snap_list_free(list, n);
    repo_close(r);
    cli_filter_free(&filter);
    return rc;
}

/* ---- ls ----------------------------------------------------------------------------------- */

static const char ls_usage[] =
    "usage: podvault ls SNAPSHOT [DIR] [--long] [--host H] [--path P] [--tag T]\n"
    "\n"
    "Lists the files of a snapshot, recursively, one path per line, from the snapshot's root\n"
    "(for a backup of one directory, its content; of several paths, one entry each). With DIR,\n"
    "only what is below that directory of the snapshot. SNAPSHOT is an ID, a unique prefix, or\n"
    "\"latest\" (narrowed by --host, --path, --tag). With --json: one object per entry.\n"
    "\n"
    "Options:\n"
    "  -l, --long   mode, owner, size and modification time, like ls -l\n";

/* Trees are content-addressed, so they cannot loop; the bound only keeps a hostile repository
 * from making the walk use unbounded memory. */
#define LS_MAX_DEPTH 4096

struct ls_walk {
    struct cli *g;
    struct repo *r;
    bool long_format;
    struct buf path; /* the path being listed, not NUL-terminated */
    unsigned depth;
    struct err *e;
};

static int load_tree(struct repo *r, const struct oid *id, struct tree *t, struct err *e)
{
    struct buf b = BUF_INIT;
    char hex[OID_HEX_LEN + 1];
    int rc = repo_load_blob(r, BLOB_TREE, id, &b, e);
    if (!rc) rc = tree_decode(b.data, b.len, t, e);
    buf_free(&b);
    if (rc) err_wrap(e, "tree %s", oid_hex(id, hex));
    return rc;
}

static int print_node(struct ls_walk *w, const struct tree_node *n)
{
    if (w->g->json) {
        json_t *o = fmt_json_node(n, false);
        fmt_json_set(o, "path", fmt_json_bytes(w->path.data, w->path.len));
        return fmt_json_print(o, false);
    }
    if (w->long_format) {
        char mode[11], when[32], owner[64], group[64];
        if (n->user && !strchr(n->user, '\n'))
            snprintf(owner, sizeof owner, "%s", n->user);
        else
            snprintf(owner, sizeof owner, "%u", n->uid);
        if (n->group && !strchr(n->group, '\n'))
            snprintf(group, sizeof group, "%s", n->group);
        else
            snprintf(group, sizeof group, "%u", n->gid);
        printf("%s %-8s %-8s %12llu %s ", fmt_mode(n->type, n->mode, mode), owner, group,
               (unsigned long long)n->size, fmt_time_local(n->mtime_sec, when));
    }
    fmt_put_escaped(stdout, w->path.data, w->path.len);
    if (w->long_format && n->type == TREE_SYMLINK) {
        fputs(" -> ", stdout);
        fmt_put_escaped(stdout, n->link_target, n->link_len);
    }
    return fputc('\n', stdout) == EOF ? -1 : 0;
}

static int ls_tree(struct ls_walk *w, const struct oid *id)
{
    if (++w->depth > LS_MAX_DEPTH)
        return err_set(w->e, ERR_FAIL, "directories nested deeper than %d levels", LS_MAX_DEPTH);
    struct tree t = TREE_INIT;
    int rc = load_tree(w->r, id, &t, w->e);
    size_t base = w->path.len;
    for (size_t i = 0; !rc && i < t.n; i++) {
        const struct tree_node *n = &t.nodes[i];
        w->path.len = base;
        if (buf_put_u8(&w->path, '/') || buf_append(&w->path, n->name, n->name_len)) {
            rc = err_set(w->e, ERR_FAIL, "out of memory");
            break;
        }
        if (print_node(w, n)) {
            rc = err_set(w->e, ERR_FAIL, "writing the output failed");
            break;
        }
        if (n->type == TREE_DIR) rc = ls_tree(w, &n->subtree);
        if (!rc && *w->g->cancel) rc = err_set(w->e, ERR_CANCELED, "interrupted");
    }
    w->path.len = base;
    tree_free(&t);
    w->depth--;
    return rc;
}

/* Follows DIR ("/a/b") from the root tree down to the tree of that directory. */
static int find_dir(struct repo *r, const struct oid *root, const char *dir, struct oid *out,
                    struct err *e)
{
    *out = *root;
    const char *p = dir;
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (!len) break;
        struct tree t = TREE_INIT;
        if (load_tree(r, out, &t, e)) return e->code;
        size_t i = 0;
        while (i < t.n && !(t.nodes[i].name_len == len && memcmp(t.nodes[i].name, p, len) == 0))
            i++;
        int rc = 0;
        if (i == t.n)
            rc = err_set(e, ERR_NOT_FOUND, "%s: no such directory in the snapshot", dir);
        else if (t.nodes[i].type != TREE_DIR)
            rc = err_set(e, ERR_FAIL, "%s: not a directory in the snapshot", dir);
        else
            *out = t.nodes[i].subtree;
        tree_free(&t);
        if (rc) return rc;
        p += len;
    }
    return 0;
}

int cmd_ls(struct cli *g, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"long", no_argument, NULL, 'l'}, CLI_FILTER_OPTIONS, {NULL, 0, NULL, 0}};
    struct cli_filter filter;
    memset(&filter, 0, sizeof filter);
    bool long_format = false;
    struct cli_parser p;
    cli_parser_init(&p, ls_usage, "l", longopts);
    int opt, rc = 0;
    while (!rc && (opt = cli_next(g, &p, argc, argv)) != CLI_OPT_END) {
        if (opt == 'l')
            long_format = true;
        else if (opt < 0) {
            cli_filter_free(&filter);
            return cli_parse_exit(opt);
        } else if (cli_filter_add(&filter, opt, optarg)) {
            cli_msg("out of memory");
            rc = PV_EXIT_ERROR;
        }
    }
    int nargs = argc - optind;
    if (!rc && (nargs < 1 || nargs > 2))
        rc = cli_usage_error(g, nargs < 1 ? "which snapshot?" : "too many arguments");
    struct repo *r = NULL;
    if (!rc) rc = cli_open_repo_indexed(g, &r);
    struct snapshot s;
    memset(&s, 0, sizeof s);
    if (!rc) rc = cli_find_snapshot(g, r, argv[optind], &filter, &s);
    if (!rc) {
        struct err e;
        err_clear(&e);
        struct ls_walk w = {g, r, long_format, BUF_INIT, 0, &e};
        struct oid start;
        const char *dir = nargs == 2 ? argv[optind + 1] : "/";
        char sid[9];
        cli_note(g, "snapshot %s of %s", fmt_short_id(&s.id, sid), s.n_paths ? s.paths[0] : "");
        /* Paths printed below DIR keep DIR as their prefix. */
        for (const char *c = dir; *c;) {
            while (*c == '/')
                c++;
            size_t len = strcspn(c, "/");
            if (len && (buf_put_u8(&w.path, '/') || buf_append(&w.path, c, len))) break;
            c += len;
        }
        if (find_dir(r, &s.tree, dir, &start, &e) || ls_tree(&w, &start)) rc = cli_fail(g, &e);
        buf_free(&w.path);
    }
    snap_free(&s);
    if (r) repo_close(r);
    cli_filter_free(&filter);
    return rc;
}
