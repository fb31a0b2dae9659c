/* opsdb schema, opsdb config and opsdb version: what this build knows about itself. */
#include "cli/cli.h"
#include "store/store.h"

#include <stdio.h>
#include <string.h>

static int simple_flags(const char *name, int argc, char **argv, const char *const *allowed,
                        const char **chosen)
{
    struct cli_common c = {0};
    for (int i = 1; i < argc; i++) {
        int rc = cli_common_flag(&c, argc, argv, &i);
        if (rc < 0)
            return 2;
        if (rc == 1)
            continue;
        bool ok = false;
        for (int k = 0; allowed && allowed[k]; k++)
            if (strcmp(argv[i], allowed[k]) == 0) {
                *chosen = allowed[k];
                ok = true;
            }
        if (!ok) {
            return cli_usage(cli_command(name), "unexpected argument '%s'", argv[i]);
        }
    }
    return c.help ? -1 : 0;
}

int cmd_schema(int argc, char **argv)
{
    static const char *const flags[] = {"--markdown", NULL};
    const char *chosen = NULL;
    int rc = simple_flags("schema", argc, argv, flags, &chosen);
    if (rc)
        return rc < 0 ? cli_help("schema") : rc;
    struct buf out;
    buf_init(&out, 1 << 22);
    if (chosen) {
        schema_markdown(&out);
    } else {
        size_t n;
        const struct table *t = schema_tables(&n);
        buf_printf(&out, "schema version %d\n", schema_version());
        for (size_t i = 0; i < n; i++) {
            buf_printf(&out, "%s:", t[i].name);
            for (size_t c = 0; c < t[i].ncolumns; c++)
                buf_printf(&out, " %s%s", t[i].columns[c].name,
                           t[i].columns[c].required ? "*" : "");
            buf_printf(&out, "\n");
        }
        buf_printf(&out, "(* required; 'opsdb schema --markdown' for the full reference)\n");
    }
    cli_write(&out);
    buf_release(&out);
    return 0;
}

int cmd_config(int argc, char **argv)
{
    static const char *const flags[] = {"--markdown", NULL};
    const char *chosen = NULL;
    int rc = simple_flags("config", argc, argv, flags, &chosen);
    if (rc)
        return rc < 0 ? cli_help("config") : rc;
    struct buf out;
    buf_init(&out, 1 << 20);
    config_markdown(&out);
    cli_write(&out);
    buf_release(&out);
    return 0;
}

int cmd_version(int argc, char **argv)
{
    const char *chosen = NULL;
    int rc = simple_flags("version", argc, argv, NULL, &chosen);
    if (rc)
        return rc < 0 ? cli_help("version") : rc;
    printf("opsdb %s (schema version %d)\n", OPSDB_VERSION, schema_version());
    return 0;
}
