/* options.c - command line parsing shared by every command: global options mixed with the
 * command's own, value parsers, string lists and snapshot filters. */
#include "cli/options.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

/* Global option values; kept apart from every command's values (which are characters or
 * small numbers below 1000). */
enum {
    G_REPO = 'r',
    G_QUIET = 'q',
    G_VERBOSE = 'v',
    G_HELP = 'h',
    G_PASSWORD_FILE = 1000,
    G_CACHE_DIR,
    G_NO_CACHE,
    G_JSON,
    G_INSECURE_TLS,
    G_CACERT,
    G_S3_REGION,
    G_S3_PATH_STYLE,
    G_S3_VIRTUAL_HOST,
    G_AS_OF,
};

static const struct option global_options[] = {
    {"repo", required_argument, NULL, G_REPO},
    {"password-file", required_argument, NULL, G_PASSWORD_FILE},
    {"cache-dir", required_argument, NULL, G_CACHE_DIR},
    {"no-cache", no_argument, NULL, G_NO_CACHE},
    {"json", no_argument, NULL, G_JSON},
    {"quiet", no_argument, NULL, G_QUIET},
    {"verbose", no_argument, NULL, G_VERBOSE},
    {"help", no_argument, NULL, G_HELP},
    {"insecure-tls", no_argument, NULL, G_INSECURE_TLS},
    {"cacert", required_argument, NULL, G_CACERT},
    {"s3-region", required_argument, NULL, G_S3_REGION},
    {"s3-path-style", no_argument, NULL, G_S3_PATH_STYLE},
    {"s3-virtual-host", no_argument, NULL, G_S3_VIRTUAL_HOST},
    {"as-of", required_argument, NULL, G_AS_OF},
};
#define N_GLOBAL (sizeof global_options / sizeof global_options[0])

void cli_parser_init(struct cli_parser *p, const char *usage, const char *shortopts,
                     const struct option *longopts)
{
    size_t n = 0;
    memset(p, 0, sizeof *p);
    p->usage = usage;
    for (size_t i = 0; i < N_GLOBAL; i++)
        p->opts[n++] = global_options[i];
    for (size_t i = 0; longopts && longopts[i].name && n + 1 < CLI_MAX_OPTIONS; i++)
        p->opts[n++] = longopts[i];
    /* ':' first: a missing argument is reported as ':' rather than '?'. */
    snprintf(p->shortopts, sizeof p->shortopts, ":r:qvh%s", shortopts ? shortopts : "");
}

/* Applies one global option; returns false when `opt` is not a global option. */
static bool apply_global(struct cli *g, int opt, const char *arg)
{
    switch (opt) {
    case G_REPO:
        g->repo = arg;
        break;
    case G_PASSWORD_FILE:
        g->password_file = arg;
        break;
    case G_CACHE_DIR:
        g->cache_dir = arg;
        break;
    case G_NO_CACHE:
        g->no_cache = true;
        break;
    case G_JSON:
        g->json = true;
        break;
    case G_QUIET:
        g->verbosity = 0;
        break;
    case G_VERBOSE:
        g->verbosity = g->verbosity < 1 ? 2 : g->verbosity + 1;
        break;
    case G_INSECURE_TLS:
        g->insecure_tls = true;
        break;
    case G_CACERT:
        g->cacert = arg;
        break;
    case G_S3_REGION:
        g->s3_region = arg;
        break;
    case G_S3_PATH_STYLE:
        g->s3_addressing = BACKEND_ADDR_PATH;
        break;
    case G_S3_VIRTUAL_HOST:
        g->s3_addressing = BACKEND_ADDR_VIRTUAL;
        break;
    default:
        return false;
    }
    return true;
}

int cli_next(struct cli *g, struct cli_parser *p, int argc, char **argv)
{
    opterr = 0;
    for (;;) {
        int opt = getopt_long(argc, argv, p->shortopts, p->opts, NULL);
        if (opt == -1) return CLI_OPT_END;
        if (opt == G_HELP) {
            fputs(p->usage, stdout);
            return CLI_OPT_HELP;
        }
        if (opt == '?' || opt == ':') {
            const char *bad = argv[optind - 1];
            char shortname[3] = {'-', (char)optopt, 0};
            /* For a short option, argv[optind - 1] may be a cluster such as "-qx". */
            if (optopt && bad[0] == '-' && bad[1] != '-') bad = shortname;
            cli_usage_error(g, opt == ':' ? "option '%s' needs a value" : "unknown option '%s'",
                            bad);
            return CLI_OPT_BAD;
        }
        if (opt == G_AS_OF) {
            if (opt_parse_time_ms(optarg, &g->as_of_ms) && g->as_of_ms > 0) continue;
            cli_usage_error(g,
                            "--as-of: want a UTC time such as 2026-12-08T02:16:06Z (or "
                            "\"2026-12-08 02:16:06\", or @SECONDS since 1970), not '%s'",
                            optarg);
            return CLI_OPT_BAD;
        }
        if (!apply_global(g, opt, optarg)) return opt;
    }
}

int cli_parse_exit(int opt)
{
    return opt == CLI_OPT_HELP ? PV_EXIT_OK : PV_EXIT_USAGE;
}

int cli_list_add(struct cli_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        const char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    if (l->owned) {
        char *copy = strdup(s);
        if (!copy) return -1;
        s = copy;
    }
    l->v[l->n++] = s;
    return 0;
}

void cli_list_free(struct cli_list *l)
{
    if (l->owned)
        for (size_t i = 0; i < l->n; i++)
            free((char *)l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}

int cli_filter_add(struct cli_filter *f, int opt, const char *arg)
{
    f->paths.owned = f->tags.owned = true;
    if (opt == CLI_OPT_FILTER_HOST) {
        f->host = arg;
        return 0;
    }
    if (opt == CLI_OPT_FILTER_PATH) {
        char *abs = opt_abs_path(arg);
        if (!abs) return -1;
        int rc = cli_list_add(&f->paths, abs);
        free(abs);
        return rc;
    }
    /* Tags: "a,b" asks for both, like two --tag options. */
    return cli_list_add_csv(&f->tags, arg);
}

int cli_list_add_csv(struct cli_list *l, const char *s)
{
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len) {
            char *item = strndup(s, len);
            if (!item) return -1;
            int rc = cli_list_add(l, item);
            free(item);
            if (rc) return -1;
        }
        s += len;
        if (*s == ',') s++;
    }
    return 0;
}

void cli_filter_make(const struct cli_filter *f, struct snap_filter *out)
{
    memset(out, 0, sizeof *out);
    out->hostname = f->host;
    if (f->paths.n) {
        out->paths = f->paths.v;
        out->n_paths = f->paths.n;
    }
    if (f->tags.n) {
        out->tags = f->tags.v;
        out->n_tags = f->tags.n;
    }
}

void cli_filter_free(struct cli_filter *f)
{
    cli_list_free(&f->paths);
    cli_list_free(&f->tags);
}

bool opt_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    if (!s || !isdigit((unsigned char)*s)) return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

bool opt_parse_time_ms(const char *s, int64_t *ms)
{
    if (!s) return false;
    if (s[0] == '@') {
        char *end;
        if (!isdigit((unsigned char)s[1])) return false;
        errno = 0;
        double v = strtod(s + 1, &end);
        if (errno || *end || v > 1e13) return false;
        *ms = (int64_t)(v * 1000.0 + 0.5);
        return true;
    }
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *end = strptime(s, "%Y-%m-%d", &tm);
    if (!end || (*end != 'T' && *end != ' ')) return false;
    end = strptime(end + 1, "%H:%M:%S", &tm);
    if (!end) return false;
    int frac = 0, n = 0;
    if (*end == '.') {
        for (end++; isdigit((unsigned char)*end); end++, n++)
            if (n < 3) frac = frac * 10 + (*end - '0');
        if (n == 0) return false;
        for (; n < 3; n++)
            frac *= 10;
    }
    if (*end == 'Z') end++;
    if (*end) return false;
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || t < 0) return false;
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

bool opt_parse_size(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},    {"b", 0},    {"k", 10}, {"kb", 10}, {"kib", 10}, {"m", 20},
                 {"mb", 20}, {"mib", 20}, {"g", 30}, {"gb", 30}, {"gib", 30}};
    char *end;
    if (!s || !isdigit((unsigned char)*s)) return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno) return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(end, units[i].suffix) != 0) continue;
        if (units[i].shift && v > (UINT64_MAX >> units[i].shift)) return false;
        *out = (uint64_t)v << units[i].shift;
        return true;
    }
    return false;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

int opt_read_patterns(const char *path, struct cli_list *l, struct err *e)
{
    FILE *f = fopen(path, "r");
    if (!f) return err_sys(e, errno, "exclude file %s", path);
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    errno = 0;
    while (getline(&line, &cap, f) >= 0) {
        char *p = trim(line);
        if (!*p || *p == '#') continue;
        if (cli_list_add(l, p)) {
            rc = err_set(e, ERR_FAIL, "exclude file %s: out of memory", path);
            break;
        }
    }
    if (!rc && ferror(f)) rc = err_sys(e, errno, "reading exclude file %s", path);
    free(line);
    fclose(f);
    return rc;
}

char *opt_abs_path(const char *path)
{
    char cwd[PATH_MAX] = "";
    if (path[0] != '/' && !getcwd(cwd, sizeof cwd)) return NULL;
    size_t cap = strlen(cwd) + strlen(path) + 3;
    char *joined = malloc(cap), *out = malloc(cap);
    if (!joined || !out) {
        free(joined);
        free(out);
        return NULL;
    }
    snprintf(joined, cap, "%s/%s", cwd, path);
    /* Fold the components into `out`, which always starts with '/'. */
    size_t n = 0;
    for (char *save = NULL, *c = strtok_r(joined, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0) continue;
        if (strcmp(c, "..") == 0) {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0) n--;
            continue;
        }
        out[n++] = '/';
        size_t len = strlen(c);
        memcpy(out + n, c, len);
        n += len;
    }
    if (n == 0) out[n++] = '/';
    out[n] = '\0';
    free(joined);
    return out;
}
