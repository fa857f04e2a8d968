/* progress.c - the live progress line on a terminal and JSON status lines. */
#include "cli/progress.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "base/contract.h"
#include "cli/format.h"

void progress_init(struct progress *p, bool json, int verbosity)
{
    memset(p, 0, sizeof *p);
    pthread_mutex_init(&p->lock, NULL);
    p->json = json;
    p->quiet = verbosity == 0;
    p->tty = !json && !p->quiet && isatty(STDERR_FILENO);
    p->last = -1;
    struct winsize ws;
    p->width = 80;
    if (p->tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
        p->width = ws.ws_col;
}

void progress_destroy(struct progress *p)
{
    pthread_mutex_destroy(&p->lock);
}

static void clear_line(struct progress *p)
{
    if (!p->line_shown) return;
    fputs("\r\033[K", stderr);
    p->line_shown = false;
}

static void print_json(const struct progress_figures *f)
{
    double pct = 0;
    if (f->bytes_total)
        pct = (double)f->bytes_done / (double)f->bytes_total;
    else if (f->files_total)
        pct = (double)f->files_done / (double)f->files_total;
    if (pct > 1) pct = 1;
    json_t *o = json_object();
    fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_STATUS));
    fmt_json_set(o, "seconds_elapsed", json_real(f->elapsed));
    fmt_json_set(o, "percent_done", json_real(pct));
    fmt_json_set(o, "total_files", json_integer((json_int_t)f->files_total));
    fmt_json_set(o, "files_done", json_integer((json_int_t)f->files_done));
    fmt_json_set(o, "total_bytes", json_integer((json_int_t)f->bytes_total));
    fmt_json_set(o, "bytes_done", json_integer((json_int_t)f->bytes_done));
    if (f->has_bytes_new) fmt_json_set(o, "bytes_new", json_integer((json_int_t)f->bytes_new));
    fmt_json_set(o, "errors", json_integer((json_int_t)f->errors));
    fmt_json_print(o, false);
}

static void print_line(struct progress *p, const struct progress_figures *f)
{
    char el[32], done[32], total[32], rate[32], eta[32], line[256];
    double bps = f->elapsed > 0 ? (double)f->bytes_done / f->elapsed : 0;
    int n = snprintf(line, sizeof line, "[%s] %llu/%llu%s files, %s/%s%s, %s/s",
                     fmt_duration(f->elapsed, el), (unsigned long long)f->files_done,
                     (unsigned long long)f->files_total, f->totals_final ? "" : "+",
                     fmt_bytes(f->bytes_done, done), fmt_bytes(f->bytes_total, total),
                     f->totals_final ? "" : "+", fmt_bytes((uint64_t)bps, rate));
    if (n > 0 && (size_t)n < sizeof line && f->totals_final && bps > 0 &&
        f->bytes_total > f->bytes_done)
        n += snprintf(line + n, sizeof line - (size_t)n, ", ETA %s",
                      fmt_duration((double)(f->bytes_total - f->bytes_done) / bps, eta));
    if (n > 0 && (size_t)n < sizeof line && f->errors)
        snprintf(line + n, sizeof line - (size_t)n, ", %llu errors", (unsigned long long)f->errors);
    /* One column short of the width, so the terminal never wraps the line. */
    size_t max = p->width - 1 < sizeof line - 1 ? p->width - 1 : sizeof line - 1;
    line[max] = '\0';
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    p->line_shown = true;
}

void progress_update(struct progress *p, const struct progress_figures *f)
{
    if (p->quiet || (!p->json && !p->tty)) return;
    pthread_mutex_lock(&p->lock);
    double every = p->json ? 0.5 : 0.25;
    if (p->last < 0 || f->elapsed - p->last >= every) {
        p->last = f->elapsed;
        if (p->json)
            print_json(f);
        else
            print_line(p, f);
    }
    pthread_mutex_unlock(&p->lock);
}

void progress_error(struct progress *p, const char *path, const char *msg)
{
    pthread_mutex_lock(&p->lock);
    if (p->json) {
        json_t *o = json_object();
        fmt_json_set(o, PV_MSG_KEY, json_string(PV_MSG_ERROR));
        fmt_json_set(o, "path", fmt_json_str(path));
        fmt_json_set(o, "error", fmt_json_str(msg));
        fmt_json_print(o, false);
    } else {
        clear_line(p);
        fputs("podvault: ", stderr);
        if (path) {
            fmt_put_escaped(stderr, path, strlen(path));
            fputs(": ", stderr);
        }
        fmt_put_escaped(stderr, msg, strlen(msg));
        fputc('\n', stderr);
        fflush(stderr);
    }
    pthread_mutex_unlock(&p->lock);
}

void progress_finish(struct progress *p)
{
    pthread_mutex_lock(&p->lock);
    clear_line(p);
    fflush(stderr);
    pthread_mutex_unlock(&p->lock);
}
