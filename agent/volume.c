/* volume.c - finding a pod volume's directory under the kubelet pods directory; see volume.h. */
#include "agent/volume.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/k8s.h"

const json_t *volume_entry(const json_t *pod, const char *volume)
{
    size_t i;
    json_t *v;
    json_array_foreach(k8s_at(pod, "spec.volumes"), i, v)
    {
        const char *n = k8s_str(v, "name");
        if (n && strcmp(n, volume) == 0) return v;
    }
    return NULL;
}

const char *volume_claim(const json_t *entry)
{
    return k8s_str(entry, "persistentVolumeClaim.claimName");
}

static const char *annotation(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(k8s_at(obj, "metadata.annotations"), key));
}

bool volume_pv_names_driver(const json_t *pv)
{
    return annotation(pv, "pv.kubernetes.io/provisioned-by") ||
           annotation(pv, "pv.kubernetes.io/migrated-to");
}

static bool driver_exists(const json_t *drivers, const char *name)
{
    size_t i;
    json_t *d;
    if (!name || !*name) return false;
    json_array_foreach(json_object_get(drivers, "items"), i, d)
    {
        const char *n = k8s_str(d, "metadata.name");
        if (n && strcmp(n, name) == 0) return true;
    }
    return false;
}

static int dup_dir(char **dir, const char *name, bool csi, struct err *e)
{
    size_t n = strlen(name) + 7;
    *dir = malloc(n);
    if (!*dir) return err_set(e, ERR_FAIL, "out of memory");
    snprintf(*dir, n, "%s%s", name, csi ? "/mount" : "");
    return 0;
}

int volume_dir(const json_t *entry, const json_t *pv, const json_t *drivers, char **dir,
               struct err *e)
{
    const char *name = k8s_str(entry, "name");
    if (!name) return err_set(e, ERR_FAIL, "the pod's volume entry has no name");
    if (!volume_claim(entry)) return dup_dir(dir, name, json_object_get(entry, "csi"), e);
    const char *pv_name = k8s_str(pv, "metadata.name");
    if (!pv_name)
        return err_set(e, ERR_FAIL, "PVC %s is not bound to a PersistentVolume",
                       volume_claim(entry));
    const char *mode = k8s_str(pv, "spec.volumeMode");
    if (mode && strcmp(mode, "Block") == 0)
        return err_set(e, ERR_FAIL,
                       "PersistentVolume %s is a block volume: only file-system volumes can be "
                       "backed up file by file",
                       pv_name);
    bool csi = k8s_at(pv, "spec.csi") ||
               driver_exists(drivers, annotation(pv, "pv.kubernetes.io/provisioned-by")) ||
               driver_exists(drivers, annotation(pv, "pv.kubernetes.io/migrated-to"));
    return dup_dir(dir, pv_name, csi, e);
}

/* A name from the API that becomes a path component: not empty, ".", "..", nor holding '/'. */
static bool safe_component(const char *s, size_t n)
{
    return n > 0 && !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.') &&
           !memchr(s, '/', n);
}

int volume_find(const char *host_pods, const char *pod_uid, const char *dir, char **path,
                struct err *e)
{
    char base[PATH_MAX], cand[PATH_MAX], found[PATH_MAX];
    const char *slash = strchr(dir, '/');
    bool dir_ok = slash ? safe_component(dir, (size_t)(slash - dir)) && strcmp(slash, "/mount") == 0
                        : safe_component(dir, strlen(dir));
    if (!safe_component(pod_uid, strlen(pod_uid)) || !dir_ok)
        return err_set(e, ERR_FAIL, "refusing pod UID \"%s\" or volume directory \"%s\" as a path",
                       pod_uid, dir);
    snprintf(base, sizeof base, "%s/%s/volumes", host_pods, pod_uid);
    unsigned n = 0;
    DIR *d = opendir(base);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') continue;
            struct stat st;
            if (snprintf(cand, sizeof cand, "%s/%s/%s", base, de->d_name, dir) >= (int)sizeof cand)
                continue;
            if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (n++ == 0) snprintf(found, sizeof found, "%s", cand);
            }
        }
        closedir(d);
    } else if (errno != ENOENT && errno != ENOTDIR) {
        return err_sys(e, errno, "reading %s", base);
    }
    if (n != 1)
        return err_set(e, n == 0 ? ERR_NOT_FOUND : ERR_FAIL,
                       "expected one matching path: %s/*/%s, got %u (is the kubelet pods "
                       "directory mounted at %s with HostToContainer propagation?)",
                       base, dir, n, host_pods);
    *path = strdup(found);
    return *path ? 0 : err_set(e, ERR_FAIL, "out of memory");
}

int volume_is_empty(const char *path, bool *empty, struct err *e)
{
    DIR *d = opendir(path);
    if (!d) return err_sys(e, errno, "opening volume directory %s", path);
    struct dirent *de;
    *empty = true;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
            *empty = false;
            break;
        }
    }
    closedir(d);
    return 0;
}
