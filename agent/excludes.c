/* excludes.c - exclude patterns from a pod's podvault.io/backup-excludes; see excludes.h. */
#include "agent/excludes.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_dns_label(const char *s, size_t n)
{
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-') return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

/* Why `p` (n bytes) is not a usable pattern, or NULL. */
static const char *pattern_problem(const char *p, size_t n)
{
    if (n == 0 || (n == 1 && p[0] == '/')) return "the pattern is empty";
    if (memchr(p, '\0', n)) return "the pattern holds a NUL";
    bool open = false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\') {
            if (++i == n) return "the pattern ends in a lone '\\'";
        } else if (p[i] == '[') {
            open = true;
        } else if (p[i] == ']') {
            open = false;
        }
    }
    if (open) return "the pattern has a '[' without its ']'";
    size_t start = p[0] == '/' ? 1 : 0;
    for (size_t i = start; i <= n; i++) { /* components between '/' */
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        if (j == i && j < n) return "the pattern has an empty component ('//')";
        if (j - i == 2 && p[i] == '.' && p[i + 1] == '.')
            return "the pattern has a '..' component (patterns stay inside the volume)";
        if (j - i == 1 && p[i] == '.') return "the pattern has a '.' component";
        i = j;
    }
    if (p[n - 1] == '/') return "the pattern ends in '/' (name the folder without it)";
    return NULL;
}

/* "--exclude" and the pattern; one with '/' under `root`, whose glob characters are escaped. */
static int add_pattern(struct asys_strv *args, const char *root, const char *p, size_t n)
{
    if (!memchr(p, '/', n))
        return asys_sv_add(args, "--exclude") | asys_sv_addf(args, "%.*s", (int)n, p);
    size_t rl = strlen(root);
    char *out = malloc(2 * rl + n + 2), *o = out;
    if (!out) return -1;
    for (size_t i = 0; i < rl; i++) {
        if (strchr("*?[]\\", root[i])) *o++ = '\\';
        *o++ = root[i];
    }
    if (p[0] != '/') *o++ = '/';
    memcpy(o, p, n);
    o[n] = '\0';
    int rc = asys_sv_add(args, "--exclude") | asys_sv_add(args, out);
    free(out);
    return rc;
}

int exc_args(const char *value, const char *volume, const char *root, struct asys_strv *args,
             struct err *e)
{
    if (!value) return 0;
    const char *s = value;
    for (int item = 1;; item++) {
        const char *end = strchr(s, ',');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        while (n && (*s == ' ' || *s == '\t' || *s == '\n'))
            s++, n--;
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n'))
            n--;
        const char *colon = memchr(s, ':', n), *why = NULL;
        size_t vn = colon ? (size_t)(colon - s) : 0;
        if (n == 0 && !end && item == 1) return 0; /* an empty annotation */
        if (!colon)
            why = "it is not VOLUME:PATTERN";
        else if (!is_dns_label(s, vn))
            why = "the volume name is not a DNS label (lower-case letters, digits and '-')";
        else
            why = pattern_problem(colon + 1, n - vn - 1);
        if (why)
            return err_set(e, ERR_FAIL, "annotation %s, item %d \"%.*s\": %s", EXC_ANNOTATION, item,
                           (int)(n > 200 ? 200 : n), s, why);
        if (strlen(volume) == vn && strncmp(s, volume, vn) == 0 &&
            add_pattern(args, root, colon + 1, n - vn - 1) < 0)
            return err_set(e, ERR_FAIL, "out of memory");
        if (!end) return 0;
        s = end + 1;
    }
}

int exc_args_for_pvb(struct k8s_client *k, const json_t *spec, const char *root,
                     struct asys_strv *args, struct err *e)
{
    const char *ns = k8s_str(spec, "pod.namespace"), *name = k8s_str(spec, "pod.name");
    char *path = k8s_path(&K8S_PODS, ns, name, NULL);
    if (!path) return err_set(e, ERR_FAIL, "out of memory");
    json_t *pod = NULL;
    int rc = k8s_get(k, path, &pod, e);
    free(path);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc < 0) return err_wrap(e, "reading pod %s/%s for its %s", ns, name, EXC_ANNOTATION);
    const char *value =
        json_string_value(json_object_get(k8s_at(pod, "metadata.annotations"), EXC_ANNOTATION));
    rc = exc_args(value, k8s_str(spec, "volume") ?: "", root, args, e);
    if (rc < 0) err_wrap(e, "pod %s/%s", ns, name);
    json_decref(pod);
    return rc;
}
