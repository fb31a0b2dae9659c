/*
 * Corpus replay without libFuzzer: runs every file of fuzz/corpus/NAME/ and every fuzz/crashes/
 * file named NAME-* through the target's LLVMFuzzerTestOneInput, under the sanitizer build of
 * `make test` (compiled with -DFUZZ_TARGET="NAME" next to fuzz/fuzz_NAME.c). Each file runs in
 * a child process of its own, so one crash, sanitizer report or leak fails that file alone and
 * the others still run. Prints cmocka's summary lines, which scripts/run-tests.sh counts:
 * "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s)". Run from the repository's root (or
 * give it as the only argument); exits non-zero when a file failed or none was found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef FUZZ_TARGET
#error "compile with -DFUZZ_TARGET=\"name\""
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_BYTES (16u << 20)
#define REPLAY_SECONDS 20

/* Reads path whole into an exact-size heap copy (NULL when it cannot be read). */
static uint8_t *read_input(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = malloc(REPLAY_MAX_BYTES);
    size_t n = data ? fread(data, 1, REPLAY_MAX_BYTES, f) : 0;
    bool ok = data && !ferror(f) && n < REPLAY_MAX_BYTES;
    fclose(f);
    uint8_t *exact = ok ? malloc(n ? n : 1) : NULL;
    if (exact)
        memcpy(exact, data, n);
    free(data);
    *size = n;
    return exact;
}

/* Runs one input in a child; true when it returned and the child exited cleanly. */
static bool replay_one(const char *path)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("[  ERROR   ] %s: fork: %s\n", path, strerror(errno));
        return false;
    }
    if (pid == 0) {
        alarm(REPLAY_SECONDS); /* a hang (what libFuzzer reports as a timeout) fails the file */
        size_t size;
        uint8_t *data = read_input(path, &size);
        if (!data) {
            fprintf(stderr, "%s: cannot read: %s\n", path, strerror(errno));
            _exit(2);
        }
        LLVMFuzzerTestOneInput(data, size);
        free(data);
        exit(0); /* exit, not _exit: the leak checker runs at exit */
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (ok)
        printf("[       OK ] %s\n", path);
    else if (WIFSIGNALED(status))
        printf("[  FAILED  ] %s: killed by signal %d\n", path, WTERMSIG(status));
    else
        printf("[  FAILED  ] %s: exit status %d\n", path, WEXITSTATUS(status));
    return ok;
}

/* Replays the regular files of dir whose names start with prefix ("" = all), in name order. */
static void replay_dir(const char *dir, const char *prefix, size_t *passed, size_t *failed)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
        bool take = names[i]->d_name[0] != '.' &&
                    strncmp(names[i]->d_name, prefix, strlen(prefix)) == 0 &&
                    stat(path, &st) == 0 && S_ISREG(st.st_mode);
        if (take && replay_one(path))
            (*passed)++;
        else if (take)
            (*failed)++;
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (argc > 1 && chdir(argv[1]) != 0) {
        fprintf(stderr, "replay: cannot enter %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    size_t passed = 0, failed = 0;
    printf("[==========] fuzz corpus replay: %s\n", FUZZ_TARGET);
    replay_dir("fuzz/corpus/" FUZZ_TARGET, "", &passed, &failed);
    replay_dir("fuzz/crashes", FUZZ_TARGET "-", &passed, &failed);
    if (passed + failed == 0) {
        printf("[  ERROR   ] no inputs in fuzz/corpus/%s (run from the repository's root)\n",
               FUZZ_TARGET);
        failed = 1;
    }
    printf("[  PASSED  ] %zu test(s).\n", passed);
    if (failed)
        printf("[  FAILED  ] %zu test(s)\n", failed);
    return failed ? 1 : 0;
}
