#ifndef CIPIPLINUX_H
#define CIPIPLINUX_H
// What Swift imports badly from the kernel headers (swift-on-linux.md §2, §3): the _IOW ioctl
// request numbers, mmsghdr (needs _GNU_SOURCE, which must stay out of Swift-imported headers).
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

unsigned long cipl_tunsetiff(void);

/// struct mmsghdr, declared without _GNU_SOURCE (checked against the real one in the .c file).
typedef struct {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} cipl_mmsghdr;

int cipl_recvmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags, struct timespec *timeout);
int cipl_sendmmsg(int fd, cipl_mmsghdr *vec, unsigned int vlen, int flags);

#endif
