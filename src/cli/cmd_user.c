/* opsdb user: the users of the HTTP API, their roles and passwords, written to the database
 * (--db). A password comes from standard input only, never from the command line, where ps and
 * the shell's history would show it. */
#include "auth/auth.h"
#include "cli/cli.h"
#include "query/query.h"
#include "store/store.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#define PASSWORD_BUF (AUTH_PASSWORD_MAX + 2) /* the longest password, its newline, its NUL */

/* One line of stdin into out without its line end; a terminal does not echo it. */
static int read_line(const char *prompt, char out[PASSWORD_BUF])
{
    bool tty = isatty(STDIN_FILENO);
    struct termios saved, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &saved) == 0) {
        quiet = saved;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fprintf(stderr, "%s", prompt);
    }
    bool got = fgets(out, PASSWORD_BUF, stdin) != NULL;
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
        fprintf(stderr, "\n");
    }
    size_t len = got ? strcspn(out, "\r\n") : 0;
    if (!got || (len == 0 && out[0] != '\n' && out[0] != '\r'))
        return cli_fail("no password on standard input (e.g. printf '%%s\\n' \"$PW\" | opsdb "
                        "user ... --password-stdin)");
    if (out[len] == '\0' && len == PASSWORD_BUF - 1)
        return cli_fail("the password on standard input is longer than %d bytes",
                        AUTH_PASSWORD_MAX);
    out[len] = '\0';
    return 0;
}

/* The password from stdin; a terminal is asked twice. */
static int read_password(const char *name, char out[PASSWORD_BUF])
{
    char prompt[128], again[PASSWORD_BUF];
    snprintf(prompt, sizeof prompt, "password for %s: ", name);
    int rc = read_line(prompt, out);
    if (rc == 0 && isatty(STDIN_FILENO)) {
        rc = read_line("the same password again: ", again);
        if (rc == 0 && strcmp(out, again) != 0)
            rc = cli_fail("the two passwords differ; nothing was changed");
        sodium_memzero(again, sizeof again);
    }
    return rc;
}

/* add, disable, enable, passwd: one change with its audit row. password: NULL (none, or for
 * passwd: remove it). */
static int change(struct cli_common *c, const char *sub, const char *name, const char *role,
                  const char *password)
{
    struct config cfg;
    struct store *s;
    char actor[128];
    struct auth_actor by;
    struct auth_target t;
    int rc = cli_open_admin(c, &cfg, STORE_READWRITE, &s, actor, sizeof actor, &by, &t);
    if (rc)
        return rc;
    struct err e;
    if (strcmp(sub, "add") == 0)
        rc = auth_user_add_with_password(&t, &by, name, role, password, &e);
    else if (strcmp(sub, "passwd") == 0)
        rc = auth_user_set_password(&t, &by, name, password, &e);
    else
        rc = auth_user_set_disabled(&t, &by, name, strcmp(sub, "disable") == 0, &e);
    if (rc == 0 && strcmp(sub, "add") == 0)
        printf("user %s added with role %s%s; create a token with: opsdb token create %s\n", name,
               role, password ? " and a password" : "", name);
    else if (rc == 0 && strcmp(sub, "passwd") == 0)
        printf("password of %s %s; its sessions opened with the old one have ended\n", name,
               password ? "set" : "removed");
    else if (rc == 0)
        printf("user %s %sd\n", name, sub);
    store_close(&s);
    return rc ? cli_fail("%s", e.msg) : 0;
}

static int users(struct store *s, const char *arg, struct store_result *res, struct err *e)
{
    (void)arg;
    return auth_user_list(s, res, e);
}

/* Takes the flags without a value out of argv: --password-stdin and --remove. */
static int switches(const struct command *cmd, int *argc, char **argv, bool *password_stdin,
                    bool *remove)
{
    int kept = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--password-stdin") == 0)
            *password_stdin = true;
        else if (strcmp(argv[i], "--remove") == 0)
            *remove = true;
        else if (strncmp(argv[i], "--password", 10) == 0 && (!argv[i][10] || argv[i][10] == '='))
            return cli_usage(cmd, "a password is never given on the command line (ps and the "
                                  "shell's history would show it): use --password-stdin");
        else
            argv[kept++] = argv[i];
    }
    *argc = kept;
    return 0;
}

/* add with --password-stdin and passwd: the password read, then the change. */
static int with_password(struct cli_common *c, const char *sub, const char *name, const char *role)
{
    char password[PASSWORD_BUF];
    int rc = read_password(name, password);
    if (rc == 0)
        rc = change(c, sub, name, role, password);
    sodium_memzero(password, sizeof password);
    return rc;
}

int cmd_user(int argc, char **argv)
{
    const struct command *cmd = cli_command("user");
    struct cli_common c = {0};
    const char *role = NULL, *format = "table";
    const struct cli_flag flags[] = {{"--role", &role}, {"--format", &format}};
    char *args[2];
    int nargs;
    bool password_stdin = false, remove = false;
    int rc = switches(cmd, &argc, argv, &password_stdin, &remove);
    if (rc == 0)
        rc = cli_parse(cmd, &c, flags, 2, argc, argv, args, 2, &nargs);
    if (rc)
        return rc;
    if (c.help)
        return cli_help("user");
    int fmt = query_format_parse(format);
    if (fmt < 0)
        return cli_usage(cmd, "--format must be table, json or csv");
    const char *sub = nargs ? args[0] : "";
    bool add = strcmp(sub, "add") == 0, passwd = strcmp(sub, "passwd") == 0;
    if ((password_stdin && !add && !passwd) || (remove && !passwd))
        return cli_usage(cmd, "%s goes with %s only", remove ? "--remove" : "--password-stdin",
                         remove ? "user passwd" : "user add and user passwd");
    if (strcmp(sub, "list") == 0 && nargs == 1)
        return cli_list(&c, users, NULL, fmt);
    if (add && nargs == 2 && !role)
        return cli_usage(cmd, "user add %s needs --role admin|writer|reader", args[1]);
    if (passwd && nargs == 2 && remove)
        return change(&c, sub, args[1], NULL, NULL);
    if ((add && password_stdin) || passwd)
        return nargs == 2 ? with_password(&c, sub, args[1], role)
                          : cli_usage(cmd, "user %s needs a user NAME", sub);
    if ((add || strcmp(sub, "disable") == 0 || strcmp(sub, "enable") == 0) && nargs == 2)
        return change(&c, sub, args[1], role, NULL);
    return cli_usage(cmd, "expected add NAME --role ROLE [--password-stdin], passwd NAME "
                          "[--remove], list, disable NAME or enable NAME");
}
