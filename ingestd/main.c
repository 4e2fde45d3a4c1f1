/* ingestd: command line → configuration → ingest_daemon_run(). */
#include "control/control.h"
#include "ingestd.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SETS 256

static void usage(FILE *out)
{
    fprintf(out, "usage: ingestd [--config FILE] [--data-dir DIR] [--set KEY=VALUE]...\n"
                 "               [--check-config | --print-config | --print-routes]\n"
                 "\n"
                 "Custos ingest daemon. Settings are applied in order: defaults, FILE,\n"
                 "--data-dir, then each --set. --print-config lists every setting.\n"
                 "\n"
                 "  -c, --config FILE     read settings from an INI file\n"
                 "  -d, --data-dir DIR    data directory (default ./var)\n"
                 "  -s, --set KEY=VALUE   override one setting (repeatable)\n"
                 "      --check-config    validate the settings and exit\n"
                 "      --print-config    print the effective settings and exit\n"
                 "      --print-routes    print the API's routes (method, path, session) and exit\n"
                 "  -h, --help            this text\n"
                 "  -V, --version         print the version\n");
}

int main(int argc, char **argv)
{
    enum { OPT_CHECK = 256, OPT_PRINT, OPT_ROUTES };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"data-dir", required_argument, NULL, 'd'},
        {"set", required_argument, NULL, 's'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"print-config", no_argument, NULL, OPT_PRINT},
        {"print-routes", no_argument, NULL, OPT_ROUTES},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_file = NULL, *data_dir = NULL;
    char *sets[MAX_SETS];
    size_t nsets = 0;
    bool check = false, print = false;
    cu_config cfg;
    cu_err err;
    int status = 1;
    int opt;

    opterr = 0; /* one line of our own instead of getopt's */
    while ((opt = getopt_long(argc, argv, "c:d:s:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_file = optarg; break;
        case 'd': data_dir = optarg; break;
        case 's':
            if (nsets == MAX_SETS) {
                fprintf(stderr, "ingestd: more than %d --set options\n", MAX_SETS);
                return 2;
            }
            sets[nsets++] = optarg;
            break;
        case OPT_CHECK: check = true; break;
        case OPT_PRINT: print = true; break;
        case OPT_ROUTES: ctl_api_print_routes(stdout); return 0;
        case 'h': usage(stdout); return 0;
        case 'V': printf("ingestd (Custos) %s\n", CUSTOS_VERSION); return 0;
        default:
            fprintf(stderr, "ingestd: bad option '%s' (try ingestd --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ingestd: unexpected argument '%s' (try ingestd --help)\n", argv[optind]);
        return 2;
    }

    if (cu_config_load(&cfg, config_file, data_dir, sets, nsets, &err) != CU_OK) {
        fprintf(stderr, "ingestd: %s\n", err.msg);
        status = 2;
        goto out;
    }
    if (print) {
        cu_config_print(&cfg, stdout);
        status = 0;
        goto out;
    }
    if (check) {
        printf("ingestd: configuration OK\n");
        status = 0;
        goto out;
    }

    atomic_store(&cu_log_threshold, cfg.log_level);
    if (cu_log_open("ingestd", cfg.log_file, &err) != CU_OK) {
        fprintf(stderr, "ingestd: %s\n", err.msg);
        goto out;
    }
    if (ingest_daemon_run(&cfg, &err) != CU_OK) {
        CU_LOG(CU_LOG_ERROR, "ingestd", "%s", err.msg);
        /* The one line an operator needs, also on stderr when logging to a file. */
        if (cfg.log_file[0])
            fprintf(stderr, "ingestd: %s\n", err.msg);
        goto out;
    }
    status = 0;
out:
    cu_log_close();
    cu_config_free(&cfg);
    return status;
}
