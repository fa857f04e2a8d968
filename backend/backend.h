/* backend.h - where repository objects live: one interface, several implementations.
 *
 * A backend stores immutable objects under slash-separated names ("config", "keys/<hex>",
 * "data/<2 hex>/<hex>", "index/<hex>", "snapshots/<hex>", "locks/<hex>"). The engine cannot tell
 * backends apart. Every implementation guarantees:
 *  - save is atomic: readers see the whole object or nothing, also after a crash or a failed
 *    upload half-way; saving a name that exists fails with ERR_EXISTS unless `overwrite`;
 *  - load of a missing object fails with ERR_NOT_FOUND, distinct from other failures;
 *  - every function may be called from several threads at once.
 * Implementations: backend_local.c (a directory), backend_s3.c (S3 and compatible stores),
 * backend_azure.c (Azure Blob Storage).
 */
#ifndef PV_BACKEND_BACKEND_H
#define PV_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/err.h"

struct backend;

/* S3 Object Lock: the retention every object a repository writes (but its lock objects) is given,
 * from the repository config (docs/FORMAT.md, "Object Lock"). */
enum backend_lock_mode {
    BACKEND_LOCK_OFF = 0,
    BACKEND_LOCK_GOVERNANCE, /* removable early only with s3:BypassGovernanceRetention */
    BACKEND_LOCK_COMPLIANCE, /* removable by nobody until the date */
};
struct backend_retention {
    enum backend_lock_mode mode;
    uint64_t seconds; /* retain-until = the time of the upload + this */
};

/* What `repair versions` does to one object to make the state of an earlier time current. */
enum backend_version_action {
    BACKEND_VERSION_RESTORE = 1, /* copy the version of that time back over the current state */
    BACKEND_VERSION_REMOVE,      /* the object did not exist then: remove it (a delete marker) */
};
/* Called once per object to change; non-zero stops the plan (and is returned). `size` is that of
 * the version restored (0 for a removal). */
typedef int (*backend_version_cb)(void *ctx, const char *name, enum backend_version_action a,
                                  uint64_t size);

/* Called once per object found by backend_list; return non-zero to stop listing (that value is
 * then returned by backend_list). */
typedef int (*backend_list_cb)(void *ctx, const char *name, uint64_t size);

/* The table each implementation fills. `self` is the backend itself. */
struct backend_ops {
    int (*save)(struct backend *self, const char *name, const void *data, size_t len,
                bool overwrite, struct err *e);
    int (*save_fd)(struct backend *self, const char *name, int fd, uint64_t len, bool overwrite,
                   struct err *e);
    /* NULL: temporary files go to the backend's tmp_dir (or /tmp). */
    int (*tmp_file)(struct backend *self, int *fd, struct err *e);
    int (*load)(struct backend *self, const char *name, uint64_t offset, uint64_t len,
                struct buf *out, struct err *e);
    int (*stat)(struct backend *self, const char *name, uint64_t *size, struct err *e);
    int (*list)(struct backend *self, const char *prefix, backend_list_cb cb, void *ctx,
                struct err *e);
    int (*remove)(struct backend *self, const char *name, struct err *e);
    void (*close)(struct backend *self);
    /* NULL: the backend cannot lock objects (backend_set_retention fails). */
    int (*set_retention)(struct backend *self, const struct backend_retention *r, bool verify,
                         struct err *e);
    /* NULL: the backend keeps no versions (backend_versions_plan fails). */
    int (*versions_plan)(struct backend *self, backend_version_cb cb, void *ctx, struct err *e);
    int (*version_apply)(struct backend *self, const char *name, enum backend_version_action a,
                         struct err *e);
};

/* What a backend is; a location's scheme says which (backend_parse_kind). */
enum backend_kind {
    BACKEND_LOCAL = 1, /* a directory */
    BACKEND_S3,        /* "s3:..." */
    BACKEND_AZURE,     /* "azure:..." */
};

struct backend {
    const struct backend_ops *ops;
    enum backend_kind kind; /* set by backend_open */
    char *location;         /* as the user gave it, for messages; owned */
    char *tmp_dir;          /* for backend_tmp_file without ops->tmp_file; owned, may be NULL */
    unsigned save_slots;    /* how many saves the engine should keep running at once (>= 1) */
    unsigned load_slots;    /* how many loads read-ahead may keep running at once (0 means 1) */
};

/* S3 addressing: path-style URLs (http://host/bucket/key) or virtual-hosted ones
 * (http://bucket.host/key); AUTO picks virtual-hosted for an amazonaws.com host given without a
 * port and a bucket name without a dot, path-style otherwise. */
enum backend_addressing { BACKEND_ADDR_AUTO = 0, BACKEND_ADDR_PATH, BACKEND_ADDR_VIRTUAL };

/* The settings a backend is opened with, as values: the program's edge (cli/, agent/) fills
 * them from its options and environment (backend_opts_from_vars); nothing below it reads the
 * environment. Strings are borrowed for the backend_open call (the backend copies what it
 * keeps). Fields a backend does not use are ignored (a local directory uses only tmp_dir). */
struct backend_opts {
    const char *tmp_dir; /* temporary files of backends without a place of their own; NULL: /tmp */
    /* S3 */
    const char *region; /* signing region; NULL: "us-east-1" */
    enum backend_addressing addressing;
    const char *cacert; /* a PEM file of CA certificates for private endpoints; NULL: system's */
    bool insecure_tls;  /* do not verify the server's certificate (only when the user asks) */
    long retries;       /* after a failed attempt: 0..100 (default 6) */
    long retry_delay_ms, retry_max_delay_ms; /* first backoff and its cap (100, 10000) */
    long connect_timeout_s;                  /* to wait for a connection (10) */
    long stall_timeout_s; /* without a byte moving before a request is abandoned (60) */
    long list_max;        /* keys asked for per listing page, 1..1000 (1000) */
    long uploads;         /* saves a backup keeps in flight, 1..64 (4): save_slots */
    long downloads;       /* segments read-ahead fetches at once, 1..16 (2): load_slots */
    /* Seconds during which throttling answers (503, 429, SlowDown) are retried past `retries`,
     * 0..86400 (300). */
    long throttle_time_s;
    /* Credentials: the keys when access_key is set (secret_key too), else the section `profile`
     * (NULL: "default") of credentials_file, else of <home>/.aws/credentials. */
    const char *access_key, *secret_key, *session_token;
    const char *credentials_file, *profile, *home;
    /* Azure Blob Storage (backend_azure.h): a connection string, used whole when set; else
     * the account with its Shared Key or SAS, at the endpoint (NULL: Azure's public one). */
    const char *azure_connection_string;
    const char *azure_account, *azure_key, *azure_sas, *azure_endpoint;
    long azure_block_size; /* Put Blob up to this size, else blocks of it (4 MiB) */
    /* AZURE_STORAGE_AUTH_MODE=login (the Azure CLI's name): Microsoft Entra ID even when none of
     * its variables below is set, i.e. the node's managed identity. */
    bool azure_login;
    /* The rest of AWS's credentials chain (backend/aws_creds.h), tried after the above. */
    const char *role_arn, *web_identity_token_file, *role_session_name; /* IRSA */
    const char *sts_endpoint;  /* NULL: https://sts.<region>.amazonaws.com/ */
    const char *container_uri; /* EKS Pod Identity / ECS credentials endpoint */
    const char *container_token, *container_token_file; /* its Authorization value */
    const char *imds_endpoint; /* EC2 instance metadata; NULL: http://169.254.169.254 */
    bool imds_disabled;
    long cred_refresh_s;     /* fetch temporary credentials this long before expiry (300) */
    const char *s3_endpoint; /* replaces the location's scheme://host[:port] when set */
    /* Microsoft Entra ID (backend/azure_token.h), for the Azure backend. */
    const char *azure_tenant_id, *azure_client_id, *azure_client_secret;
    const char *azure_federated_token_file, *azure_authority_host;
    /* > 0: read the repository as it stood at this time, in milliseconds since the epoch: each
     * object is its newest version at or before it (a versioned S3 bucket; docs/FORMAT.md,
     * "Object Lock"); objects under "locks/" are read and written as they are now, and writing
     * or removing anything else fails. 0: the current objects. */
    int64_t as_of_ms;
    const char *azure_imds_host; /* managed identity's host; NULL: http://169.254.169.254 */
};

/* The defaults above (strings NULL). */
void backend_opts_default(struct backend_opts *o);

/* Looks a setting up by its variable name; NULL when unset. */
typedef const char *(*backend_var_fn)(void *ctx, const char *name);

/* Fills `o` from variables (see backend_s3.h for their names), as the edge of a program reads
 * them: the process's own environment, or a lookup in the environment it gives a
 * child. Variables that are unset or empty leave the field as it is. Strings point into what
 * `get` returns and must outlive `o`. ERR_FAIL names the variable whose value is malformed. */
int backend_opts_from_vars(struct backend_opts *o, backend_var_fn get, void *ctx, struct err *e);

/* Which backend a location names: "s3:..." is S3, "azure:..." Azure Blob Storage; a location
 * with another ':' before any '/' (a scheme such as "gs:", or a mistyped one such as
 * "s3;http://") fails with a message naming the schemes there are, unless it starts with '.'
 * ("./name:x" is a directory); anything else is a local directory. The one place locations are
 * told apart. */
int backend_parse_kind(const char *location, enum backend_kind *kind, struct err *e);

/* Opens the backend named by a location (see backend_parse_kind; the S3 form is in
 * backend_s3.h), with settings `o` (NULL: the defaults). A local directory need not exist yet
 * when `create` is true; with `create`, the S3 backend creates a missing bucket. ERR_NOT_FOUND
 * for a local directory that does not exist. */
int backend_open(const char *location, const struct backend_opts *o, bool create,
                 struct backend **out, struct err *e);

/* Stores `data` under `name`, atomically. */
int backend_save(struct backend *b, const char *name, const void *data, size_t len, bool overwrite,
                 struct err *e);
/* Stores the first `len` bytes of the file open as `fd` under `name`, atomically, like
 * backend_save. The file is read with pread(2) (its offset is left alone) and never held in
 * memory whole; the caller keeps fd. */
int backend_save_fd(struct backend *b, const char *name, int fd, uint64_t len, bool overwrite,
                    struct err *e);
/* Opens a new, empty, anonymous temporary file for reading and writing (it vanishes when
 * closed) in which an object can be assembled before backend_save_fd. The backend places it
 * where saving it is cheapest: the local backend in the repository's own file system, where
 * saving links it into place without copying it. */
int backend_tmp_file(struct backend *b, int *fd, struct err *e);
/* backend_tmp_file's mechanics in a given directory, for implementations: O_TMPFILE, or a
 * unique file unlinked at once where the file system lacks it. */
int backend_tmp_file_in(const char *dir, int *fd, struct err *e);
/* The directory in which backend_tmp_file creates its files, for error messages (a full disk
 * there must be named). Owned by b; never NULL. Thread-safe. */
const char *backend_tmp_dir(const struct backend *b);
/* Appends bytes [offset, offset+len) of the object to `out`; len 0 means "to the end".
 * Fails (ERR_FAIL) when the object is shorter than offset+len. */
int backend_load(struct backend *b, const char *name, uint64_t offset, uint64_t len,
                 struct buf *out, struct err *e);
int backend_stat(struct backend *b, const char *name, uint64_t *size, struct err *e);
/* Calls cb for every object whose name starts with `prefix` (e.g. "snapshots/"), in no
 * particular order. */
int backend_list(struct backend *b, const char *prefix, backend_list_cb cb, void *ctx,
                 struct err *e);
/* Removes an object; removing a missing object fails with ERR_NOT_FOUND. */
int backend_remove(struct backend *b, const char *name, struct err *e);
void backend_close(struct backend *b);

/* Gives every object saved from now on whose name is not under "locks/" the retention `r`
 * (mode OFF: none). With `verify`, first asks the store whether it enforces Object Lock and fails
 * with a message saying how to get one when it does not. ERR_FAIL for a backend without Object
 * Lock (a local directory). Call before the backend is shared between threads. */
int backend_set_retention(struct backend *b, const struct backend_retention *r, bool verify,
                          struct err *e);
/* For a backend opened with as_of_ms: calls cb for every object (but those under "locks/") whose
 * current state differs from its state at that time, in name order. ERR_FAIL without as_of_ms
 * or for a backend without versions. Thread-safe. */
int backend_versions_plan(struct backend *b, backend_version_cb cb, void *ctx, struct err *e);
/* Carries out one change of the plan: RESTORE copies the version of that time over the current
 * object (it gets the backend's retention anew), REMOVE deletes the current object (versioned
 * stores keep its versions behind a delete marker). Thread-safe. */
int backend_version_apply(struct backend *b, const char *name, enum backend_version_action a,
                          struct err *e);
/* Parses a mode as a user writes it ("governance", "compliance", any case). */
bool backend_lock_mode_parse(const char *s, enum backend_lock_mode *m);
/* The mode in lower case ("governance", "compliance", "off"). */
const char *backend_lock_mode_str(enum backend_lock_mode m);

/* Constructors, used by backend_open (which sets kind and tmp_dir). */
int backend_local_open(const char *path, bool create, struct backend **out, struct err *e);
int backend_s3_open(const char *location, const struct backend_opts *o, bool create,
                    struct backend **out, struct err *e);
/* With `create`, a missing container is created. */
int backend_azure_open(const char *location, const struct backend_opts *o, bool create,
                       struct backend **out, struct err *e);

#endif
