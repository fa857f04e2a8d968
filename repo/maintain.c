/* maintain.c - scheduled maintenance and its records in the repository; see maintain.h. */
#include "repo/maintain.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repo/jsonf.h"
#include "repo/lock.h"
#include "repo/repo.h"

#define MAINT_DIR "maintenance"
#define MAINT_KIND_FILE "maintenance"
#define MAINT_JSON_MAX (64u * 1024)

const char *maint_kind_name(enum maint_kind k)
{
    return k == MAINT_FULL ? "full" : k == MAINT_QUICK ? "quick" : "none";
}

/* Copies at most cap - 1 bytes of valid UTF-8, cutting before a sequence that would not fit. */
static void copy_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        size_t lead = n;
        while (lead > 0 && ((unsigned char)src[lead - 1] & 0xc0) == 0x80)
            lead--;
        if (lead > 0) {
            unsigned char c = (unsigned char)src[lead - 1];
            size_t want = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
            if (n - (lead - 1) < want) n = lead - 1;
        }
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

int maint_record_encode(const struct maint_record *m, struct buf *out, struct err *e)
{
    json_t *o = json_object();
    if (!o) return err_set(e, ERR_FAIL, "maintenance record: out of memory");
    json_object_set_new(o, "kind", json_string(maint_kind_name(m->kind)));
    json_object_set_new(o, "started", json_integer(m->started));
    json_object_set_new(o, "finished", json_integer(m->finished));
    json_object_set_new(o, "hostname", json_string(m->hostname));
    json_object_set_new(o, "ok", json_boolean(m->ok));
    if (!m->ok) json_object_set_new(o, "error", json_string(m->error));
    json_object_set_new(o, "packs_deleted", json_integer((json_int_t)m->packs_deleted));
    json_object_set_new(o, "bytes_freed", json_integer((json_int_t)m->bytes_freed));
    json_object_set_new(o, "packs_pending", json_integer((json_int_t)m->packs_pending));
    json_object_set_new(o, "check_errors", json_integer((json_int_t)m->check_errors));
    int rc = jsonf_dump(o, out, "maintenance record", e);
    json_decref(o);
    return rc;
}

int maint_record_decode(const void *data, size_t len, struct maint_record *m, struct err *e)
{
    struct oid id = m->id;
    memset(m, 0, sizeof *m);
    m->id = id;
    json_t *o;
    const char *what = "maintenance record";
    int rc = jsonf_parse(data, len, MAINT_JSON_MAX, what, &o, e);
    if (rc < 0) return rc;
    const char *kind, *host;
    uint64_t started, finished, v[4];
    const char *fields[4] = {"packs_deleted", "bytes_freed", "packs_pending", "check_errors"};
    if ((rc = jsonf_string(o, "kind", 16, what, &kind, e)) < 0 ||
        (rc = jsonf_uint(o, "started", 0, INT64_MAX, what, &started, e)) < 0 ||
        (rc = jsonf_uint(o, "finished", 0, INT64_MAX, what, &finished, e)) < 0 ||
        (rc = jsonf_string(o, "hostname", sizeof m->hostname - 1, what, &host, e)) < 0)
        goto out;
    for (int i = 0; i < 4 && rc == 0; i++)
        rc = jsonf_uint(o, fields[i], 0, INT64_MAX, what, &v[i], e);
    if (rc < 0) goto out;
    const json_t *ok = json_object_get(o, "ok");
    if (!json_is_boolean(ok)) {
        rc = err_set(e, ERR_FAIL, "%s: field \"ok\" is not a boolean", what);
        goto out;
    }
    if (strcmp(kind, "quick") == 0)
        m->kind = MAINT_QUICK;
    else if (strcmp(kind, "full") == 0)
        m->kind = MAINT_FULL;
    else {
        rc = err_set(e, ERR_FAIL, "%s: unknown kind \"%s\"", what, kind);
        goto out;
    }
    m->ok = json_is_true(ok);
    m->started = (int64_t)started;
    m->finished = (int64_t)finished;
    snprintf(m->hostname, sizeof m->hostname, "%s", host);
    const char *err = json_string_value(json_object_get(o, "error"));
    copy_utf8(m->error, sizeof m->error, err ? err : "");
    m->packs_deleted = v[0];
    m->bytes_freed = v[1];
    m->packs_pending = v[2];
    m->check_errors = v[3];
out:
    json_decref(o);
    return rc;
}

static int cmp_newest(const void *pa, const void *pb)
{
    const struct maint_record *a = pa, *b = pb;
    if (a->finished != b->finished) return a->finished > b->finished ? -1 : 1;
    return oid_cmp(&a->id, &b->id);
}

int maint_state_load(struct repo *r, struct maint_state *st, struct maint_record **records,
                     size_t *n, struct err *e)
{
    memset(st, 0, sizeof *st);
    if (records) *records = NULL;
    if (n) *n = 0;
    struct oid *ids = NULL;
    size_t n_ids = 0;
    int rc = repo_list_ids(r, MAINT_DIR, &ids, &n_ids, e);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0) return err_wrap(e, "listing maintenance records");
    struct maint_record *list = calloc(n_ids ? n_ids : 1, sizeof *list);
    if (!list) {
        free(ids);
        return err_set(e, ERR_FAIL, "maintenance records: out of memory");
    }
    struct buf plain = BUF_INIT;
    size_t k = 0;
    for (size_t i = 0; i < n_ids; i++) {
        struct err le;
        buf_reset(&plain);
        /* A record removed meanwhile, or unreadable, just does not count. */
        if (repo_load_file(r, MAINT_DIR, MAINT_KIND_FILE, &ids[i], &plain, &le) < 0 ||
            maint_record_decode(plain.data, plain.len, &list[k], &le) < 0)
            continue;
        list[k].id = ids[i];
        k++;
    }
    buf_free(&plain);
    free(ids);
    if (k) qsort(list, k, sizeof *list, cmp_newest);
    for (size_t i = 0; i < k; i++) {
        if (!list[i].ok) continue;
        if (list[i].finished > st->last_quick) st->last_quick = list[i].finished;
        if (list[i].kind == MAINT_FULL && list[i].finished > st->last_full)
            st->last_full = list[i].finished;
    }
    st->n_records = k;
    if (records) {
        *records = list;
        *n = k;
    } else {
        free(list);
    }
    return 0;
}

static uint32_t every(uint32_t v, uint32_t def)
{
    return v ? v : def;
}

enum maint_kind maint_due(const struct maint_state *st, int64_t now, const struct maint_options *o)
{
    bool full_due = now - st->last_full >= (int64_t)every(o->full_every, MAINT_FULL_EVERY);
    bool quick_due = now - st->last_quick >= (int64_t)every(o->quick_every, MAINT_QUICK_EVERY);
    switch (o->want) {
    case MAINT_FULL:
        return o->force || full_due ? MAINT_FULL : MAINT_NONE;
    case MAINT_QUICK:
        return o->force || quick_due ? MAINT_QUICK : MAINT_NONE;
    default:
        if (o->force || full_due) return MAINT_FULL;
        return quick_due ? MAINT_QUICK : MAINT_NONE;
    }
}

void maint_options_default(struct maint_options *o)
{
    memset(o, 0, sizeof *o);
    prune_options_default(&o->prune);
}

/* Stores the record, then removes all but the newest MAINT_KEEP. */
static int record_save(struct repo *r, struct maint_record *m, struct err *e)
{
    struct buf json = BUF_INIT;
    int rc = maint_record_encode(m, &json, e);
    if (rc == 0) rc = repo_save_file(r, MAINT_DIR, MAINT_KIND_FILE, json.data, json.len, &m->id, e);
    buf_free(&json);
    if (rc < 0) return err_wrap(e, "recording the maintenance run");
    struct maint_state st;
    struct maint_record *list;
    size_t n;
    if (maint_state_load(r, &st, &list, &n, e) < 0) return 0; /* old records are only clutter */
    char name[128], hex[OID_HEX_LEN + 1];
    for (size_t i = MAINT_KEEP; i < n; i++) {
        struct err ignored;
        snprintf(name, sizeof name, MAINT_DIR "/%s", oid_hex(&list[i].id, hex));
        backend_remove(repo_backend(r), name, &ignored);
    }
    free(list);
    return 0;
}

int maint_run(struct repo *r, struct lock *lk, const struct maint_options *o,
              struct maint_result *res, struct err *e)
{
    memset(res, 0, sizeof *res);
    int rc = maint_state_load(r, &res->before, NULL, NULL, e);
    if (rc < 0) return rc;
    int64_t now = (int64_t)time(NULL);
    res->ran = maint_due(&res->before, now, o);
    struct maint_record m;
    memset(&m, 0, sizeof m);
    m.kind = res->ran;
    m.started = now;
    if (gethostname(m.hostname, sizeof m.hostname) < 0)
        snprintf(m.hostname, sizeof m.hostname, "?");
    m.hostname[sizeof m.hostname - 1] = '\0';

    if (res->ran != MAINT_NONE) {
        struct prune_options po = o->prune;
        po.quick = res->ran == MAINT_QUICK;
        po.dry_run = o->dry_run;
        rc = prune_run(r, lk, &po, &res->prune, e);
        if (rc == 0 && res->ran == MAINT_FULL && !o->dry_run) {
            struct check_options co = o->check;
            if (!co.cancel) co.cancel = lock_stop_flag(lk);
            if (!co.max_memory) co.max_memory = o->prune.max_memory;
            rc = check_run(r, &co, &res->check, e);
            res->checked = rc == 0;
            if (rc == 0 && res->check.errors)
                rc = err_set(e, ERR_FAIL, "check found %llu errors",
                             (unsigned long long)res->check.errors);
        }
        m.finished = (int64_t)time(NULL);
        m.ok = rc == 0;
        if (rc < 0) copy_utf8(m.error, sizeof m.error, e->msg);
        m.packs_deleted = res->prune.packs_deleted;
        m.bytes_freed = res->prune.bytes_freed;
        m.packs_pending = res->prune.packs_pending;
        m.check_errors = res->check.errors;
        if (!o->dry_run && rc != ERR_CANCELED) {
            struct err re;
            int src = record_save(r, &m, rc == 0 ? e : &re);
            if (rc == 0) rc = src;
        }
    }
    struct maint_state after = res->before;
    if (rc == 0 && res->ran != MAINT_NONE && !o->dry_run) {
        after.last_quick = m.finished;
        if (res->ran == MAINT_FULL) after.last_full = m.finished;
    }
    res->next_quick = after.last_quick + every(o->quick_every, MAINT_QUICK_EVERY);
    res->next_full = after.last_full + every(o->full_every, MAINT_FULL_EVERY);
    if (res->next_quick < now) res->next_quick = now;
    if (res->next_full < now) res->next_full = now;
    return rc;
}
