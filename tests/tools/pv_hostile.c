/* pv_hostile.c - writes hostile snapshots into a repository, one per attack on the restorer. */
/*
 * Usage: pv_hostile -r REPO [--password-file FILE] [--outside DIR] [ATTACK...]
 * The password comes from --password-file, else $PODVAULT_PASSWORD. DIR (default
 * /tmp/pv_outside) is where the attacks try to write; a test keeps a sentinel there. Every file
 * an attack tries to smuggle out is named "pv_escaped*", so a test can search for that name.
 * Prints one line per snapshot: "<snapshot id> <attack>". Without ATTACKs, writes them all;
 * --list prints the attack names.
 *
 * The trees are what an attacker who controls the bucket could only dream of: validly sealed,
 * so the restorer's own checks (not authentication) must stop them. Names the encoder would
 * not accept twice (duplicates) are written under distinct placeholder names of equal length
 * and then patched in the encoded bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "repo/crypt.h"
#include "repo/repo.h"
#include "repo/snapshot.h"
#include "repo/store.h"
#include "repo/tree.h"

#define DEEP_LEVELS 5000

struct ctx {
    struct repo *r;
    struct store *st;
    const char *outside;
    struct err e;
    struct oid payload; /* data blob "pwned\n" */
    size_t payload_len;
};

static void die(struct ctx *c, const char *what)
{
    fprintf(stderr, "pv_hostile: %s: %s\n", what, c->e.msg);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        perror("pv_hostile");
        exit(1);
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static struct tree_node node(const void *name, size_t len, uint8_t type)
{
    struct tree_node n = {0};
    n.name = memcpy(xmalloc(len), name, len);
    n.name_len = len;
    n.type = type;
    n.mode = type == TREE_DIR ? 0755 : 0644;
    n.uid = (uint32_t)getuid();
    n.gid = (uint32_t)getgid();
    n.mtime_sec = n.atime_sec = n.ctime_sec = 1700000000;
    n.nlink = 1;
    return n;
}

static void add(struct ctx *c, struct tree *t, struct tree_node *n)
{
    if (tree_add(t, n, &c->e) < 0) die(c, "tree_add");
}

/* A file holding the payload blob. */
static void add_file(struct ctx *c, struct tree *t, const void *name, size_t len)
{
    struct tree_node n = node(name, len, TREE_FILE);
    n.size = c->payload_len;
    n.content = xmalloc(sizeof *n.content);
    n.content[0] = (struct tree_extent){.hole = false, .len = c->payload_len, .id = c->payload};
    n.n_content = 1;
    add(c, t, &n);
}

static void add_dir(struct ctx *c, struct tree *t, const void *name, size_t len,
                    const struct oid *sub)
{
    struct tree_node n = node(name, len, TREE_DIR);
    n.subtree = *sub;
    add(c, t, &n);
}

static void add_symlink(struct ctx *c, struct tree *t, const char *name, const char *target)
{
    struct tree_node n = node(name, strlen(name), TREE_SYMLINK);
    n.mode = 0777;
    n.link_len = strlen(target);
    n.link_target = memcpy(xmalloc(n.link_len), target, n.link_len);
    add(c, t, &n);
}

static void put_blob(struct ctx *c, enum blob_type type, const void *p, size_t len, struct oid *id)
{
    crypt_blob_id(repo_keys(c->r), p, len, id, NULL);
    if (store_add(c->st, type, id, p, len, NULL, &c->e) < 0) die(c, "store_add");
}

/* Encodes, applies the placeholder patches (pairs of equal-length strings), stores. */
static void put_tree_patched(struct ctx *c, struct tree *t, const char *const *patch,
                             size_t n_patch, struct oid *id)
{
    struct buf b = BUF_INIT;
    tree_sort(t);
    if (tree_encode(t, &b, &c->e) < 0) die(c, "tree_encode");
    for (size_t i = 0; i + 1 < n_patch; i += 2) {
        size_t len = strlen(patch[i]);
        uint8_t *at = memmem(b.data, b.len, patch[i], len);
        if (!at || strlen(patch[i + 1]) != len) {
            fprintf(stderr, "pv_hostile: placeholder %s not found in the encoded tree\n", patch[i]);
            exit(1);
        }
        memcpy(at, patch[i + 1], len);
    }
    put_blob(c, BLOB_TREE, b.data, b.len, id);
    buf_free(&b);
    tree_free(t);
}

static void put_tree(struct ctx *c, struct tree *t, struct oid *id)
{
    put_tree_patched(c, t, NULL, 0, id);
}

/* A directory holding one payload file, for attacks that try to enter a directory. */
static void payload_dir(struct ctx *c, const char *file, struct oid *id)
{
    struct tree t = TREE_INIT;
    add_file(c, &t, file, strlen(file));
    put_tree(c, &t, id);
}

/* ---- the attacks: each fills the root tree of one snapshot ---- */

static void a_dotdot(struct ctx *c, struct tree *root)
{
    struct oid sub;
    payload_dir(c, "pv_escaped_dotdot", &sub);
    add_dir(c, root, "..", 2, &sub);
    add_file(c, root, "ok", 2);
}

static void a_dot(struct ctx *c, struct tree *root)
{
    struct oid sub;
    payload_dir(c, "pv_escaped_dot", &sub);
    add_dir(c, root, ".", 1, &sub);
    add_file(c, root, "ok", 2);
}

static void a_empty(struct ctx *c, struct tree *root)
{
    add_file(c, root, "", 0);
    add_file(c, root, "ok", 2);
}

/* "a" is a symlink to the outside, and "a/pv_escaped_slash" a file written through it. */
static void a_slash(struct ctx *c, struct tree *root)
{
    add_symlink(c, root, "a", c->outside);
    add_file(c, root, "a/pv_escaped_slash", strlen("a/pv_escaped_slash"));
    add_file(c, root, "ok", 2);
}

static void a_absolute(struct ctx *c, struct tree *root)
{
    char name[4096];
    snprintf(name, sizeof name, "%s/pv_escaped_abs", c->outside);
    add_file(c, root, name, strlen(name));
    add_file(c, root, "ok", 2);
}

static void a_nul(struct ctx *c, struct tree *root)
{
    static const char name[] = "pv_escaped_nul\0/../../x";
    add_file(c, root, name, sizeof name - 1);
    add_file(c, root, "ok", 2);
}

/* A symlink to the outside, then a directory of the same name holding a file (the names are
 * made equal by the root tree's patch). */
static void a_symlink_then_dir(struct ctx *c, struct tree *root)
{
    struct oid sub;
    payload_dir(c, "pv_escaped_symlink_dir", &sub);
    add_symlink(c, root, "link_0", c->outside);
    add_dir(c, root, "link_1", 6, &sub);
    add_file(c, root, "ok", 2);
}

/* A relative symlink climbing out, and a file through it. */
static void a_symlink_relative(struct ctx *c, struct tree *root)
{
    add_symlink(c, root, "up", "../../../../../../../../..");
    add_file(c, root, "up/pv_escaped_relative", strlen("up/pv_escaped_relative"));
    add_file(c, root, "ok", 2);
}

static void a_symlink_outside(struct ctx *c, struct tree *root)
{
    add_symlink(c, root, "link", c->outside);
    add_file(c, root, "ok", 2);
}

/* Restored after symlink_outside into the same target: "link" as a directory. */
static void a_dir_through_symlink(struct ctx *c, struct tree *root)
{
    struct oid sub;
    payload_dir(c, "pv_escaped_stage2", &sub);
    add_dir(c, root, "link", 4, &sub);
    add_file(c, root, "ok", 2);
}

/* A file named "link" after symlink_outside: must replace the symlink, not write through it. */
static void a_file_over_symlink(struct ctx *c, struct tree *root)
{
    add_file(c, root, "link", 4);
    add_file(c, root, "ok", 2);
}

static void a_duplicate(struct ctx *c, struct tree *root)
{
    struct oid sub;
    payload_dir(c, "pv_escaped_duplicate", &sub);
    add_file(c, root, "dup_0", 5);
    add_dir(c, root, "dup_1", 5, &sub);
    add_file(c, root, "ok", 2);
}

/* A tree cannot name itself (IDs are hashes of the content), so the cycle is stored under a
 * made-up ID; the restorer must refuse it whichever check catches it. */
static void a_self_reference(struct ctx *c, struct tree *root)
{
    struct oid fake;
    oid_random(&fake);
    struct tree t = TREE_INIT;
    add_dir(c, &t, "loop", 4, &fake);
    add_file(c, &t, "pv_loop_file", strlen("pv_loop_file"));
    struct buf b = BUF_INIT;
    tree_sort(&t);
    if (tree_encode(&t, &b, &c->e) < 0) die(c, "tree_encode");
    tree_free(&t);
    if (store_add(c->st, BLOB_TREE, &fake, b.data, b.len, NULL, &c->e) < 0)
        fprintf(stderr, "pv_hostile: self_reference: the store refused the forged ID (%s)\n",
                c->e.msg);
    buf_free(&b);
    add_dir(c, root, "loop", 4, &fake);
    add_file(c, root, "ok", 2);
}

/* The first member of a hard-link group is refused, the second names the same inode. */
static void a_hardlink_refused(struct ctx *c, struct tree *root)
{
    struct tree_node n = node("..", 2, TREE_FILE);
    n.nlink = 2;
    n.inode = 4242;
    n.dev = 7;
    add(c, root, &n);
    n = node("pv_link", 7, TREE_FILE);
    n.nlink = 2;
    n.inode = 4242;
    n.dev = 7;
    add(c, root, &n);
    add_file(c, root, "ok", 2);
}

static void a_huge_size(struct ctx *c, struct tree *root)
{
    struct tree_node n = node("huge", 4, TREE_FILE);
    n.size = UINT64_C(1) << 62;
    n.content = xmalloc(sizeof *n.content);
    n.content[0] = (struct tree_extent){.hole = true, .len = n.size};
    n.n_content = 1;
    add(c, root, &n);
    n = node("overflow", 8, TREE_FILE);
    n.size = 10;
    n.content = xmalloc(2 * sizeof *n.content);
    n.content[0] = (struct tree_extent){.hole = true, .len = UINT64_C(1) << 63};
    n.content[1] = (struct tree_extent){.hole = false, .len = c->payload_len, .id = c->payload};
    n.n_content = 2;
    add(c, root, &n);
    add_file(c, root, "ok", 2);
}

static void a_device(struct ctx *c, struct tree *root)
{
    struct tree_node n = node("pv_null", 7, TREE_CHARDEV);
    n.rdev = makedev(1, 3);
    add(c, root, &n);
    n = node("pv_sda", 6, TREE_BLOCKDEV);
    n.rdev = makedev(8, 0);
    add(c, root, &n);
    add_file(c, root, "ok", 2);
}

/* Content whose blob is shorter than the tree claims, and a blob that does not exist. */
static void a_bad_content(struct ctx *c, struct tree *root)
{
    struct tree_node n = node("short", 5, TREE_FILE);
    n.size = c->payload_len + 100;
    n.content = xmalloc(sizeof *n.content);
    n.content[0] = (struct tree_extent){.len = c->payload_len + 100, .id = c->payload};
    n.n_content = 1;
    add(c, root, &n);
    n = node("missing", 7, TREE_FILE);
    n.size = 10;
    n.content = xmalloc(sizeof *n.content);
    n.content[0] = (struct tree_extent){.len = 10};
    oid_random(&n.content[0].id);
    n.n_content = 1;
    add(c, root, &n);
    add_file(c, root, "ok", 2);
}

static void a_deep(struct ctx *c, struct tree *root)
{
    struct oid id;
    struct tree t = TREE_INIT;
    add_file(c, &t, "bottom", 6);
    put_tree(c, &t, &id);
    for (int i = 0; i < DEEP_LEVELS; i++) {
        add_dir(c, &t, "d", 1, &id);
        put_tree(c, &t, &id);
    }
    add_dir(c, root, "deep", 4, &id);
    add_file(c, root, "ok", 2);
}

static void a_socket(struct ctx *c, struct tree *root)
{
    struct tree_node n = node("sock", 4, TREE_SOCKET);
    add(c, root, &n);
    add_file(c, root, "ok", 2);
}

struct attack {
    const char *name;
    void (*fill)(struct ctx *c, struct tree *root);
    const char *const *patch; /* placeholder -> hostile name, applied to the root tree */
    size_t n_patch;
};

static const char *const dup_patch[] = {"dup_1", "dup_0"};
static const char *const link_patch[] = {"link_1", "link_0"};

static const struct attack attacks[] = {
    {"dotdot", a_dotdot, NULL, 0},
    {"dot", a_dot, NULL, 0},
    {"empty_name", a_empty, NULL, 0},
    {"slash_in_name", a_slash, NULL, 0},
    {"absolute_name", a_absolute, NULL, 0},
    {"nul_in_name", a_nul, NULL, 0},
    {"symlink_then_dir", a_symlink_then_dir, link_patch, 2},
    {"symlink_relative", a_symlink_relative, NULL, 0},
    {"symlink_outside", a_symlink_outside, NULL, 0},
    {"dir_through_symlink", a_dir_through_symlink, NULL, 0},
    {"file_over_symlink", a_file_over_symlink, NULL, 0},
    {"duplicate_names", a_duplicate, dup_patch, 2},
    {"self_reference", a_self_reference, NULL, 0},
    {"hardlink_to_refused", a_hardlink_refused, NULL, 0},
    {"huge_size", a_huge_size, NULL, 0},
    {"device_node", a_device, NULL, 0},
    {"bad_content", a_bad_content, NULL, 0},
    {"deep", a_deep, NULL, 0},
    {"socket", a_socket, NULL, 0},
};
#define N_ATTACKS (sizeof attacks / sizeof attacks[0])

static void save_snapshot(struct ctx *c, const char *name, const struct oid *root)
{
    struct snapshot s = {0};
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s.time_sec = now.tv_sec;
    s.time_nsec = (uint32_t)now.tv_nsec;
    s.tree = *root;
    s.hostname = xstrdup("pv-hostile");
    s.username = xstrdup("attacker");
    s.paths = xmalloc(sizeof *s.paths);
    s.paths[0] = xstrdup("/hostile");
    s.n_paths = 1;
    s.tags = xmalloc(sizeof *s.tags);
    s.tags[0] = xstrdup(name);
    s.n_tags = 1;
    if (snap_save(c->r, &s, &c->e) < 0) die(c, "snap_save");
    char hex[OID_HEX_LEN + 1];
    printf("%s %s\n", oid_hex(&s.id, hex), name);
    snap_free(&s);
}

static char *read_password(const char *file)
{
    if (!file) {
        const char *p = getenv("PODVAULT_PASSWORD");
        return p ? xstrdup(p) : NULL;
    }
    FILE *f = fopen(file, "r");
    if (!f) {
        fprintf(stderr, "pv_hostile: %s: %s\n", file, strerror(errno));
        exit(1);
    }
    char line[4096];
    char *p = fgets(line, sizeof line, f) ? xstrdup(line) : NULL;
    fclose(f);
    if (p) p[strcspn(p, "\r\n")] = 0;
    return p;
}

int main(int argc, char **argv)
{
    const char *repo = NULL, *pwfile = NULL, *outside = "/tmp/pv_outside";
    const char *want[N_ATTACKS];
    size_t n_want = 0;
    for (int i = 1; i < argc; i++) {
        if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--repo")) && i + 1 < argc) {
            repo = argv[++i];
        } else if (!strcmp(argv[i], "--password-file") && i + 1 < argc) {
            pwfile = argv[++i];
        } else if (!strcmp(argv[i], "--outside") && i + 1 < argc) {
            outside = argv[++i];
        } else if (!strcmp(argv[i], "--list")) {
            for (size_t k = 0; k < N_ATTACKS; k++)
                printf("%s\n", attacks[k].name);
            return 0;
        } else if (argv[i][0] != '-' && n_want < N_ATTACKS) {
            want[n_want++] = argv[i];
        } else {
            fprintf(stderr, "usage: pv_hostile -r REPO [--password-file FILE] [--outside DIR] "
                            "[--list] [ATTACK...]\n");
            return 2;
        }
    }
    for (size_t w = 0; w < n_want; w++) {
        bool known = false;
        for (size_t k = 0; k < N_ATTACKS; k++)
            known |= strcmp(want[w], attacks[k].name) == 0;
        if (!known) {
            fprintf(stderr, "pv_hostile: unknown attack %s (see --list)\n", want[w]);
            return 2;
        }
    }
    if (!repo) repo = getenv("PODVAULT_REPOSITORY");
    char *password = read_password(pwfile);
    if (!repo || !password) {
        fprintf(stderr, "pv_hostile: need -r REPO and a password\n");
        return 2;
    }
    struct ctx c = {.outside = outside};
    if (crypt_init(&c.e) < 0) die(&c, "crypt_init");
    if (repo_open(repo, password, NULL, &c.r, &c.e) < 0) die(&c, repo);
    free(password);
    if (repo_load_index(c.r, &c.e) < 0) die(&c, "loading index");
    if (store_new(c.r, &c.st, &c.e) < 0) die(&c, "store_new");
    static const char payload[] = "pwned\n";
    c.payload_len = sizeof payload - 1;
    put_blob(&c, BLOB_DATA, payload, c.payload_len, &c.payload);

    struct oid roots[N_ATTACKS];
    bool chosen[N_ATTACKS] = {false};
    for (size_t k = 0; k < N_ATTACKS; k++) {
        chosen[k] = n_want == 0;
        for (size_t w = 0; w < n_want; w++)
            chosen[k] |= strcmp(want[w], attacks[k].name) == 0;
        if (!chosen[k]) continue;
        struct tree root = TREE_INIT;
        attacks[k].fill(&c, &root);
        put_tree_patched(&c, &root, attacks[k].patch, attacks[k].n_patch, &roots[k]);
    }
    if (store_flush(c.st, &c.e) < 0) die(&c, "store_flush");
    for (size_t k = 0; k < N_ATTACKS; k++) {
        if (chosen[k]) save_snapshot(&c, attacks[k].name, &roots[k]);
    }
    store_free(c.st);
    repo_close(c.r);
    return 0;
}
