/*
 * ee-init: the /init of local enclave images (bootstrap ramdisk), for the kernel that
 * @enclave-extras/local-enclave boots under QEMU's nitro-enclave machine.
 *
 * It does what the nitro-cli init (aws-nitro-enclaves-sdk-bootstrap, init/init.c) does, in the
 * same order, written from its documented behaviour:
 *   1. mount devtmpfs on /dev (already mounted is fine) and use /dev/console for stdio;
 *   2. load /nsm.ko when it exists (kernels with the NSM driver built in have none);
 *   3. heartbeat: connect to the parent (vsock CID 3, port 9000), write 0xB7, read one byte back
 *      (it must be 0xB7);
 *   4. read /cmd (argv, one per line) and /env (KEY=value per line), then remove both;
 *   5. make /rootfs the root (bind + move mount + chroot) and mount, inside it, /dev, /proc,
 *      /run, /tmp, /dev/shm, /dev/pts, /sys and the cgroup v1 hierarchies;
 *   6. start the command in its own session with exactly that environment (PATH from /env, else
 *      /sbin:/usr/sbin:/bin:/usr/bin, is used to find it), reap every child until it exits;
 *   7. reboot (RB_AUTOBOOT, as nitro-cli's init): with QEMU's -no-reboot the enclave stops.
 * Unlike nitro-cli's init it never exits as PID 1 on a failure (that panics the kernel and sits
 * out panic=30): it prints "ee-init: FATAL: <step>: <error>" on the console and reboots at once,
 * so the host sees the enclave stop with the reason in the console log.
 *
 * Build (reproducible; scripts/build-init.mjs): gcc -static -Os ... init.c -o init
 * SPDX-License-Identifier: Apache-2.0
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vm_sockets.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define HEARTBEAT_CID 3
#define HEARTBEAT_PORT 9000
#define HEARTBEAT_BYTE 0xB7
#define DEFAULT_PATH "/sbin:/usr/sbin:/bin:/usr/bin"
#define NSM_MODULE "/nsm.ko"

static void say(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if (n > (int)sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  ssize_t w = write(2, buf, (size_t)n);
  (void)w;
}

/* Stops the enclave: reboot with -no-reboot makes QEMU exit (as nitro-cli's init reboots). */
static _Noreturn void stop_enclave(void) {
  sync();
  reboot(RB_AUTOBOOT);
  /* Still here (reboot refused): never return to the kernel as PID 1. */
  for (;;) pause();
}

static _Noreturn void fatal(const char *step, const char *what) {
  int err = errno;
  say("ee-init: FATAL: %s: %s: %s", step, what, strerror(err));
  stop_enclave();
}

static void mount_or_die(const char *src, const char *target, const char *type,
                         unsigned long flags, const char *data) {
  if (mount(src, target, type, flags, data) < 0) fatal("mount", target);
}

static void mkdir_ok(const char *path, mode_t mode) {
  if (mkdir(path, mode) < 0 && errno != EEXIST) fatal("mkdir", path);
}

static void symlink_ok(const char *target, const char *linkpath) {
  if (symlink(target, linkpath) < 0 && errno != EEXIST) fatal("symlink", linkpath);
}

static void init_dev(void) {
  if (mount("dev", "/dev", "devtmpfs", MS_NOSUID | MS_NOEXEC, NULL) < 0 && errno != EBUSY) {
    fatal("mount", "/dev (devtmpfs)");
  }
}

static void init_console(void) {
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) return; /* keep whatever the kernel gave us */
  dup2(fd, 0);
  dup2(fd, 1);
  dup2(fd, 2);
  if (fd > 2) close(fd);
}

static void init_nsm_driver(void) {
  int fd = open(NSM_MODULE, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return; /* NSM built into the kernel */
    fatal("open", NSM_MODULE);
  }
  if (syscall(__NR_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
    fatal("load the NSM driver (finit_module)", NSM_MODULE);
  }
  close(fd);
  if (unlink(NSM_MODULE) < 0) say("ee-init: warning: could not remove %s: %s", NSM_MODULE, strerror(errno));
}

static void heartbeat(void) {
  struct sockaddr_vm sa;
  memset(&sa, 0, sizeof(sa));
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = HEARTBEAT_CID;
  sa.svm_port = HEARTBEAT_PORT;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fatal("heartbeat", "socket(AF_VSOCK) (the kernel needs VSOCKETS + VIRTIO_VSOCKETS)");
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    fatal("heartbeat", "connect to the parent on vsock CID 3 port 9000 (is the host's vsock backend answering?)");
  }
  uint8_t b = HEARTBEAT_BYTE;
  if (write(fd, &b, 1) != 1) fatal("heartbeat", "write 0xB7");
  ssize_t r = read(fd, &b, 1);
  if (r != 1) {
    if (r == 0) errno = ECONNRESET;
    fatal("heartbeat", "read the parent's answer");
  }
  if (b != HEARTBEAT_BYTE) {
    errno = EPROTO;
    fatal("heartbeat", "the parent answered a byte other than 0xB7");
  }
  close(fd);
}

/* Reads a file of lines into a NULL-terminated array (NULL when the file is absent). */
static char **read_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    say("ee-init: warning: could not open %s: %s", path, strerror(errno));
    return NULL;
  }
  char **out = NULL;
  size_t n = 0;
  for (;;) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = getline(&line, &cap, f);
    if (len < 0) {
      free(line);
      break;
    }
    if (len > 0 && line[len - 1] == '\n') line[len - 1] = 0;
    char **grown = realloc(out, (n + 2) * sizeof(char *));
    if (grown == NULL) fatal("read", path);
    out = grown;
    out[n++] = line;
    out[n] = NULL;
  }
  fclose(f);
  if (unlink(path) < 0) say("ee-init: warning: could not remove %s: %s", path, strerror(errno));
  return out;
}

static void enter_rootfs(void) {
  if (mount("/rootfs", "/rootfs", NULL, MS_BIND, NULL) < 0) fatal("mount --bind", "/rootfs");
  if (chdir("/rootfs") < 0) fatal("chdir", "/rootfs");
  if (mount(".", "/", NULL, MS_MOVE, NULL) < 0) fatal("mount --move", "/rootfs to /");
  if (chroot(".") < 0) fatal("chroot", "/rootfs");
  if (chdir("/") < 0) fatal("chdir", "/");
}

static void init_rootfs_mounts(void) {
  const unsigned long std = MS_NODEV | MS_NOSUID | MS_NOEXEC;
  static const char *const dirs[] = {"/dev", "/proc", "/run", "/tmp", "/sys"};
  for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) mkdir_ok(dirs[i], 0755);
  init_dev();
  mount_or_die("proc", "/proc", "proc", std, NULL);
  symlink_ok("/proc/self/fd", "/dev/fd");
  symlink_ok("/proc/self/fd/0", "/dev/stdin");
  symlink_ok("/proc/self/fd/1", "/dev/stdout");
  symlink_ok("/proc/self/fd/2", "/dev/stderr");
  mount_or_die("tmpfs", "/run", "tmpfs", std, "mode=0755");
  mount_or_die("tmpfs", "/tmp", "tmpfs", std, NULL);
  mkdir_ok("/dev/shm", 0755);
  mount_or_die("shm", "/dev/shm", "tmpfs", std, NULL);
  mkdir_ok("/dev/pts", 0755);
  mount_or_die("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, NULL);
  mount_or_die("sysfs", "/sys", "sysfs", std, NULL);
  mount_or_die("cgroup_root", "/sys/fs/cgroup", "tmpfs", std, "mode=0755");

  /* cgroup v1 hierarchies, as nitro-cli's init; a kernel without them is not an error here. */
  FILE *f = fopen("/proc/cgroups", "r");
  if (f == NULL) return;
  char line[256];
  if (fgets(line, sizeof(line), f) == NULL) {
    fclose(f);
    return;
  }
  char name[65];
  char skipped[512] = "";
  int hier, groups, enabled;
  while (fscanf(f, "%64s %d %d %d\n", name, &hier, &groups, &enabled) == 4) {
    if (!enabled) continue;
    char path[128];
    snprintf(path, sizeof(path), "/sys/fs/cgroup/%s", name);
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
      say("ee-init: warning: mkdir %s: %s", path, strerror(errno));
      continue;
    }
    if (mount(name, path, "cgroup", std, name) < 0) {
      /* a controller this kernel offers only on cgroup v2 (EINVAL): one line for all of them */
      if (errno == EINVAL || errno == ENODEV) {
        rmdir(path);
        if (strlen(skipped) + strlen(name) + 2 < sizeof(skipped)) {
          strcat(skipped, " ");
          strcat(skipped, name);
        }
      } else {
        say("ee-init: warning: mount %s: %s", path, strerror(errno));
      }
    }
  }
  fclose(f);
  if (skipped[0]) say("ee-init: cgroup v1 controllers not available (left unmounted):%s", skipped);
}

static const char *env_path(char **env) {
  for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
    if (strncmp(env[i], "PATH=", 5) == 0) return env[i] + 5;
  }
  return DEFAULT_PATH;
}

static pid_t launch(char **argv, char **env) {
  pid_t pid = fork();
  if (pid < 0) fatal("fork", argv[0]);
  if (pid > 0) return pid;
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_UNBLOCK, &all, NULL);
  setsid();
  /* execvpe looks the command up in this process's PATH; the command gets `env` only. */
  setenv("PATH", env_path(env), 1);
  static char *empty[] = {NULL};
  execvpe(argv[0], argv, env != NULL ? env : empty);
  say("ee-init: FATAL: exec %s: %s (PATH=%s)", argv[0], strerror(errno), env_path(env));
  _exit(127);
}

int main(void) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, NULL); /* SIGCHLD still wakes wait() */

  mkdir("/dev", 0755); /* the bootstrap ramdisk normally has it */
  init_dev();
  init_console();
  say("ee-init: started");
  init_nsm_driver();
  heartbeat();
  say("ee-init: heartbeat answered by the parent");

  char **env = read_lines("/env");
  char **cmd = read_lines("/cmd");
  if (cmd == NULL || cmd[0] == NULL || cmd[0][0] == 0) {
    errno = ENOENT;
    fatal("/cmd", "no command to run (the customer ramdisk needs a /cmd file, one argument per line)");
  }

  enter_rootfs();
  init_rootfs_mounts();

  pid_t app = launch(cmd, env);
  for (;;) {
    int status;
    pid_t pid = wait(&status);
    if (pid < 0) {
      if (errno == EINTR) continue;
      fatal("wait", cmd[0]);
    }
    if (pid != app) continue;
    if (WIFEXITED(status)) say("ee-init: %s exited with status %d; stopping the enclave", cmd[0], WEXITSTATUS(status));
    else say("ee-init: %s was killed by signal %d; stopping the enclave", cmd[0], WTERMSIG(status));
    stop_enclave();
  }
}
