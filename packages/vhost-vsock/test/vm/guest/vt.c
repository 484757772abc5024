/* vt: a tiny vsock tool for the guest side of the vhost-vsock VM suite.
 *   vt connect CID PORT   copy stdin -> socket and socket -> stdout; half-close (SHUT_WR) on
 *                         stdin EOF; exits 0 at the socket's EOF, 1 on an error (message on
 *                         stderr names the errno, e.g. ECONNRESET)
 *   vt listen PORT CMD    accept connections; each runs `sh -c CMD` with the socket as stdin
 *                         and stdout (one process per connection)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what) {
  fprintf(stderr, "vt: %s: %s (errno %d)\n", what, strerror(errno), errno);
  return 1;
}

static int write_all(int fd, const char *b, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += w;
    n -= (size_t)w;
  }
  return 0;
}

static int do_connect(unsigned cid, unsigned port) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) return fail("connect");
  static char buf[65536];
  int in_open = 1;
  for (;;) {
    struct pollfd p[2] = {{.fd = s, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    if (poll(p, in_open ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return fail("poll");
    }
    if (p[0].revents) {
      ssize_t n = read(s, buf, sizeof buf);
      if (n < 0) return fail("read socket");
      if (n == 0) return 0;
      if (write_all(1, buf, (size_t)n) < 0) return fail("write stdout");
    }
    if (in_open && p[1].revents) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n < 0) return fail("read stdin");
      if (n == 0) {
        in_open = 0;
        if (shutdown(s, SHUT_WR) < 0) return fail("shutdown");
      } else if (write_all(s, buf, (size_t)n) < 0) {
        return fail("write socket");
      }
    }
  }
}

static int do_listen(unsigned port, const char *cmd) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return fail("bind");
  if (listen(s, 256) < 0) return fail("listen");
  struct sigaction sa = {.sa_handler = SIG_IGN, .sa_flags = SA_NOCLDWAIT};
  sigaction(SIGCHLD, &sa, NULL);
  for (;;) {
    int c = accept(s, NULL, NULL);
    if (c < 0) {
      if (errno == EINTR) continue;
      return fail("accept");
    }
    pid_t pid = fork();
    if (pid == 0) {
      close(s);
      dup2(c, 0);
      dup2(c, 1);
      if (c > 1) close(c);
      execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
      _exit(127);
    }
    close(c);
  }
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc == 4 && !strcmp(argv[1], "connect"))
    return do_connect((unsigned)strtoul(argv[2], 0, 10), (unsigned)strtoul(argv[3], 0, 10));
  if (argc == 4 && !strcmp(argv[1], "listen"))
    return do_listen((unsigned)strtoul(argv[2], 0, 10), argv[3]);
  fprintf(stderr, "usage: vt connect CID PORT | vt listen PORT CMD\n");
  return 2;
}
