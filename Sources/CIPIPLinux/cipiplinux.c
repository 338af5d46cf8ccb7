#define _GNU_SOURCE 1
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if_tun.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#include "cipiplinux.h"

_Static_assert(sizeof(cipl_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr size");
_Static_assert(offsetof(cipl_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "mmsghdr layout");

unsigned long cipl_tunsetiff(void) { return TUNSETIFF; }

int cipl_recvmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout) {
    return recvmmsg(fd, (struct mmsghdr *)vec, vlen, flags, timeout);
}

int cipl_sendmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags);
}

int cipl_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cipl_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }
