#ifndef CSPAWN_H
#define CSPAWN_H
#include <sys/types.h>

/// Starts `path` with `argv` (NULL-terminated) and the caller's environment.
/// The child's stdout and stderr go to `out_fd` and `err_fd` (-1: /dev/null);
/// its stdin is /dev/null; every other descriptor is closed in the child, so a
/// long-lived child never holds a copy of the test's sockets. Signal mask and
/// SIGPIPE are reset to the defaults. Returns 0 or an errno value.
int cspawn(const char *path, char *const argv[], int out_fd, int err_fd, pid_t *pid);

/// pipe2(O_CLOEXEC). Returns 0 or an errno value.
int cspawn_pipe(int fds[2]);

#endif
