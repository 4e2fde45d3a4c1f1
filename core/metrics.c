/* Metrics registry and the Prometheus text exposition format. */
#include "core.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written only by constructors before main(), read-only afterwards. */
static cu_metric *registry;

void cu_metric_register(cu_metric *m)
{
    for (cu_metric *it = registry; it; it = it->next)
        if (it == m)
            return;
    /* Append, so the output follows definition order. */
    m->next = NULL;
    cu_metric **tail = &registry;
    while (*tail)
        tail = &(*tail)->next;
    *tail = m;
}

static bool family_emitted_before(const cu_metric *m)
{
    for (const cu_metric *it = registry; it != m; it = it->next)
        if (strcmp(it->name, m->name) == 0)
            return true;
    return false;
}

static cu_rc render_series(cu_buf *out, const cu_metric *m)
{
    int64_t v = atomic_load_explicit(&m->value, memory_order_relaxed);
    if (m->labels && m->labels[0])
        return cu_buf_printf(out, "%s{%s} %lld\n", m->name, m->labels, (long long)v);
    return cu_buf_printf(out, "%s %lld\n", m->name, (long long)v);
}

/* process_* metrics as the Prometheus client libraries define them. */
static cu_rc render_process(cu_buf *out)
{
    cu_rc rc = CU_OK;
    long ticks = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    double cpu_s = 0, start_s = 0;
    long long rss_pages = 0;
    int fds = 0;

    FILE *f = fopen("/proc/self/stat", "re");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        /* Fields after the command name, which may contain spaces. */
        char *p = strrchr(buf, ')');
        unsigned long long utime = 0, stime = 0, starttime = 0;
        if (p &&
            sscanf(p + 2,
                   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                   "%*d %*d %llu",
                   &utime, &stime, &starttime) == 3 &&
            ticks > 0) {
            cpu_s = (double)(utime + stime) / (double)ticks;
            double boot = 0;
            FILE *s = fopen("/proc/stat", "re");
            if (s) {
                char line[256];
                while (fgets(line, sizeof(line), s))
                    if (sscanf(line, "btime %lf", &boot) == 1)
                        break;
                fclose(s);
            }
            start_s = boot + (double)starttime / (double)ticks;
        }
    }
    f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%*s %lld", &rss_pages) != 1)
            rss_pages = 0;
        fclose(f);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (de->d_name[0] != '.')
                fds++;
        closedir(d);
        fds--; /* the descriptor opendir() itself holds */
    }
    rc = cu_buf_printf(out,
                       "# HELP process_cpu_seconds_total Total user and system CPU time spent "
                       "in seconds.\n# TYPE process_cpu_seconds_total counter\n"
                       "process_cpu_seconds_total %.2f\n"
                       "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                       "# TYPE process_resident_memory_bytes gauge\n"
                       "process_resident_memory_bytes %lld\n"
                       "# HELP process_open_fds Number of open file descriptors.\n"
                       "# TYPE process_open_fds gauge\nprocess_open_fds %d\n"
                       "# HELP process_start_time_seconds Start time of the process since unix "
                       "epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
                       "process_start_time_seconds %.2f\n",
                       cpu_s, rss_pages * (long long)page, fds, start_s);
    return rc;
}

cu_rc cu_metrics_render(cu_buf *out)
{
    cu_rc rc = cu_buf_printf(out,
                             "# HELP custos_build_info Custos version of this process.\n"
                             "# TYPE custos_build_info gauge\n"
                             "custos_build_info{version=\"%s\"} 1\n",
                             CUSTOS_VERSION);
    for (const cu_metric *m = registry; m && rc == CU_OK; m = m->next) {
        if (family_emitted_before(m))
            continue;
        rc = cu_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
                           m->type == CU_METRIC_COUNTER ? "counter" : "gauge");
        for (const cu_metric *s = m; s && rc == CU_OK; s = s->next)
            if (strcmp(s->name, m->name) == 0)
                rc = render_series(out, s);
    }
    if (rc == CU_OK)
        rc = render_process(out);
    return rc;
}
