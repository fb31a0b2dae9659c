/*
 * A command job's process (command.h). The child gets its own process group so that a timeout
 * stops what it started too (a shell pipeline, a script's children); its output goes through a
 * pipe into a ring of the last bytes, so a chatty job cannot fill memory.
 */
#include "jobs/command.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KILL_GRACE_MS 5000 /* after SIGTERM, SIGKILL */
#define ENV_MAX 256

extern char **environ;

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The last cap bytes written, in a ring. */
struct tail {
    char *buf;
    size_t cap, start, len, dropped;
};

static void tail_put(struct tail *t, const char *data, size_t n)
{
    for (size_t i = 0; i < n && t->cap; i++) {
        if (t->len == t->cap) {
            t->start = (t->start + 1) % t->cap;
            t->len--;
            t->dropped++;
        }
        t->buf[(t->start + t->len++) % t->cap] = data[i];
    }
    if (!t->cap)
        t->dropped += n;
}

static char *tail_text(const struct tail *t, size_t *len)
{
    char *s = malloc(t->len + 1);
    if (!s)
        return NULL;
    for (size_t i = 0; i < t->len; i++)
        s[i] = t->buf[(t->start + i) % t->cap];
    s[t->len] = '\0';
    *len = t->len;
    return s;
}

/* The environment of the child: ours and the extra entries (which win). */
static char **child_env(const char *const *extra, char **storage, size_t room)
{
    size_t n = 0;
    for (size_t i = 0; extra && extra[i] && n + 1 < room; i++)
        if (strchr(extra[i], '=')) /* "NAME" alone leaves NAME out */
            storage[n++] = (char *)extra[i];
    for (char **p = environ; *p && n + 1 < room; p++) {
        bool shadowed = false;
        size_t klen = strcspn(*p, "=");
        for (size_t i = 0; extra && extra[i] && !shadowed; i++)
            shadowed = strncmp(extra[i], *p, klen) == 0 &&
                       (extra[i][klen] == '=' || extra[i][klen] == '\0');
        if (!shadowed)
            storage[n++] = *p;
    }
    storage[n] = NULL;
    return storage;
}

int command_run(const char *command, const char *const *env, int64_t timeout_ms, size_t max_output,
                const atomic_bool *cancel, struct command_result *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return err_set(e, E_IO, "cannot start the command: pipe: %s", strerror(errno));
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"/bin/sh", "-c", (char *)command, NULL};
    char *envp[ENV_MAX];
    pid_t pid;
    int64_t started = mono_ms();
    int rc = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, child_env(env, envp, ENV_MAX));
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return err_set(e, E_IO, "cannot start /bin/sh: %s", strerror(rc));
    }
    struct tail t = {malloc(max_output ? max_output : 1), max_output, 0, 0, 0};
    if (!t.buf)
        t.cap = 0;
    int64_t term_at = timeout_ms > 0 ? started + timeout_ms : INT64_MAX, kill_at = INT64_MAX;
    bool open = true;
    int status = 0;
    for (;;) {
        int64_t now = mono_ms();
        bool stop = (cancel && atomic_load(cancel)) || now >= term_at;
        if (stop && kill_at == INT64_MAX) {
            out->timed_out = now >= term_at;
            out->cancelled = !out->timed_out;
            kill(-pid, SIGTERM);
            kill_at = now + KILL_GRACE_MS;
        }
        if (now >= kill_at)
            kill(-pid, SIGKILL);
        if (open) {
            struct pollfd p = {fds[0], POLLIN, 0};
            if (poll(&p, 1, 100) > 0) {
                char chunk[4096];
                ssize_t n = read(fds[0], chunk, sizeof chunk);
                if (n > 0)
                    tail_put(&t, chunk, (size_t)n);
                else if (n == 0 || (errno != EINTR && errno != EAGAIN))
                    open = false;
            }
        } else {
            struct timespec nap = {0, 20 * 1000000};
            nanosleep(&nap, NULL);
        }
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) {
            /* what is left in the pipe (a background child may hold it open: no waiting) */
            char chunk[4096];
            ssize_t n;
            fcntl(fds[0], F_SETFL, O_NONBLOCK);
            while (open && (n = read(fds[0], chunk, sizeof chunk)) > 0)
                tail_put(&t, chunk, (size_t)n);
            if (kill_at != INT64_MAX)
                kill(-pid, SIGKILL); /* what the group still runs */
            break;
        }
    }
    close(fds[0]);
    out->duration_ms = mono_ms() - started;
    out->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    out->output = tail_text(&t, &out->output_len);
    out->output_dropped = t.dropped;
    free(t.buf);
    return 0;
}

void command_result_release(struct command_result *r)
{
    free(r->output);
    memset(r, 0, sizeof *r);
}
