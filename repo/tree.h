/* tree.h - tree objects: one per directory, listing its entries with their metadata.
 *
 * A tree is stored as a blob of type BLOB_TREE. Its encoding is binary and deterministic: nodes
 * sorted by name (bytewise), every field in a fixed order, integers as uvarints, so that an
 * unchanged directory encodes to the same bytes and deduplicates. Names and link targets are
 * arbitrary bytes (Linux allows any byte but '/' and NUL); the decoder does not judge them,
 * the restorer does (see restorer.h): a hostile tree is structurally valid bytes with bad names.
 */
#ifndef PV_REPO_TREE_H
#define PV_REPO_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"
#include "base/oid.h"

enum tree_node_type {
    TREE_FILE = 1,
    TREE_DIR = 2,
    TREE_SYMLINK = 3,
    TREE_FIFO = 4,
    TREE_CHARDEV = 5,
    TREE_BLOCKDEV = 6,
    TREE_SOCKET = 7,
};

/* Node flags. */
#define TREE_FLAG_CHANGED 0x1    /* the file changed while it was being read */
#define TREE_FLAG_READ_ERROR 0x2 /* content could not be read whole; content is what was read */

/* Limits enforced by the decoder (and by the encoder, so that whatever it writes reads back). */
#define TREE_MAX_NAME 4096
#define TREE_MAX_XATTR_VALUE (1u << 20)
#define TREE_MAX_NODES (1u << 24)
#define TREE_MAX_OWNER 256      /* user and group names */
#define TREE_MAX_LINK 4096      /* symlink targets (PATH_MAX) */
#define TREE_MAX_XATTR_NAME 255 /* XATTR_NAME_MAX */
#define TREE_MAX_XATTRS 65536   /* the kernel lists at most 64 KiB of xattr names */

struct tree_xattr {
    char *name;     /* NUL-terminated, owned */
    uint8_t *value; /* owned */
    size_t value_len;
};

/* One run of file content: a blob, or a hole (bytes that read as zero and are not stored). */
struct tree_extent {
    bool hole;
    uint64_t len;  /* plain length of the blob, or length of the hole */
    struct oid id; /* blob ID when !hole */
};

struct tree_node {
    uint8_t *name; /* owned, name_len bytes, not NUL-terminated (may hold any bytes) */
    size_t name_len;
    uint8_t type;  /* enum tree_node_type */
    uint32_t mode; /* permission bits incl. setuid/setgid/sticky (07777), no type bits */
    uint32_t uid, gid;
    char *user, *group; /* owned, NUL-terminated, may be NULL when unknown */
    int64_t mtime_sec, atime_sec, ctime_sec;
    uint32_t mtime_nsec, atime_nsec, ctime_nsec;
    uint64_t inode, dev, nlink; /* for incremental change detection and hard links */
    uint64_t size;              /* file size in bytes (apparent size for sparse files) */
    uint64_t rdev;              /* device number for TREE_CHARDEV / TREE_BLOCKDEV */
    uint8_t *link_target;       /* owned, link_len bytes, for TREE_SYMLINK */
    size_t link_len;
    struct tree_xattr *xattrs; /* owned, sorted by name */
    size_t n_xattrs;
    struct tree_extent *content; /* owned, for TREE_FILE, in file order */
    size_t n_content;
    struct oid subtree; /* for TREE_DIR: the ID of its tree blob */
    uint32_t flags;     /* TREE_FLAG_* */
};

struct tree {
    struct tree_node *nodes; /* owned */
    size_t n;
    size_t cap;
};

#define TREE_INIT                                                                                  \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Appends a node, taking ownership of everything it points to (the caller's struct is zeroed).
 * On failure (memory) the node is left untouched and still the caller's. */
int tree_add(struct tree *t, struct tree_node *node, struct err *e);
/* Sorts nodes by name, bytewise, and each node's xattrs by name; encode requires both. */
void tree_sort(struct tree *t);
/* Appends the encoding of a sorted tree to `out` (left as it was on failure). Fails if names
 * are not strictly increasing, or a node breaks a limit or carries fields its type cannot have
 * (link target on a non-symlink, content on a non-file, subtree on a non-directory). */
int tree_encode(const struct tree *t, struct buf *out, struct err *e);
/* Decodes a tree; fills *out (which must be empty). Names are not judged here, nor is order.
 * Empty byte strings decode to NULL pointers. On failure *out is left empty. */
int tree_decode(const void *data, size_t len, struct tree *out, struct err *e);
/* Frees everything a node owns and zeroes it. */
void tree_node_free(struct tree_node *node);
/* Frees every node; the tree is empty and reusable. */
void tree_free(struct tree *t);
/* The node type for a file of stat(2) mode `st_mode`; anything unknown is a socket (recorded,
 * never restored). */
uint8_t tree_type_of_mode(uint32_t st_mode);

#endif
